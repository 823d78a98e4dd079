"""Peer pass@k-aware RL advantages, to compare CAT against: PKPO, Pass@k Training, best-sample-only.

The advantage functions take a (P, M) batch, P prompts x M rollouts, and return a detached
float64 (P, M) advantage that REPLACES the trainer's group-standardised GRPO advantage; none of
them is a multiplier (CAT, in `objectives`, is the only method that multiplies GRPO's advantage).

    pkpo        Walder & Karkhanis 2025, arXiv 2505.15201: unbiased gradient of pass@k / max@k
    passk       Chen et al. 2025, arXiv 2508.10751: analytic group advantages of the pass@k reward
    passk-best  Tang et al. 2025, arXiv 2503.19595 (verl `grpo_passk`): best sample gets max - 2nd max

A strategy's N is the method's k. Binomial ratios are exact rationals (`math.comb`) rounded once
to float64, so no weight overflows or cancels for any n (tested to n = 1024). Pure: torch only.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import torch
from torch import Tensor

from catcli.objectives import Strategy

METHODS = ("cat", "pkpo", "passk", "passk-best")

# Which strategy kinds each peer optimises: pass@N is pass@k, bon@N is max@k of the reward.
_APPLIES_TO = {"pkpo": ("pass", "bon"), "passk": ("pass",), "passk-best": ("pass", "bon")}
_OBJECTIVE = {
    "pkpo": "pass@k or max@k (pass@N or bon@N)",
    "passk": "the binary pass@k reward (pass@N)",
    "passk-best": "pass@M or max@M of the whole group (pass@N or bon@N with N = M)",
}


class MethodError(ValueError):
    """A method that does not apply to the strategy or rollout count; the message says why."""


# ---------------------------------------------------------------- helpers


def _ratio(a: int, b: int, n: int, m: int) -> Fraction:
    """C(a, b) / C(n, m) as an exact rational; C(a, b) = 0 when b > a or a < 0."""
    num = math.comb(a, b) if 0 <= b <= a else 0
    return Fraction(num, math.comb(n, m))


def _batch(x: Tensor, name: str) -> Tensor:
    """Detached float64 copy of a (P, M) batch; non-finite values are refused."""
    x = torch.as_tensor(x).detach().to(torch.float64)
    if x.dim() != 2:
        raise ValueError(f"{name} must be (P prompts, M rollouts), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has NaN or infinite values")
    return x


def _check_k(k: int, m: int) -> None:
    if not 1 <= k <= m:
        raise ValueError(f"k must be in 1..M = {m} (rollouts per prompt), got k = {k}")


def _is_binary(r: Tensor) -> bool:
    return bool(((r == 0) | (r == 1)).all())


def _by_count(table: tuple[float, ...], counts: Tensor) -> Tensor:
    """Look up table[c] for each prompt's count c; returns (P, 1)."""
    return torch.tensor(table, dtype=torch.float64, device=counts.device)[counts.long()].unsqueeze(-1)


def _unsort(sorted_values: Tensor, order: Tensor) -> Tensor:
    return torch.empty_like(sorted_values).scatter_(-1, order, sorted_values)


# ---------------------------------------------------------------- PKPO (arXiv 2505.15201)


def pass_at_k_estimate(n: int, c: int, k: int) -> float:
    """rho(n, c, k) = 1 - C(n-c, k) / C(n, k): unbiased pass@k from c correct of n (PKPO Eq. 2)."""
    return float(1 - _ratio(n - c, k, n, k))


@lru_cache(maxsize=None)
def _pkpo_binary_tables(n: int, k: int) -> tuple[tuple[float, ...], ...]:
    """Per count c = 0..n: s for a correct / wrong sample, and the (n/k)-scaled s^(loo-1)."""
    s_pos = tuple(float(Fraction(k, n)) for _ in range(n + 1))
    # wrong sample: (k/n) rho(n-1, c, k-1); only counts c <= n-1 have a wrong sample
    s_neg = tuple(
        float(Fraction(k, n) * (1 - _ratio(n - 1 - c, k - 1, n - 1, k - 1))) if c < n else 0.0 for c in range(n + 1)
    )
    # correct sample, k >= 2: C(n-c, k-1) / C(n-1, k-1); a wrong one gets exactly 0
    a_pos = tuple(float(_ratio(n - c, k - 1, n - 1, k - 1)) if c >= 1 else 0.0 for c in range(n + 1))
    return s_pos, s_neg, a_pos


