"""The CAT objectives: the paper's Table 1 as code (arXiv 2604.24957; cat-spec §1-5).

A test-time strategy with budget N turns the single-sample success probability p into a
success functional S(p). One rule generates every weight:

    SFT minimises -log S(p);  its gradient is w_SFT(p) * grad(-log p),  w_SFT = p S'(p) / S(p)
    RL  maximises S(p);       its multiplier is  w_RL(p) = S'(p)  ("raw"),  or w_SFT  ("log")

Everything is computed from log p in float64 log space, so p -> 0 and p -> 1 give finite
losses, weights and gradients for N up to 1024 (cat-spec §3). Pure: torch only, no model, no I/O.
Weights are returned detached: CE must never be multiplied by a differentiable w(p).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor

# the strategy grammar is torch-free so that configs parse it at the CLI boundary; named here too
from catcli.strategy import Strategy, StrategyError, parse_strategy  # noqa: F401

Form = Literal["raw", "log"]
PEstimate = Literal["sequence", "success"]

# log p is clamped into [LOG_P_MIN, LOG_P_MAX] so that p = 0 and p = 1 exactly take the
# continuous extension of every formula instead of 0 * inf; the gradient is exact inside.
LOG_P_MIN = -1e300
LOG_P_MAX = -1e-300
_LOG_EPS = math.log(torch.finfo(torch.float64).eps)

# cat-spec §4: raw RL weights are clipped before any normalisation.
RL_CLIP = {"pass": 50.0, "maj": 10.0}
ROLLOUT_P_FLOOR = 1e-10  # cat-spec §2: pass@N RL's sequence p is clamped to [1e-10, 1 - 1e-10]
ALL_WRONG_PENALTY = 0.5


# ---------------------------------------------------------------- numerics (cat-spec §3)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - e^x) for x < 0, accurate everywhere (Mächler 2012).

    log(-expm1(x)) above -ln 2, log1p(-e^x) below. Each branch is fed a harmless
    placeholder where it is not used, so the unused branch cannot put NaN in the gradient.
    """
    near_zero = x > -math.log(2.0)
    safe = torch.full_like(x, -1.0)
    a = torch.log(-torch.expm1(torch.where(near_zero, x, safe)))
    b = torch.log1p(-torch.exp(torch.where(near_zero, safe, x)))
    return torch.where(near_zero, a, b)


@lru_cache(maxsize=None)
def _log_binom_row(n: int) -> tuple[float, ...]:
    """log C(n, j) for j = 0..n, cached as CPU floats (never device tensors)."""
    lg = math.lgamma
    return tuple(lg(n + 1) - lg(j + 1) - lg(n - j + 1) for j in range(n + 1))


def _log_binom(n: int, j: int) -> float:
    return _log_binom_row(n)[j]


def _prepare(log_p: Tensor | float) -> Tensor:
    """log p in float64, clamped into [LOG_P_MIN, LOG_P_MAX].

    The upper clamp passes the gradient through: at p = 1 exactly (log p = 0) a plain clamp would
    zero it, where -log p still has gradient -1 (and -N log p, maj@N:k=N's loss, has -N).
    """
    log_p = torch.as_tensor(log_p, dtype=torch.float64).to(torch.float64)
    above = (log_p - LOG_P_MAX).clamp(min=0).detach()
    return (log_p - above).clamp(min=LOG_P_MIN)


def _binomial_terms(n: int, js: range, log_p: Tensor, log_1mp: Tensor, shift: int = 0) -> Tensor:
    """log[C(n,j) p^(j-shift) (1-p)^(n-j)] for j in js, stacked on a new last axis."""
    return torch.stack([_log_binom(n, j) + (j - shift) * log_p + (n - j) * log_1mp for j in js], dim=-1)


# ---------------------------------------------------------------- S(p) per strategy


def log_success_pass(log_p: Tensor, n: int) -> Tensor:
    """log S for pass@N: S(p) = 1 - (1-p)^N = log1mexp(N log1mexp(log p)).

    When N p is below machine epsilon, S ≈ N p, so log S ≈ log N + log p: finite even at
    log p = -1e4, where p itself underflows (cat-spec §3).
    """
    log_p = _prepare(log_p)
    tiny = log_p + math.log(n) < _LOG_EPS
    exact_in = torch.where(tiny, torch.full_like(log_p, _LOG_EPS), log_p)
    exact = log1mexp(float(n) * log1mexp(exact_in))  # float: torch refuses Python ints past int64
    return torch.where(tiny, math.log(n) + log_p, exact)


