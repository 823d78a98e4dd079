"""Estimators against brute force over every k-subset of small pools."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest

from catcli.estimators import (
    EstimatorError,
    bon_at_k,
    bon_correct_at_k,
    estimate,
    maj_at_k,
    paired_difference,
    parse_ks,
    pass_at_k,
    problem_scores,
)


def brute_pass(correct, k):
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


def brute_maj(keys, correct, k):
    right = {key for key, ok in zip(keys, correct) if ok and key is not None}
    subsets = list(itertools.combinations(range(len(keys)), k))
    total = 0.0
    for s in subsets:
        votes = Counter(keys[i] for i in s if keys[i] is not None)
        if not votes:
            continue
        top = max(votes.values())
        winners = [key for key, v in votes.items() if v == top]
        total += sum(w in right for w in winners) / len(winners)
    return total / len(subsets)


def brute_bon(rewards, k):
    subsets = list(itertools.combinations(range(len(rewards)), k))
    return sum(max(rewards[i] for i in s) for s in subsets) / len(subsets)


def brute_bon_correct(rewards, correct, k):
    subsets = list(itertools.combinations(range(len(rewards)), k))
    total = 0.0
    for s in subsets:
        top = max(rewards[i] for i in s)
        best = [i for i in s if rewards[i] == top]
        total += sum(correct[i] for i in best) / len(best)
    return total / len(subsets)


def random_pool(rng: random.Random, n: int):
    n_classes = rng.randint(1, 4)
    keys = [rng.choice([None] + [f"a{j}" for j in range(n_classes)]) for _ in range(n)]
    right = rng.choice([None, "a0"])
    correct = [key is not None and key == right for key in keys]
    return keys, correct


@pytest.mark.parametrize("seed", range(40))
def test_pass_and_maj_equal_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 10)
    keys, correct = random_pool(rng, n)
    for k in range(1, n + 1):
        assert pass_at_k(n, sum(correct), k) == pytest.approx(brute_pass(correct, k), abs=1e-12)
        assert maj_at_k(keys, correct, k) == pytest.approx(brute_maj(keys, correct, k), abs=1e-12)


def test_maj_pinned_cases_with_ties_and_invalid():
    keys = ["a", "b", "a", "b", None, "c"]
    correct = [True, False, True, False, False, False]
    for k in range(1, 7):
        assert maj_at_k(keys, correct, k) == pytest.approx(brute_maj(keys, correct, k), abs=1e-12)
    # k = 2 drawing {a, b}: a tie split evenly counts 1/2
    assert maj_at_k(["a", "b"], [True, False], 2) == pytest.approx(0.5)
    # all-invalid draws fail
    assert maj_at_k([None, None, "a"], [False, False, True], 1) == pytest.approx(1 / 3)
    assert maj_at_k([None, None], [False, False], 2) == 0.0


def test_maj_at_1_is_c_over_n():
    keys = ["a", "b", "a", None, "c", "a", "b"]
    correct = [k == "b" for k in keys]
    assert maj_at_k(keys, correct, 1) == pytest.approx(2 / 7)


@pytest.mark.parametrize("seed", range(40))
def test_bon_and_bon_correct_equal_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 7)
    # few distinct values, some negative: ties are common
    rewards = [rng.choice([-1.5, 0.0, 0.5, 1.0, 2.0]) for _ in range(n)]
    correct = [rng.random() < 0.4 for _ in range(n)]
    for k in range(1, n + 1):
        assert bon_at_k(rewards, k) == pytest.approx(brute_bon(rewards, k), abs=1e-12)
        assert bon_correct_at_k(rewards, correct, k) == pytest.approx(brute_bon_correct(rewards, correct, k), abs=1e-12)


def test_bon_pinned_cases():
    rewards = [0.1, 0.7, 0.3, 0.7]
    assert bon_at_k(rewards, 1) == pytest.approx(sum(rewards) / 4)  # bon@1 is the mean reward
    assert bon_at_k(rewards, 4) == 0.7  # bon@n is the max
    # k = 2: six pairs, maxima 0.7 0.3 0.7 0.7 0.7 0.7
    assert bon_at_k(rewards, 2) == pytest.approx((5 * 0.7 + 0.3) / 6)
    # the two 0.7s split the pick evenly, whatever the order they come in
    assert bon_correct_at_k(rewards, [False, True, False, False], 4) == pytest.approx(0.5)
    assert bon_correct_at_k(rewards, [True, False, False, False], 4) == 0.0
    with pytest.raises(EstimatorError, match="n = 4"):
        bon_at_k(rewards, 5)
    with pytest.raises(EstimatorError):
        bon_correct_at_k(rewards, [True] * 4, 0)


def test_bon_is_exact_for_large_pools():
    rng = random.Random(1)
    rewards = [rng.gauss(0, 1) for _ in range(512)]
    values = [bon_at_k(rewards, k) for k in (1, 2, 16, 256, 511, 512)]
    assert values[0] == pytest.approx(sum(rewards) / 512)
    assert values[-1] == pytest.approx(max(rewards))
    assert all(a < b for a, b in zip(values, values[1:]))  # more draws, a better best
    # bon@(n-1): the max unless the one left out is the max
    top, second = sorted(rewards)[-1], sorted(rewards)[-2]
    assert values[-2] == pytest.approx((511 * top + second) / 512)


def test_problem_scores_names_bon_metrics_only_with_rewards():
    keys, correct = ["a", "b", "a"], [True, False, True]
    assert set(problem_scores(correct, keys, [1, 2])) == {"pass@1", "maj@1", "pass@2", "maj@2"}
    scores = problem_scores(correct, keys, [1, 2], rewards=[0.2, 0.9, 0.5])
    assert scores["bon@2"] == pytest.approx((0.9 + 0.5 + 0.9) / 3)
    assert scores["bon_correct@2"] == pytest.approx(1 / 3)  # only the pair without the 0.9 picks right
    assert scores["bon_correct@1"] == pytest.approx(2 / 3)


def test_pass_at_k_is_non_decreasing_and_unbiased_not_naive():
    n, c = 16, 3
    values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(b >= a - 1e-15 for a, b in zip(values, values[1:]))
    assert values[0] == pytest.approx(c / n)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # naive 1-(3/4)^2 would give 0.4375
    assert pass_at_k(16, 13, 4) == 1.0


def test_large_pool_is_fast_and_finite():
    rng = random.Random(0)
    keys = [rng.choice(["a", "b", "c", "d", None]) for _ in range(128)]
    correct = [k == "a" for k in keys]
    for k in (1, 16, 64, 128):
        v = maj_at_k(keys, correct, k)
        assert 0.0 <= v <= 1.0 and math.isfinite(v)


@pytest.mark.parametrize("k", [0, 5])
def test_k_out_of_range_is_an_error(k):
    with pytest.raises(EstimatorError, match="n = 4"):
        pass_at_k(4, 1, k)
    with pytest.raises(EstimatorError):
        maj_at_k(["a"] * 4, [True] * 4, k)


def test_parse_ks():
    assert parse_ks("16,1,4") == [1, 4, 16]
    for bad in ["", "1,x", "0", "-1", "2,2"]:
        with pytest.raises(EstimatorError):
            parse_ks(bad)


def test_estimate_and_paired_difference():
    scores = [0.0, 1.0, 0.5, 0.5]
    e = estimate(scores, seed=1)
    assert e.mean == pytest.approx(0.5)
    assert e.se == pytest.approx(math.sqrt(1 / 6) / 2)
    assert e.ci[0] <= e.mean <= e.ci[1]
    assert estimate(scores, seed=1) == e  # seeded
    d = paired_difference([0.1, 0.2, 0.3], [0.2, 0.4, 0.3])
    assert d.mean == pytest.approx(0.1)
    with pytest.raises(EstimatorError):
        paired_difference([0.1], [0.1, 0.2])


def test_pass_at_k_keeps_the_digits_of_a_tiny_probability():
    # 1 - prod(1 - k/i) cancels: the reference's exact value 2e-12 came out as 1.99996e-12
    assert pass_at_k(10**12, 1, 2) == pytest.approx(2e-12, rel=1e-9)
    assert pass_at_k(10**6, 3, 1) == pytest.approx(3e-6, rel=1e-9)


def test_one_problem_has_no_standard_error_or_interval():
    e = estimate([0.7])
    assert (e.mean, e.se, e.ci, e.n_problems) == (0.7, None, None, 1)
    assert e.to_dict() == {"mean": 0.7, "se": None, "ci": None, "n_problems": 1}


def test_hierarchical_difference_carries_the_spread_between_seeds():
    import numpy as np

    from catcli.estimators import hierarchical_difference, paired_difference

    rng = np.random.default_rng(0)
    problems = rng.uniform(0, 1, size=200)
    a = np.stack([problems] * 3)  # the baseline: three identical seeds
    b = np.stack([problems + shift for shift in (-0.10, 0.0, 0.16)])  # seeds that disagree by 26 points
    h = hierarchical_difference(a, b, seed=1)
    assert h.mean == pytest.approx(0.02)
    flat = paired_difference(a.mean(0), b.mean(0), seed=1)  # problems only: every problem moved 0.02
    assert flat.ci[1] - flat.ci[0] < 1e-9
    # by brute force: each problem's difference is its seed's shift, so a replicate is the mean of 3
    # seeds drawn with replacement; its 27 equally likely draws give the exact quantiles
    import itertools

    shifts = [-0.10, 0.0, 0.16]
    means = [np.mean([shifts[i] for i in draw]) for draw in itertools.product(range(3), repeat=3)]
    exact = np.percentile(means, [2.5, 97.5], method="inverted_cdf")
    assert h.ci == pytest.approx(tuple(exact), abs=1e-9)
    assert h.ci[1] - h.ci[0] > 0.2  # as wide as the seeds disagree
    one = hierarchical_difference(a[:1], b[:1], seed=1)
    assert one == paired_difference(a[0], b[0], seed=1)  # one seed: the paired bootstrap over problems
