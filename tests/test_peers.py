"""The peer advantages against brute force: k-subset enumeration, exact expectations, the authors' code."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import pytest
import torch

from catcli import objectives as obj
from catcli import peers
from catcli.objectives import Strategy
from catcli.peers import MethodError

F64 = torch.float64


# ------------------------------------------------------------------ oracles


def subsets(n: int, k: int):
    return list(itertools.combinations(range(n), k))


def brute_max_at_k(row: list[float], k: int) -> float:
    """Mean over all k-subsets of the subset's max: the unbiased max@k (pass@k) estimate."""
    return math.fsum(max(row[j] for j in s) for s in subsets(len(row), k)) / math.comb(len(row), k)


def brute_s(row: list[float], k: int) -> list[float]:
    """PKPO s_i = (1/C(n,k)) sum over k-subsets I holding i of max_I (Eq. 27)."""
    n = len(row)
    return [math.fsum(max(row[j] for j in s) for s in subsets(n, k) if i in s) / math.comb(n, k) for i in range(n)]


def brute_loo1(row: list[float], k: int) -> list[float]:
    """PKPO s_i^(loo-1) = (1/C(n,k)) sum over I holding i of (max_I - max_{I minus i}) (Eq. 33), k >= 2."""
    n = len(row)
    out = []
    for i in range(n):
        terms = [max(row[j] for j in s) - max(row[j] for j in s if j != i) for s in subsets(n, k) if i in s]
        out.append(math.fsum(terms) / math.comb(n, k))
    return out


def brute_chen(row: list[int], k: int) -> list[float]:
    """Chen et al.: every k-subset gets reward max (pass@k), standardised over all subsets with the
    population std; a rollout's advantage is the mean over the subsets holding it (App. B.3)."""
    n = len(row)
    subs = subsets(n, k)
    reward = {s: max(row[j] for j in s) for s in subs}
    mean = math.fsum(reward.values()) / len(subs)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in reward.values()) / len(subs))
    if std == 0:
        return [0.0] * n
    return [math.fsum((reward[s] - mean) / std for s in subs if i in s) / math.comb(n - 1, k - 1) for i in range(n)]


def authors_calc_adv(row: list[int], k: int) -> list[float]:
    """RUCAIBox/Passk_Training code/passk_adv.py `calc_adv`, with math.comb for scipy's comb."""
    n, c = len(row), sum(row)

    def comb(a, b):
        return math.comb(a, b) if 0 <= b <= a else 0

    rho = 1 - comb(n - c, k) / comb(n, k)
    sigma = math.sqrt(rho * (1 - rho))
    adv_p = (1 - rho) / (sigma + 1e-6)
    adv_n = (1 - rho - comb(n - c - 1, k - 1) / comb(n - 1, k - 1)) / (sigma + 1e-6)
    return [adv_p if v == 1 else adv_n for v in row]


def verl_grpo_passk(row: list[float], norm: bool) -> list[float]:
    """verl core_algos.compute_grpo_passk_outcome_advantage on one group, epsilon 1e-6."""
    r = torch.tensor(row, dtype=F64)
    out = torch.zeros_like(r)
    top, idx = torch.topk(r, 2)
    adv = top[0] - top[1]
    if norm:
        adv = adv / (torch.std(r) + 1e-6)
    out[idx[0]] = adv
    return out.tolist()


def rho(n: int, c: int, k: int) -> Fraction:
    """Unbiased pass@k, 1 - C(n-c,k)/C(n,k), exact."""
    return 1 - Fraction(math.comb(n - c, k) if n - c >= k else 0, math.comb(n, k))


def binary_rows(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=F64)


def continuous_rows(n: int, count: int = 12, seed: int = 0) -> torch.Tensor:
    """Rows with many ties (values on a coarse grid) and rows of distinct values."""
    rng = random.Random(seed * 100 + n)
    rows = [[rng.choice([0.0, 0.25, 0.5, 1.0]) for _ in range(n)] for _ in range(count)]
    rows += [[rng.uniform(-1, 2) for _ in range(n)] for _ in range(count)]
    rows.append([0.5] * n)  # all tied
    return torch.tensor(rows, dtype=F64)