def log_success_maj(log_p: Tensor, n: int, k: int) -> Tensor:
    """log S for maj@N, threshold k: S(p) = B_{N,k}(p) = P[Binomial(N, p) >= k].

    Below the pivot p* = k/(N+1) the upper tail is summed directly, with p^k factored out
    so no term underflows; above it, log B = log1mexp(log lower tail), which keeps
    B ≈ 1 accurate. k = 1 equals pass@N; k = N gives N log p.
    """
    log_p = _prepare(log_p)
    log_1mp = log1mexp(log_p)
    below = log_p <= math.log(k / (n + 1))
    upper = k * log_p + torch.logsumexp(_binomial_terms(n, range(k, n + 1), log_p, log_1mp, k), -1)
    lower = torch.logsumexp(_binomial_terms(n, range(0, k), log_p, log_1mp), -1)
    lower = torch.where(below, torch.full_like(lower, -1.0), lower)
    return torch.where(below, upper, log1mexp(lower))


def log_success(strategy: Strategy, log_p: Tensor) -> Tensor:
    """log S(p) for any strategy; `ce` and N = 1 give log p. bon@N SFT uses pass@N (Table 1)."""
    log_p = _prepare(log_p)
    if strategy.kind == "ce" or strategy.n == 1:
        return log_p
    if strategy.kind == "maj":
        return log_success_maj(log_p, strategy.n, strategy.sft_k)
    return log_success_pass(log_p, strategy.n)


def sft_loss(strategy: Strategy, log_p: Tensor) -> Tensor:
    """Per-sequence CAT SFT loss -log S(p), float64, shape of `log_p`.

    `log_p` is the summed target-token log-probability of each sequence (differentiable).
    Its gradient is w_SFT(p) * grad(-log p) (cat-spec §1).
    """
    return -log_success(strategy, log_p)


def pairwise_token_loss(gold_logit: Tensor, rival_logits: Tensor) -> Tensor:
    """Pairwise-contrastive token loss mean_j[-log sigmoid(z_gold - z_rival_j)] (cat-spec §5).

    gold_logit (T,), rival_logits (T, K): logits of the gold token and of K rival tokens drawn
    from the model's softmax with the gold token masked. Returns (T,).
    """
    margin = gold_logit.unsqueeze(-1) - rival_logits
    return -torch.nn.functional.logsigmoid(margin).mean(-1)


# ---------------------------------------------------------------- weights (Table 1)


def log_w_sft_pass(log_p: Tensor, n: int) -> Tensor:
    """log w_SFT for pass@N: w = N p (1-p)^(N-1) / (1 - (1-p)^N); w(0) = 1, w(1) = 0."""
    log_p = _prepare(log_p)
    return math.log(n) + log_p + float(n - 1) * log1mexp(log_p) - log_success_pass(log_p, n)


def log_w_sft_maj(log_p: Tensor, n: int, k: int) -> Tensor:
    """log w_SFT for maj@N: w = k C(N,k) p^k (1-p)^(N-k) / B_{N,k}(p); w(0) = k.

    Below the pivot p^k is cancelled against the tail analytically rather than
    subtracting two enormous log values.
    """
    log_p = _prepare(log_p)
    log_1mp = log1mexp(log_p)
    head = math.log(k) + _log_binom(n, k) + (n - k) * log_1mp
    below = log_p <= math.log(k / (n + 1))
    shifted_tail = torch.logsumexp(_binomial_terms(n, range(k, n + 1), log_p, log_1mp, k), -1)
    return torch.where(below, head - shifted_tail, head + k * log_p - log_success_maj(log_p, n, k))


def log_w_sft(strategy: Strategy, log_p: Tensor) -> Tensor:
    """log w_SFT(p) = log[p S'(p) / S(p)] for any strategy (0 for ce and N = 1)."""
    log_p = _prepare(log_p)
    if strategy.kind == "ce" or strategy.n == 1:
        return torch.zeros_like(log_p)
    if strategy.kind == "maj":
        return log_w_sft_maj(log_p, strategy.n, strategy.sft_k)
    return log_w_sft_pass(log_p, strategy.n)


def w_sft(strategy: Strategy, log_p: Tensor) -> Tensor:
    """w_SFT(p) = p S'(p) / S(p), detached, float64 (cat-spec §1, paper Table 1)."""
    return torch.exp(log_w_sft(strategy, log_p.detach() if isinstance(log_p, Tensor) else log_p))


def log_w_rl_pass(log_p: Tensor, n: int) -> Tensor:
    """log w_RL for pass@N: w = S'(p) = N (1-p)^(N-1); w(0) = N, w(1) = 0 (N > 1)."""
    log_p = _prepare(log_p)
    return math.log(n) + float(n - 1) * log1mexp(log_p)