@lru_cache(maxsize=None)
def _mean_max_weights(n: int, k: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Sorted-position weights of (n/k) s_i = mean of max over the k-subsets holding i (PKPO Eq. 19-21).

    With g ascending and 1-based positions, (n/k) s_i = d_i g_i + sum_{j>i} e_j g_j, where
    d_i = C(i-1, k-1) / C(n-1, k-1) and e_j = C(j-2, k-2) / C(n-1, k-1) (e = 0 when k = 1).
    """
    d = tuple(float(_ratio(i - 1, k - 1, n - 1, k - 1)) for i in range(1, n + 1))
    e = tuple(float(_ratio(j - 2, k - 2, n - 1, k - 1)) if k >= 2 and j >= 2 else 0.0 for j in range(1, n + 1))
    return d, e


@lru_cache(maxsize=None)
def _max_at_k_weights(n: int, k: int) -> tuple[float, ...]:
    """Weights of the unbiased max@k estimator rho^(g) on n sorted samples: C(r-1, k-1) / C(n, k) (Eq. 12)."""
    return tuple(float(_ratio(r - 1, k - 1, n, k)) for r in range(1, n + 1))


def max_at_k_estimate(rewards: Tensor, k: int) -> Tensor:
    """rho^(g)(n, k) = (1/C(n,k)) sum_{i>=k} C(i-1, k-1) g_(i), g ascending (PKPO Eq. 12); (P, M) -> (P,).

    The mean over all k-subsets of the subset's max reward: unbiased for max@k = E[max of k
    samples]. On 0/1 rewards it equals `pass_at_k_estimate`.
    """
    r = _batch(rewards, "rewards")
    _check_k(k, r.shape[-1])
    w = torch.tensor(_max_at_k_weights(r.shape[-1], k), dtype=torch.float64, device=r.device)
    return (torch.sort(r, dim=-1).values * w).sum(-1)


def _sorted_mean_max(g: Tensor, k: int) -> Tensor:
    """(n/k) s_i on ascending rows g: the mean of max over the k-subsets containing position i."""
    d, e = (torch.tensor(t, dtype=torch.float64, device=g.device) for t in _mean_max_weights(g.shape[-1], k))
    eg = e * g
    tail = torch.flip(torch.cumsum(torch.flip(eg, [-1]), -1), [-1])  # sum_{j >= i} e_j g_j
    after = torch.cat([tail[..., 1:], torch.zeros_like(tail[..., :1])], -1)  # sum_{j > i}
    return d * g + after


def _sorted_loo_max(g: Tensor, k: int) -> Tensor:
    """rho^(g) at k on the n-1 samples other than position i, for ascending rows g (k <= n-1).

    Removing position i keeps ranks below i and lowers ranks above i by one, so with the
    (n-1)-sample weights w_r: sum_{j<i} w_j g_j + sum_{j>i} w_{j-1} g_j, two cumulative sums.
    """
    n = g.shape[-1]
    w = torch.tensor(_max_at_k_weights(n - 1, k), dtype=torch.float64, device=g.device)
    zero = torch.zeros_like(w[:1])
    below = torch.cumsum(torch.cat([w, zero]) * g, -1)  # sum_{j <= i} w_j g_j
    below = torch.cat([torch.zeros_like(below[..., :1]), below[..., :-1]], -1)  # sum_{j < i}
    above = torch.flip(torch.cumsum(torch.flip(torch.cat([zero, w]) * g, [-1]), -1), [-1])  # sum_{j >= i}
    above = torch.cat([above[..., 1:], torch.zeros_like(above[..., :1])], -1)  # sum_{j > i}
    return below + above


def _pkpo_rewards_sorted(r: Tensor, k: int) -> Tensor:
    """s_i by the sorted-reward form (any real rewards); ties get equal s_i."""
    g, order = torch.sort(r, dim=-1, stable=True)
    return _unsort(_sorted_mean_max(g, k), order) * (k / r.shape[-1])


def _pkpo_advantages_sorted(r: Tensor, k: int) -> Tensor:
    """(n/k) s_i^(loo-1) by the sorted-reward form, k >= 2."""
    g, order = torch.sort(r, dim=-1, stable=True)
    return _unsort(_sorted_mean_max(g, k) - _sorted_loo_max(g, k - 1), order)


def pkpo_rewards(rewards: Tensor, k: int) -> Tensor:
    """PKPO transformed rewards s_i, no baseline (Walder & Karkhanis 2025, arXiv 2505.15201).

        s_i = (1/C(n,k)) sum_{|I|=k, i in I} max_{j in I} g_j                   (Eq. 27)
            = (1/C(n,k)) [C(i-1,k-1) g_i + sum_{j>i} C(j-2,k-2) g_j],  g ascending (Eq. 19-21)

    sum_i s_i grad log pi(y_i) is an unbiased gradient of max@k (Theorem 4), and
    sum_i s_i = k * rho^(g)(n, k): the s_i sum to k times the unbiased max@k estimate.
    0/1 rewards take the closed form (Eq. 8): a correct sample gets k/n, a wrong one
    (k/n) rho(n-1, c, k-1), c the number correct. Code: the paper's Listing 1, `s`.
    Not an advantage on its own (no baseline): see `pkpo_advantages`. rewards (P, M), k <= M.
    """
    r = _batch(rewards, "rewards")
    n = r.shape[-1]
    _check_k(k, n)
    if not _is_binary(r):
        return _pkpo_rewards_sorted(r, k)
    s_pos, s_neg, _ = _pkpo_binary_tables(n, k)
    c = r.sum(-1)
    return torch.where(r == 1, _by_count(s_pos, c), _by_count(s_neg, c))


def pkpo_advantages(rewards: Tensor, k: int) -> Tensor:
    """PKPO advantage: the paper's recommended s^(loo-1) (Eq. 33), scaled by n/k. REPLACES GRPO's.

        A_i = (n/k) s_i^(loo-1) = (n/k) (1/C(n,k)) sum_{|I|=k, i in I} (max_I g - max_{I minus i} g)
            = mean of max_I g over the k-subsets I holding i  -  rho^(g)(k-1) of the other n-1

    Source: Walder & Karkhanis 2025 (arXiv 2505.15201), Sec. 4.3 Eq. 33-34 and Listing 1
    `sloo_minus_one`; Sec. 5.2 trains with s^(loo-1) ("which we favour due to Figure 4").
    The baseline does not depend on y_i, so sum_i (k/n) A_i grad log pi(y_i) stays an unbiased
    gradient of max@k. Scale: the n/k factor (our choice) makes k = M exactly Tang et al.'s
    max - second max (`passk_best_advantages`) and k = 1 exactly the paper's k_opt = 1 run,
    leave-one-out centring g_i - mean_{j != i} g_j (Eq. 26; max@0 is undefined). Multiply by
    k/n to get Listing 1's numbers. 0/1 rewards, k >= 2 (closed form of Eq. 33): a correct
    sample gets C(n-c, k-1)/C(n-1, k-1), the chance the k-1 others of a subset are all wrong,
    and a wrong sample exactly 0. rewards (P, M) real, k <= M; float64, detached.
    """
    r = _batch(rewards, "rewards")
    n = r.shape[-1]
    _check_k(k, n)
    if k == 1:
        if n == 1:
            return torch.zeros_like(r)
        return r - (r.sum(-1, keepdim=True) - r) / (n - 1)
    if not _is_binary(r):
        return _pkpo_advantages_sorted(r, k)
    _, _, a_pos = _pkpo_binary_tables(n, k)
    return torch.where(r == 1, _by_count(a_pos, r.sum(-1)), torch.zeros_like(r))


# ---------------------------------------------------------------- Pass@k Training (arXiv 2508.10751)


@lru_cache(maxsize=None)
def _passk_tables(n: int, k: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A_pos and A_neg of Chen et al. for each count c = 0..n of correct rollouts."""
    pos, neg = [], []
    for c in range(n + 1):
        q = _ratio(n - c, k, n, k)  # 1 - R_group, exact
        var = (1 - q) * q  # sigma_group^2, exact
        if var == 0:  # every k-subset scores the same: both numerators are exactly 0
            pos.append(0.0)
            neg.append(0.0)
            continue
        sigma = math.sqrt(var)
        t = _ratio(n - c - 1, k - 1, n - 1, k - 1)  # share of a wrong sample's subsets that are all wrong
        pos.append(float(q) / sigma)
        neg.append(float(q - t) / sigma)  # q - t = -(c/n) t exactly
    return tuple(pos), tuple(neg)


