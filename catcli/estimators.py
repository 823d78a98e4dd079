"""Estimators: pass@k, exact maj@k, bon@k, bon_correct@k and their uncertainty (cat-spec §6). Pure: no model, no I/O.

Stage: grades -> estimators. Every metric is a per-problem expectation over the k-subsets of
that problem's n samples, averaged over problems with equal weight.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class EstimatorError(ValueError):
    """Inputs an estimator cannot score, such as k > n."""


def _check_k(n: int, k: int) -> None:
    if not 1 <= k <= n:
        raise EstimatorError(f"k = {k} needs 1 <= k <= n, but there are only n = {n} samples")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) (Chen et al. 2021), in product form.

    Not 1 - (1 - c/n)^k, which is biased for small n. 1 when fewer than k samples are wrong.
    The product prod_i (1 - k/i) is summed as logs and subtracted from 1 by expm1, so a tiny
    pass@k keeps its digits (1 minus a product near 1 would cancel them).
    """
    _check_k(n, k)
    if n - c < k:
        return 1.0
    return -math.expm1(float(np.log1p(-k / np.arange(n - c + 1, n + 1)).sum()))


def maj_at_k(keys: Sequence[str | None], correct: Sequence[bool], k: int) -> float:
    """Exact maj@k: expected score of a majority vote over a uniformly random k-subset of samples.

    keys[i] is sample i's vote class (None: no extracted answer, which uses up a slot but does
    not vote); correct[i] says whether that class is right. An all-invalid draw scores 0; ties
    are split evenly among the tied classes. maj@1 = c/n.

    For each correct class t and each count x it can get, a DP over the other classes counts
    the subsets in which every other class gets at most x votes, tracking how many tie at x.
    """
    n = len(keys)
    _check_k(n, k)
    sizes = Counter(key for key in keys if key is not None)
    invalid = n - sum(sizes.values())
    right = {key for key, ok in zip(keys, correct) if key is not None and ok}
    classes = list(sizes)
    total = math.comb(n, k)
    score = 0.0
    for t in right:
        others = [sizes[c] for c in classes if c != t]
        for x in range(1, min(sizes[t], k) + 1):
            # ways[s, tau]: weighted count of picks of s samples from the other classes
            # (and the invalid ones) where tau other classes have exactly x votes
            ways = np.zeros((k - x + 1, len(others) + 1))
            ways[0, 0] = 1.0
            for m in others:
                new = np.zeros_like(ways)
                for xj in range(0, min(m, x) + 1):
                    if xj > k - x:
                        break
                    coeff = math.comb(m, xj)
                    if xj == x:
                        new[xj:, 1:] += coeff * ways[: k - x + 1 - xj, :-1]
                    else:
                        new[xj:, :] += coeff * ways[: k - x + 1 - xj, :]
                ways = new
            if invalid:
                new = np.zeros_like(ways)
                for xj in range(0, min(invalid, k - x) + 1):
                    new[xj:, :] += math.comb(invalid, xj) * ways[: k - x + 1 - xj, :]
                ways = new
            share = ways[k - x, :] / np.arange(1, len(others) + 2)
            score += math.comb(sizes[t], x) * float(share.sum())
    return score / total


def bon_at_k(rewards: Sequence[float], k: int) -> float:
    """Exact bon@k: expected maximum reward of k samples drawn without replacement from the n.

    With the rewards sorted ascending, r_(i) is the maximum of exactly C(i-1, k-1) of the C(n, k)
    subsets, so bon@k = sum_i r_(i) C(i-1, k-1) / C(n, k). Tied rewards need no care: the
    maximum's value is the same whichever of them is drawn.
    """
    n = len(rewards)
    _check_k(n, k)
    total = math.comb(n, k)
    # int / int divides exactly and rounds once, so the ratio stays accurate however large C(n, k) is
    return sum(r * (math.comb(i - 1, k - 1) / total) for i, r in enumerate(sorted(rewards), start=1) if i >= k)


def bon_correct_at_k(rewards: Sequence[float], correct: Sequence[bool], k: int) -> float:
    """Exact bon_correct@k: expected correctness of the highest-reward sample among k random draws.

    The maximum falls in the tie group of reward r with probability
    [C(L + t, k) - C(L, k)] / C(n, k) (L samples strictly lower, t tied); within the group every
    sample is equally likely to be chosen, so a tie is split evenly.
    """
    n = len(rewards)
    _check_k(n, k)
    order = sorted(set(rewards))
    total = math.comb(n, k)
    score = 0.0
    below = 0
    for r in order:
        group = [ok for rr, ok in zip(rewards, correct) if rr == r]
        t = len(group)
        p_max = (math.comb(below + t, k) - math.comb(below, k)) / total
        score += p_max * sum(group) / t
        below += t
    return score