def log_w_rl_maj(log_p: Tensor, n: int, k: int) -> Tensor:
    """log w_RL for maj@N: w = S'(p) = N C(N-1,k-1) p^(k-1) (1-p)^(N-k)."""
    log_p = _prepare(log_p)
    return math.log(n) + _log_binom(n - 1, k - 1) + (k - 1) * log_p + (n - k) * log1mexp(log_p)


def log_w_rl_bon(log_q: Tensor, n: int) -> Tensor:
    """log w_RL for bon@N: w = N q^(N-1), q the sample's reward quantile (`bon_quantile`)."""
    return math.log(n) + (n - 1) * _prepare(log_q)


def w_rl(strategy: Strategy, log_p: Tensor, form: Form = "raw", k: int | None = None) -> Tensor:
    """RL multiplier, detached, float64: S'(p) ("raw") or w_SFT(p) ("log") (cat-spec §1).

    For maj@N, `k` overrides the strategy's threshold (the dynamic k of one prompt).
    For bon@N, `log_p` is the log reward quantile q and only the raw form exists.
    """
    log_p = _prepare(log_p.detach() if isinstance(log_p, Tensor) else log_p)
    if strategy.kind == "ce" or strategy.n == 1:
        return torch.ones_like(log_p)
    if strategy.kind == "bon":
        if form != "raw":
            raise StrategyError("bon@N has only the raw rank weight N q^(N-1); use --form raw")
        return torch.exp(log_w_rl_bon(log_p, strategy.n))
    if strategy.kind == "maj":
        k = k if k is not None else strategy.sft_k
        if form == "log":
            return torch.exp(log_w_sft_maj(log_p, strategy.n, k))
        return torch.exp(log_w_rl_maj(log_p, strategy.n, k))
    if form == "log":
        return torch.exp(log_w_sft_pass(log_p, strategy.n))
    return torch.exp(log_w_rl_pass(log_p, strategy.n))


# ---------------------------------------------------------------- estimating p in RL (§2, §4)


def rollout_log_p(seq_log_p: Tensor) -> Tensor:
    """pass@N RL p from the rollout policy: exp(clamp(sum log pi_old, -50, 0)) in [1e-10, 1-1e-10].

    Returned as log p. For long completions this sits at the 1e-10 floor and the weight is
    nearly constant; callers should log it rather than hide it (cat-spec §2).
    """
    p = torch.exp(seq_log_p.detach().to(torch.float64).clamp(-50.0, 0.0))
    return torch.log(p.clamp(ROLLOUT_P_FLOOR, 1 - ROLLOUT_P_FLOOR))


def at_rollout_floor(seq_log_p: Tensor) -> Tensor:
    """Which rollouts' sequence p sits at the 1e-10 floor, where its weight stops depending on p."""
    return seq_log_p.detach().to(torch.float64) <= math.log(ROLLOUT_P_FLOOR)


def laplace_p(c: int, m: int) -> float:
    """The success-rate estimate of p from c correct of m sampled answers: (c + 1) / (m + 2).

    Laplace's rule: never 0 or 1, so every weight stays finite and every problem keeps a gradient
    (cat-spec §2, §2.1).
    """
    return (c + 1) / (m + 2)


def laplace_log_p(correct: Tensor) -> Tensor:
    """log `laplace_p` of each prompt from its graded rollouts; correct is (P, M) -> (P,)."""
    c = correct.to(torch.float64).sum(-1)
    m = correct.shape[-1]
    return torch.log((c + 1) / (m + 2))