def passk_advantages(correct: Tensor, k: int) -> Tensor:
    """Pass@k Training, analytic derivation (Chen et al. 2025, arXiv 2508.10751). REPLACES GRPO's.

        R = 1 - C(n-c, k)/C(n, k),   sigma = sqrt(R (1 - R))                       (Eq. 11, 12)
        A_pos = (1 - R)/sigma,   A_neg = (1 - R - C(n-c-1, k-1)/C(n-1, k-1))/sigma  (Eq. 14, 15)

    Each k-subset of the n rollouts gets the binary pass@k reward, standardised over all C(n,k)
    subsets (mean R, population std sigma); a rollout's advantage is the mean of the standardised
    rewards of the C(n-1,k-1) subsets holding it (Appendix B.3). sigma = 0 (c = 0, or n-c < k
    so every subset passes) gives 0 for every rollout: both numerators are exactly 0 there, the
    limit the authors' code reaches with sigma + 1e-6. Code: github.com/RUCAIBox/Passk_Training,
    code/passk_adv.py `calc_adv` (divides by sigma + 1e-6; we divide by sigma exactly, a relative
    difference below 1e-6/sigma). correct (P, M) bool or 0/1, k <= M; float64, detached.
    """
    x = _batch(correct, "correct")
    if not _is_binary(x):
        raise ValueError("passk advantages need 0/1 correctness")
    n = x.shape[-1]
    _check_k(k, n)
    pos, neg = _passk_tables(n, k)
    c = x.sum(-1)
    return torch.where(x == 1, _by_count(pos, c), _by_count(neg, c))