# ---------------------------------------------------------------- uncertainty


@dataclass(frozen=True)
class Estimate:
    """Mean of per-problem scores with SE = sample std / sqrt(#problems) and a 95 % bootstrap CI.

    One problem has no spread to estimate them from: se and ci are None (JSON null), not 0.
    """

    mean: float
    se: float | None
    ci: tuple[float, float] | None
    n_problems: int

    def to_dict(self) -> dict:
        ci = None if self.ci is None else list(self.ci)
        return {"mean": self.mean, "se": self.se, "ci": ci, "n_problems": self.n_problems}


def estimate(scores: Sequence[float], seed: int = 0, n_boot: int = 2000) -> Estimate:
    """Equal-weight mean over problems, its SE, and a seeded percentile bootstrap 95 % CI."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        raise EstimatorError("no problems to estimate over")
    if x.size == 1:
        return Estimate(float(x[0]), None, None, 1)
    se = float(x.std(ddof=1) / math.sqrt(x.size))
    rng = np.random.default_rng(seed)
    boot = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Estimate(float(x.mean()), se, (float(lo), float(hi)), int(x.size))


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> Estimate:
    """b - a over the same problems: the estimate of a per-problem paired difference."""
    if len(a) != len(b):
        raise EstimatorError("paired difference needs the same problems on both sides")
    return estimate(np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64), seed)


def hierarchical_difference(a, b, seed: int = 0, n_boot: int = 2000) -> Estimate:
    """B - A over seeds and problems: a (S, P) and b (S, P) hold each seed's per-problem scores.

    The mean is over all seeds and problems. The CI is a two-level percentile bootstrap: each
    replicate redraws the seeds (the same draw on both sides: seed s of A and of B share their
    evaluation's problems and sampling seed) and then the problems, so the interval carries the
    spread between training seeds as well as between problems, and is never narrower than the
    seeds' disagreement. With one seed it is the problems-only bootstrap of `paired_difference`.
    The SE is the replicates' standard deviation.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise EstimatorError("a hierarchical difference needs (seeds, problems) scores of the same shape on both sides")
    n_seeds, n_problems = a.shape
    if n_seeds == 1:
        return paired_difference(a[0], b[0], seed)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    problems = rng.integers(0, n_problems, size=(n_boot, n_problems))
    diff = b - a  # (S, P)
    replicates = diff[seeds[:, :, None], problems[:, None, :]].mean(axis=(1, 2))
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    return Estimate(float(diff.mean()), float(replicates.std(ddof=1)), (float(lo), float(hi)), n_problems)


# ---------------------------------------------------------------- one problem, all metrics


def parse_ks(text: str) -> list[int]:
    """`1,4,16` -> [1, 4, 16]; every k a positive integer, no repeats."""
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EstimatorError(f"invalid k list {text!r}: use positive integers like 1,4,16") from None
    if not ks or any(k < 1 for k in ks):
        raise EstimatorError(f"invalid k list {text!r}: use positive integers like 1,4,16")
    if len(set(ks)) != len(ks):
        raise EstimatorError(f"invalid k list {text!r}: a k is repeated")
    return sorted(ks)


def problem_scores(
    correct: Sequence[bool],
    keys: Sequence[str | None],
    ks: Sequence[int],
    rewards: Sequence[float] | None = None,
) -> dict[str, float]:
    """{"pass@k", "maj@k"[, "bon@k", "bon_correct@k"]: score} for one problem's graded samples.

    bon@k is in the reward's own units (expected best reward); the others are rates in [0, 1].
    """
    n, c = len(correct), int(sum(correct))
    out: dict[str, float] = {}
    for k in ks:
        out[f"pass@{k}"] = pass_at_k(n, c, k)
        out[f"maj@{k}"] = maj_at_k(keys, correct, k)
        if rewards is not None:
            out[f"bon@{k}"] = bon_at_k(rewards, k)
            out[f"bon_correct@{k}"] = bon_correct_at_k(rewards, correct, k)
    return out