def close(a: list[float] | torch.Tensor, b: list[float], tol: float = 1e-12) -> bool:
    a = a.tolist() if isinstance(a, torch.Tensor) else a
    return all(abs(x - y) <= tol * max(1.0, abs(y)) for x, y in zip(a, b)) and len(a) == len(b)


NK = [(n, k) for n in range(1, 7) for k in range(1, n + 1)]


# ------------------------------------------------------------------ PKPO: transformed rewards s_i


@pytest.mark.parametrize("n,k", NK)
def test_pkpo_rewards_equal_subset_enumeration(n, k):
    rows = torch.cat([binary_rows(n), continuous_rows(n)])
    s = peers.pkpo_rewards(rows, k)
    for row, got in zip(rows.tolist(), s):
        assert close(got, brute_s(row, k)), (row, k, got.tolist())


@pytest.mark.parametrize("n,k", NK)
def test_pkpo_rewards_sum_to_k_times_unbiased_max_at_k(n, k):
    """The identity that holds: sum_i s_i = k * f(r), f the mean of max over all k-subsets.

    (mean_i s_i = f(r) does not: each subset is counted once per member, k times.)"""
    rows = torch.cat([binary_rows(n), continuous_rows(n)])
    s = peers.pkpo_rewards(rows, k)
    est = peers.max_at_k_estimate(rows, k)
    for row, si, e in zip(rows.tolist(), s, est.tolist()):
        f = brute_max_at_k(row, k)
        assert abs(e - f) <= 1e-12
        assert abs(si.sum().item() - k * f) <= 1e-12 * max(1.0, k * abs(f))


@pytest.mark.parametrize("n,k", NK)
def test_pkpo_binary_closed_form(n, k):
    """Correct sample k/n, wrong sample (k/n) rho(n-1, c, k-1) (Eq. 8); the sorted form agrees."""
    rows = binary_rows(n)
    s = peers.pkpo_rewards(rows, k)
    sorted_form = peers._pkpo_rewards_sorted(rows, k)
    for row, got, alt in zip(rows.tolist(), s.tolist(), sorted_form.tolist()):
        c = int(sum(row))
        for f, x, y in zip(row, got, alt):
            want = Fraction(k, n) if f == 1 else Fraction(k, n) * rho(n - 1, c, k - 1)
            assert x == float(want)  # closed form is exact to the last bit
            assert abs(y - x) <= 1e-15


def test_pkpo_binary_pass_at_k_estimate():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                row = [1.0] * c + [0.0] * (n - c)
                assert abs(peers.pass_at_k_estimate(n, c, k) - brute_max_at_k(row, k)) <= 1e-15


# ------------------------------------------------------------------ PKPO: advantages (s^(loo-1))


@pytest.mark.parametrize("n,k", NK)
def test_pkpo_advantages_equal_eq33_enumeration(n, k):
    """(k/n) A_i is the paper's s_i^(loo-1) (Eq. 33); k = 1 is leave-one-out centring (Eq. 26)."""
    rows = torch.cat([binary_rows(n), continuous_rows(n)])
    adv = peers.pkpo_advantages(rows, k)
    for row, got in zip(rows.tolist(), adv):
        if k == 1:
            want = [row[i] - (sum(row) - row[i]) / (n - 1) if n > 1 else 0.0 for i in range(n)]
            assert close(got, want)
        else:
            assert close((got * k / n).tolist(), brute_loo1(row, k)), (row, k, got.tolist())


@pytest.mark.parametrize("n,k", [(n, k) for n, k in NK if k >= 2])
def test_pkpo_advantages_binary_closed_form(n, k):
    """0/1 rewards: correct C(n-c,k-1)/C(n-1,k-1), wrong exactly 0; the sorted form agrees."""
    rows = binary_rows(n)
    adv = peers.pkpo_advantages(rows, k)
    sorted_form = peers._pkpo_advantages_sorted(rows, k)
    for row, got, alt in zip(rows.tolist(), adv.tolist(), sorted_form.tolist()):
        c = int(sum(row))
        for f, x, y in zip(row, got, alt):
            if f == 0:
                assert x == 0.0
            else:
                assert x == float(Fraction(math.comb(n - c, k - 1), math.comb(n - 1, k - 1)))
            assert abs(y - x) <= 1e-14