def dynamic_k(n: int, c_max: int, m: int) -> int:
    """Per-prompt majority threshold k = max(2, min(floor(N/2)+1, floor(N c_max / M)+1)), at most N.

    c_max counts the most frequent wrong answer among the prompt's M rollouts (failed
    extractions share one wrong key). (8,0,8)->2, (8,3,8)->4, (8,8,8)->5, (4,8,8)->3.
    N = 1 has no majority to speak of, so k is capped at N.
    """
    return min(n, max(2, min(n // 2 + 1, (n * c_max) // m + 1)))


def bon_quantile(rewards: Tensor) -> Tensor:
    """q_i = (#{j : r_j < r_i} + 1) / (M + 1) within each group; rewards (P, M); ties share q."""
    r = rewards.to(torch.float64)
    lower = (r.unsqueeze(-1) > r.unsqueeze(-2)).sum(-1).to(torch.float64)
    return (lower + 1) / (r.shape[-1] + 1)


def normalise_batch_mean(w: Tensor, n_prompts: int) -> Tensor:
    """Scale so the mean weight over the whole logical batch is 1 (maj@N and bon@N, §4).

    Never within one prompt of weights constant within it (maj@N): a one-prompt batch keeps its
    raw weight (bon@N passes its rollout count, its weights varying by rollout), and an all-zero
    batch stays zero rather than dividing by zero.
    """
    if n_prompts <= 1:
        return w
    mean = w.mean()
    return w / mean if mean > 0 else w


def group_advantages(rewards: Tensor) -> Tensor:
    """GRPO advantage per prompt group: (r - mean) / (sample std + 1e-4); rewards (P, M)."""
    r = rewards.to(torch.float64)
    std = r.std(-1, keepdim=True) if r.shape[-1] > 1 else torch.zeros_like(r[..., :1])
    return (r - r.mean(-1, keepdim=True)) / (std + 1e-4)


@dataclass(frozen=True)
class RLWeights:
    """Per-completion CAT weights of one logical batch, shape (P, M), and what chose them."""

    weights: Tensor
    ks: tuple[int, ...] | None  # maj@N: the threshold used for each prompt


def rl_weights(
    strategy: Strategy,
    correct: Tensor,
    *,
    form: Form = "raw",
    p_estimate: PEstimate = "sequence",
    seq_log_p: Tensor | None = None,
    wrong_mode_counts: Tensor | None = None,
    rewards: Tensor | None = None,
) -> RLWeights:
    """CAT RL weights for a batch of P prompts x M rollouts (cat-spec §4), detached.

    correct: (P, M) 0/1 graded correctness.  seq_log_p: (P, M) summed rollout log-probs
    (pass@N with the sequence estimate).  wrong_mode_counts: (P,) c_max per prompt (maj@N with
    dynamic k).  rewards: (P, M) rewards ranked for bon@N.
    pass@N takes p from each rollout's sequence probability (`sequence`, the paper's) or from its
    prompt's Laplace success rate (`success`, cat-spec §2.1: one weight per prompt); maj@N always
    from the success rate. Raw weights are clipped first (pass 50, maj 10), then maj and bon are
    normalised to batch mean 1; pass is not.
    """
    p_count, m = correct.shape
    if strategy.kind == "ce" or strategy.n == 1:
        return RLWeights(torch.ones(p_count, m, dtype=torch.float64), None)
    if strategy.kind == "pass":
        if p_estimate == "success":
            w = w_rl(strategy, laplace_log_p(correct), form).clamp(max=RL_CLIP["pass"])
            return RLWeights(w.unsqueeze(-1).expand(p_count, m), None)
        if seq_log_p is None:
            raise ValueError("pass@N RL weights need the rollouts' summed log-probs")
        w = w_rl(strategy, rollout_log_p(seq_log_p), form).clamp(max=RL_CLIP["pass"])
        return RLWeights(w, None)
    if strategy.kind == "bon":
        if rewards is None:
            raise ValueError("bon@N RL weights need rewards to rank")
        w = w_rl(strategy, torch.log(bon_quantile(rewards)), form)
        # always to mean 1, one prompt too: its weights vary within the prompt (the one-prompt
        # rule keeps a weight that is constant within a prompt, which normalising would erase)
        return RLWeights(normalise_batch_mean(w, p_count * m), None)
    if strategy.k is not None:
        ks = (strategy.k,) * p_count
    else:
        if wrong_mode_counts is None:
            raise ValueError("maj@N RL weights with dynamic k need each prompt's c_max")
        ks = tuple(dynamic_k(strategy.n, int(c), m) for c in wrong_mode_counts.tolist())
    log_p = laplace_log_p(correct)
    per_prompt = torch.stack([w_rl(strategy, log_p[i], form, k=ks[i]) for i in range(p_count)])
    w = per_prompt.clamp(max=RL_CLIP["maj"]).unsqueeze(-1).expand(p_count, m)
    return RLWeights(normalise_batch_mean(w, p_count), ks)


def cat_advantages(advantages: Tensor, weights: Tensor, correct: Tensor, penalty: float = 0.0) -> Tensor:
    """A'_i = (A_i - penalty * 1[all wrong]) * w_i (cat-spec §4); maj@N's penalty is 0.5.

    Applied after group standardisation so a per-prompt w is not cancelled. The all-wrong
    penalty comes before the weight, as in the authors' reference (its group-advantage function
    subtracts it, the weight multiplies afterwards; its majority baseline gives vanilla GRPO the
    same penalty with w = 1). Shapes (P, M); returns float64.
    """
    out = advantages.to(torch.float64)
    if penalty:
        all_wrong = (correct.sum(-1, keepdim=True) == 0).to(torch.float64)
        out = out - penalty * all_wrong
    return out * weights.to(torch.float64)