# ---------------------------------------------------------------- best sample only (arXiv 2503.19595)


def passk_best_advantages(rewards: Tensor, *, scale_by_std: bool = False) -> Tensor:
    """Best-sample-only pass@M advantage (Tang et al. 2025, arXiv 2503.19595). REPLACES GRPO's.

        A_i = max_j r_j - max_{j != i} r_j   =  max - second max for the best sample, 0 for the rest

    Tang et al.'s leave-one-out gradient of max@k with k = M (the whole group); it is PKPO's
    s^(loo-1) at n = k (arXiv 2505.15201, Sec. 4.3). Code: verl, verl/trainer/ppo/core_algos.py
    `compute_grpo_passk_outcome_advantage` (adv estimator "grpo_passk"): torch.topk(r, 2), only
    index topk[0] is written. Every other sample gets exactly 0 (a port that kept the others
    collapsed training). Ties: a tied maximum gives max - second max = 0, so the whole group is
    0 whichever tied index is "best", as in verl. scale_by_std=True divides by (sample std +
    1e-6) like verl's default norm_adv_by_std_in_grpo=True; off by default (the paper's form).
    rewards (P, M) real, M >= 2; float64, detached.
    """
    r = _batch(rewards, "rewards")
    if r.shape[-1] < 2:
        raise ValueError(f"passk-best needs at least 2 rollouts per prompt, got {r.shape[-1]}")
    top = torch.topk(r, 2, dim=-1)
    gap = top.values[..., :1] - top.values[..., 1:]
    if scale_by_std:
        gap = gap / (r.std(-1, keepdim=True) + 1e-6)
    return torch.zeros_like(r).scatter_(-1, top.indices[..., :1], gap)


# ---------------------------------------------------------------- dispatch


def check_method(method: str, strategy: Strategy, m: int) -> None:
    """Raise MethodError (one line) unless `method` applies to `strategy` with m rollouts per prompt.

    cat applies to everything. The peers take k = the strategy's N and need k <= m: pkpo applies
    to pass@N (pass@k) and bon@N (max@k of the reward); passk to pass@N only (binary reward);
    passk-best to pass@N and bon@N with N = m, since it optimises the best of the whole group.
    No peer applies to ce or maj@N (they optimise pass@k / max@k, not a majority vote).
    """
    if method not in METHODS:
        raise MethodError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    if method == "cat":
        return
    if strategy.kind not in _APPLIES_TO[method]:
        raise MethodError(f"{method} does not apply to {strategy}: it optimises {_OBJECTIVE[method]}")
    k = strategy.n
    if method == "passk-best":
        if k != m:
            raise MethodError(
                f"passk-best optimises the best of all M = {m} rollouts, so it needs N = M, got {strategy}; "
                "use pkpo for N < M or set the rollouts per prompt to N"
            )
        if m < 2:
            raise MethodError(f"passk-best needs at least 2 rollouts per prompt, got {strategy} with M = {m}")
        return
    if k > m:
        raise MethodError(f"{method} with {strategy} needs k = N = {k} <= M = {m} rollouts per prompt")


def method_advantages(method: str, strategy: Strategy, rewards: Tensor, correct: Tensor) -> Tensor:
    """The peer method's (P, M) advantage, which REPLACES the group-standardised GRPO advantage.

    rewards (P, M): the scalar combined reward (bon@N ranks it); correct (P, M): graded
    correctness (pass@N uses it as the 0/1 reward). k = strategy.n. `cat` is refused: CAT
    multiplies GRPO's advantage by `objectives.rl_weights` (see `objectives.cat_advantages`).
    """
    rewards = torch.as_tensor(rewards)
    correct = torch.as_tensor(correct)
    if rewards.shape != correct.shape or rewards.dim() != 2:
        raise ValueError(
            f"rewards and correct must both be (P, M), got {tuple(rewards.shape)} and {tuple(correct.shape)}"
        )
    check_method(method, strategy, rewards.shape[-1])
    if method == "cat":
        raise MethodError("cat multiplies GRPO's advantage: use objectives.rl_weights and objectives.cat_advantages")
    target = correct.to(torch.float64) if strategy.kind == "pass" else rewards
    if method == "pkpo":
        return pkpo_advantages(target, strategy.n)
    if method == "passk":
        return passk_advantages(correct, strategy.n)
    return passk_best_advantages(target)