@pytest.mark.parametrize("n,k", [(n, k) for n, k in NK if k >= 2])
def test_pkpo_baseline_mean_is_max_at_k_minus_1(n, k):
    """The loo-1 baseline of i is the unbiased max@(k-1) of the others; averaged over i it is the
    max@(k-1) estimate of the group, so mean_i A_i = f_k(r) - f_{k-1}(r)."""
    rows = torch.cat([binary_rows(n), continuous_rows(n)])
    adv = peers.pkpo_advantages(rows, k)
    for row, got in zip(rows.tolist(), adv):
        want = brute_max_at_k(row, k) - brute_max_at_k(row, k - 1)
        assert abs(got.mean().item() - want) <= 1e-12


# exact policy-gradient expectations on a categorical toy policy (discrete, so sums are exact)


def _exact_estimator_gradient(values, theta, n, weights_fn):
    """E over n i.i.d. draws of sum_i w_i grad log pi(y_i), by enumerating all V^n outcomes."""
    logp = torch.log_softmax(theta, -1)
    idx = torch.tensor(list(itertools.product(range(len(values)), repeat=n)))
    rewards = torch.tensor(values, dtype=F64)[idx]
    prob = logp.detach()[idx].sum(-1).exp()
    w = weights_fn(rewards)
    assert not w.requires_grad
    surrogate = (prob.unsqueeze(-1) * w * logp[idx]).sum()
    return torch.autograd.grad(surrogate, theta)[0]


def _exact_max_at_k_gradient(values, theta, k):
    """grad of max@k = E[max of k i.i.d. rewards], enumerated exactly over V^k outcomes."""
    logp = torch.log_softmax(theta, -1)
    idx = torch.tensor(list(itertools.product(range(len(values)), repeat=k)))
    best = torch.tensor(values, dtype=F64)[idx].max(-1).values
    return torch.autograd.grad((logp[idx].sum(-1).exp() * best).sum(), theta)[0]


POLICIES = {
    "binary": ([0.0, 1.0, 0.0], [0.4, -0.7, 0.2]),
    "ties": ([0.2, 0.7, 0.7, 1.0], [0.3, -0.2, 0.5, -0.9]),
}
UNBIASED_NK = [(n, k) for n in (1, 2, 3, 4) for k in range(1, n + 1)]


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("n,k", UNBIASED_NK)
def test_pkpo_gradient_is_unbiased_for_max_at_k(policy, n, k):
    """E[sum_i s_i grad log pi] and E[sum_i (k/n) A_i grad log pi] both equal grad max@k exactly:
    the transform is unbiased (Theorem 4) and the loo-1 baseline leaves the expectation unchanged."""
    values, logits = POLICIES[policy]
    theta = torch.tensor(logits, dtype=F64, requires_grad=True)
    truth = _exact_max_at_k_gradient(values, theta, k)
    assert truth.abs().max() > 1e-3  # a non-trivial target
    plain = _exact_estimator_gradient(values, theta, n, lambda r: peers.pkpo_rewards(r, k))
    torch.testing.assert_close(plain, truth, rtol=1e-10, atol=1e-13)
    if n >= 2:  # k = 1 with one sample has no leave-one-out baseline (advantages are 0)
        based = _exact_estimator_gradient(values, theta, n, lambda r: peers.pkpo_advantages(r, k) * (k / n))
        torch.testing.assert_close(based, truth, rtol=1e-10, atol=1e-13)
    if k == n and n >= 2:  # Tang et al.'s estimator is the n = k case
        best = _exact_estimator_gradient(values, theta, n, peers.passk_best_advantages)
        torch.testing.assert_close(best, truth, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("k", [2, 3])
def test_unbiasedness_oracle_can_fail(k):
    """The same oracle rejects GRPO's advantage and the mean reward as max@k gradients for k >= 2."""
    values, logits = POLICIES["ties"]
    theta = torch.tensor(logits, dtype=F64, requires_grad=True)
    truth = _exact_max_at_k_gradient(values, theta, k)
    for fn in (obj.group_advantages, lambda r: r / r.shape[-1]):
        wrong = _exact_estimator_gradient(values, theta, 3, fn)
        assert (wrong - truth).abs().max() > 1e-3


@pytest.mark.parametrize("n", [64, 1024])
def test_pkpo_large_groups_are_finite_and_exact(n):
    rng = random.Random(n)
    counts = sorted({0, 1, 2, n // 2, n - 1, n})
    binary = torch.tensor([[1.0] * c + [0.0] * (n - c) for c in counts], dtype=F64)
    real = torch.tensor([[rng.choice([0.0, 0.3, 1.0]) + rng.random() * (j % 2) for j in range(n)] for _ in range(3)])
    for k in sorted({1, 2, 8, n // 2, n - 1, n}):
        s = peers.pkpo_rewards(binary, k)
        assert torch.isfinite(s).all()
        for c, row in zip(counts, s):
            assert abs(row.sum().item() - k * float(rho(n, c, k))) <= 1e-9 * k
        torch.testing.assert_close(peers._pkpo_rewards_sorted(binary, k), s, rtol=1e-12, atol=1e-13)
        adv = peers.pkpo_advantages(binary, k)
        assert torch.isfinite(adv).all()
        if k >= 2:
            torch.testing.assert_close(peers._pkpo_advantages_sorted(binary, k), adv, rtol=1e-10, atol=1e-12)
            r = real.to(F64)
            a = peers.pkpo_advantages(r, k)
            want = peers.max_at_k_estimate(r, k) - peers.max_at_k_estimate(r, k - 1)
            torch.testing.assert_close(a.mean(-1), want, rtol=1e-10, atol=1e-12)
            sr = peers.pkpo_rewards(r, k)
            torch.testing.assert_close(sr.sum(-1), k * peers.max_at_k_estimate(r, k), rtol=1e-11, atol=1e-12)


# ------------------------------------------------------------------ Pass@k Training (Chen et al.)


@pytest.mark.parametrize("n,k", NK)
def test_passk_equals_subset_enumeration(n, k):
    rows = binary_rows(n)
    adv = peers.passk_advantages(rows.bool(), k)
    for row, got in zip(rows.long().tolist(), adv):
        assert close(got, brute_chen(row, k), tol=1e-12), (row, k, got.tolist())


@pytest.mark.parametrize("n,k", NK)
def test_passk_matches_authors_code(n, k):
    """Their sigma + 1e-6 is the only difference; both are exactly 0 where sigma = 0."""
    rows = binary_rows(n)
    adv = peers.passk_advantages(rows, k)
    for row, got in zip(rows.long().tolist(), adv.tolist()):
        theirs = authors_calc_adv(row, k)
        for x, y in zip(got, theirs):
            assert abs(x - y) <= 1e-4 * max(1.0, abs(x))


@pytest.mark.parametrize("n", [1, 2, 5, 8, 64, 1024])
def test_passk_closed_form_properties(n):
    """A_pos >= 0 >= A_neg, the group's advantages sum to 0, and sigma = 0 gives exact zeros."""
    counts = sorted({0, 1, 2, n // 2, n - 1, n} & set(range(n + 1)))
    for k in sorted({1, 2, 4, n // 2, n} & set(range(1, n + 1))):
        rows = torch.tensor([[True] * c + [False] * (n - c) for c in counts])
        adv = peers.passk_advantages(rows, k)
        assert torch.isfinite(adv).all()
        for c, row in zip(counts, adv):
            if c == 0 or n - c < k:  # every subset scores alike: sigma = 0
                assert (row == 0).all()
                continue
            assert (row[:c] > 0).all() and (row[c:] <= 0).all()
            assert abs(row.sum().item()) <= 1e-9 * max(1.0, row.abs().max().item())
            q = Fraction(math.comb(n - c, k), math.comb(n, k))
            assert abs(row[0].item() - float(q) / math.sqrt((1 - q) * q)) <= 1e-12 * row[0].item()


def test_passk_k1_is_grpo_with_population_std():
    rows = binary_rows(5)[1:-1]  # drop all-wrong and all-right
    p = rows.mean(-1, keepdim=True)
    want = (rows - p) / rows.std(-1, unbiased=False, keepdim=True)
    torch.testing.assert_close(peers.passk_advantages(rows, 1), want, rtol=1e-12, atol=1e-12)


def test_passk_refuses_non_binary_and_k_above_m():
    with pytest.raises(ValueError, match="0/1"):
        peers.passk_advantages(torch.tensor([[0.5, 1.0]]), 1)
    with pytest.raises(ValueError, match="k must be in 1..M = 2"):
        peers.passk_advantages(torch.tensor([[0, 1]]), 3)


# ------------------------------------------------------------------ best sample only (Tang / verl)


def test_passk_best_only_the_best_is_nonzero():
    rng = random.Random(1)
    for m in (2, 3, 5, 8, 64):
        for _ in range(40):
            row = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in range(m)]
            got = peers.passk_best_advantages(torch.tensor([row], dtype=F64)).squeeze(0).tolist()
            top = sorted(row, reverse=True)
            best = row.index(top[0])
            for i, x in enumerate(got):
                if i != best:
                    assert x == 0.0  # exactly zero, never a small leftover
            assert got[best] == top[0] - top[1]
            assert got == verl_grpo_passk(row, norm=False) or top[0] == top[1]


def test_passk_best_ties_at_the_top_give_all_zeros():
    r = torch.tensor([[1.0, 0.0, 1.0, 0.2], [0.3, 0.3, 0.3, 0.3], [0.0, 0.0, 0.0, 0.0]], dtype=F64)
    got = peers.passk_best_advantages(r)
    assert (got == 0).all()
    for row in r.tolist():  # verl writes the same zero to whichever tied index topk returns
        assert verl_grpo_passk(row, norm=False) == [0.0] * 4


def test_passk_best_binary_and_verl_std_option():
    r = torch.tensor([[0, 0, 1, 0], [1, 1, 0, 0], [0.2, 0.9, 0.4, 0.1]], dtype=F64)
    assert peers.passk_best_advantages(r).tolist() == [[0, 0, 1, 0], [0, 0, 0, 0], [0, 0.5, 0, 0]]
    scaled = peers.passk_best_advantages(r, scale_by_std=True)
    for row, got in zip(r.tolist(), scaled.tolist()):
        assert close(got, verl_grpo_passk(row, norm=True), tol=1e-15)


def test_passk_best_is_pkpo_at_k_equal_m():
    rows = torch.cat([binary_rows(5), continuous_rows(5)])
    torch.testing.assert_close(peers.passk_best_advantages(rows), peers.pkpo_advantages(rows, 5), rtol=0, atol=1e-14)


def test_passk_best_needs_two_rollouts():
    with pytest.raises(ValueError, match="at least 2"):
        peers.passk_best_advantages(torch.tensor([[1.0]]))


# ------------------------------------------------------------------ check_method and dispatch


def test_check_method_refuses_pkpo_with_maj():
    with pytest.raises(MethodError) as err:
        peers.check_method("pkpo", Strategy("maj", 4), m=8)
    msg = str(err.value)
    assert "pkpo" in msg and "maj@4" in msg and "pass@N or bon@N" in msg and "\n" not in msg


@pytest.mark.parametrize("method", ["pkpo", "passk", "passk-best"])
@pytest.mark.parametrize("strategy", [Strategy("ce"), Strategy("maj", 8), Strategy("maj", 8, 3)])
def test_no_peer_applies_to_ce_or_maj(method, strategy):
    with pytest.raises(MethodError, match=f"{method} does not apply to {strategy}"):
        peers.check_method(method, strategy, m=8)


def test_check_method_refuses_binary_only_peer_with_bon():
    with pytest.raises(MethodError, match="passk does not apply to bon@4"):
        peers.check_method("passk", Strategy("bon", 4), m=8)
    peers.check_method("pkpo", Strategy("bon", 4), m=8)
    peers.check_method("passk-best", Strategy("bon", 8), m=8)


@pytest.mark.parametrize("method", ["pkpo", "passk"])
def test_check_method_refuses_k_above_m(method):
    with pytest.raises(MethodError, match=r"k = N = 16 <= M = 8") as err:
        peers.check_method(method, Strategy("pass", 16), m=8)
    assert "\n" not in str(err.value)
    peers.check_method(method, Strategy("pass", 8), m=8)
    peers.check_method(method, Strategy("pass", 1), m=8)


def test_check_method_passk_best_needs_n_equal_m():
    with pytest.raises(MethodError, match="needs N = M"):
        peers.check_method("passk-best", Strategy("pass", 4), m=8)
    with pytest.raises(MethodError, match="needs N = M"):
        peers.check_method("passk-best", Strategy("pass", 16), m=8)
    with pytest.raises(MethodError, match="at least 2"):
        peers.check_method("passk-best", Strategy("pass", 1), m=1)
    peers.check_method("passk-best", Strategy("pass", 8), m=8)


@pytest.mark.parametrize(
    "strategy", [Strategy("ce"), Strategy("pass", 64), Strategy("maj", 8, 3), Strategy("maj", 8), Strategy("bon", 16)]
)
def test_cat_accepts_everything(strategy):
    for m in (1, 4, 8):
        peers.check_method("cat", strategy, m=m)


def test_unknown_method():
    with pytest.raises(MethodError, match="unknown method 'grpo-k'.*cat, pkpo, passk, passk-best"):
        peers.check_method("grpo-k", Strategy("pass", 4), m=8)
    assert peers.METHODS == ("cat", "pkpo", "passk", "passk-best")
    assert issubclass(MethodError, ValueError)


def test_method_advantages_dispatch():
    rng = random.Random(3)
    correct = torch.tensor([[rng.random() < 0.4 for _ in range(8)] for _ in range(5)])
    rewards = correct.to(torch.float32) + torch.rand(5, 8) * 0.1  # a combined reward, not 0/1
    pass4, bon4, pass8, bon8 = Strategy("pass", 4), Strategy("bon", 4), Strategy("pass", 8), Strategy("bon", 8)
    cases = [
        ("pkpo", pass4, peers.pkpo_advantages(correct.to(F64), 4)),
        ("pkpo", bon4, peers.pkpo_advantages(rewards, 4)),
        ("passk", pass4, peers.passk_advantages(correct, 4)),
        ("passk-best", pass8, peers.passk_best_advantages(correct.to(F64))),
        ("passk-best", bon8, peers.passk_best_advantages(rewards)),
    ]
    for method, strategy, want in cases:
        got = peers.method_advantages(method, strategy, rewards, correct)
        assert got.dtype == F64 and got.shape == (5, 8)
        assert torch.equal(got, want), (method, strategy)
    with pytest.raises(MethodError, match="does not apply to maj@4"):
        peers.method_advantages("passk", Strategy("maj", 4), rewards, correct)
    with pytest.raises(MethodError, match="cat multiplies"):
        peers.method_advantages("cat", pass4, rewards, correct)
    with pytest.raises(ValueError, match=r"both be \(P, M\)"):
        peers.method_advantages("pkpo", pass4, rewards, correct[:, :4])


def test_outputs_are_detached_float64():
    r = torch.rand(3, 6, dtype=torch.float32, requires_grad=True)
    c = torch.rand(3, 6) < 0.5
    outs = [
        peers.pkpo_rewards(r, 3),
        peers.pkpo_advantages(r, 3),
        peers.pkpo_advantages(r, 1),
        peers.passk_advantages(c, 3),
        peers.passk_best_advantages(r),
    ]
    for out in outs:
        assert out.dtype == F64 and not out.requires_grad and out.shape == (3, 6)


def test_inputs_are_validated():
    with pytest.raises(ValueError, match=r"\(P prompts, M rollouts\)"):
        peers.pkpo_advantages(torch.rand(6), 2)
    with pytest.raises(ValueError, match="NaN"):
        peers.pkpo_rewards(torch.tensor([[0.1, float("nan")]]), 1)
    with pytest.raises(ValueError, match="k must be in 1..M = 3"):
        peers.pkpo_rewards(torch.rand(2, 3), 0)
