"""The CAT math against real oracles: 60-digit mpmath sums, Monte Carlo, autograd, finite differences."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from catcli import objectives as obj
from catcli.objectives import Strategy, StrategyError, parse_strategy

mpmath.mp.dps = 60

NS = [1, 2, 4, 16, 64, 256, 1024]
PS = [1e-300, 1e-100, 1e-20, 1e-8, 1e-3, 0.05, 0.2, 0.5, 0.8, 0.95, 0.999, 1 - 1e-8, 1 - 1e-16]
STRATEGIES = [
    Strategy("ce"),
    Strategy("pass", 1),
    Strategy("pass", 4),
    Strategy("pass", 16),
    Strategy("pass", 1024),
    Strategy("maj", 8, 3),
    Strategy("maj", 16, 4),
    Strategy("maj", 64, 26),
    Strategy("maj", 8),
    Strategy("maj", 1024, 300),
    Strategy("bon", 16),
]


def exact_S(strategy: Strategy, log_p: float) -> mpmath.mpf:
    p = mpmath.exp(mpmath.mpf(log_p))
    if strategy.kind == "ce" or strategy.n == 1:
        return p
    n = strategy.n
    if strategy.kind == "maj":
        k = strategy.sft_k
        return mpmath.fsum(mpmath.binomial(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))
    return -mpmath.expm1(n * mpmath.log1p(-p))  # 1-(1-p)^N without cancellation at p=1e-300


def exact_dS(strategy: Strategy, log_p: float, k: int | None = None) -> mpmath.mpf:
    """S'(p) from the closed forms of Table 1, in 60-digit arithmetic."""
    p = mpmath.exp(mpmath.mpf(log_p))
    n = strategy.n
    if strategy.kind == "maj":
        k = k or strategy.sft_k
        return n * mpmath.binomial(n - 1, k - 1) * p ** (k - 1) * (1 - p) ** (n - k)
    return n * (1 - p) ** (n - 1)


def rel_close(a: float, b, tol: float = 1e-9) -> bool:
    b = float(b)
    return abs(a - b) <= tol * max(abs(b), 1e-300)


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "text,expected",
    [
        ("ce", Strategy("ce")),
        ("grpo", Strategy("ce")),
        ("pass@16", Strategy("pass", 16)),
        ("maj@4", Strategy("maj", 4)),
        ("maj@8:k=3", Strategy("maj", 8, 3)),
        ("maj@8:frac=0.375", Strategy("maj", 8, 3)),
        ("maj@16:frac=0.25", Strategy("maj", 16, 4)),
        ("maj@64:frac=0.40625", Strategy("maj", 64, 26)),
        ("maj@64:frac=0.4", Strategy("maj", 64, 26)),
        ("bon@8", Strategy("bon", 8)),
        (" PASS@4 ", Strategy("pass", 4)),
    ],
)
def test_parse_strategy(text, expected):
    assert parse_strategy(text) == expected


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("pass@0", "at least 1"),
        ("maj@4:k=5", "k must be in 1..4"),
        ("maj@4:k=0", "k must be in 1..4"),
        ("foo@3", "invalid strategy 'foo@3'"),
        ("pass@x", "invalid strategy 'pass@x'"),
        ("pass@4:k=2", "only maj@N"),
        ("maj@8:frac=1.5", "frac must be in (0, 1]"),
        ("maj@8:frac=abc", "frac must be a number"),
        ("", "invalid strategy"),
    ],
)
def test_parse_strategy_errors_name_the_problem(text, fragment):
    with pytest.raises(StrategyError, match=None) as info:
        parse_strategy(text)
    assert fragment in str(info.value)


def test_str_round_trips():
    for s in ["ce", "pass@4", "maj@8:k=3", "bon@16", "maj@4"]:
        assert str(parse_strategy(s)) == s


def test_sft_default_threshold_is_strict_majority():
    assert Strategy("maj", 4).sft_k == 3
    assert Strategy("maj", 8).sft_k == 5
    assert Strategy("maj", 8, 3).sft_k == 3


# ------------------------------------------------------------------ S(p) against oracles


@pytest.mark.parametrize("strategy", STRATEGIES, ids=str)
@pytest.mark.parametrize("p", PS)
def test_log_success_matches_exact_binomial_sum(strategy, p):
    log_p = math.log(p)
    got = obj.log_success(strategy, torch.tensor(log_p, dtype=torch.float64)).item()
    want = mpmath.log(exact_S(strategy, log_p))
    assert math.isfinite(got)
    assert abs(got - float(want)) <= 1e-9 * max(1.0, abs(float(want)))


@pytest.mark.parametrize("strategy", [Strategy("pass", 4), Strategy("maj", 8, 3), Strategy("maj", 16)], ids=str)
def test_success_matches_monte_carlo(strategy):
    gen = torch.Generator().manual_seed(0)
    k = strategy.sft_k if strategy.kind == "maj" else 1
    for p in [0.1, 0.3, 0.6]:
        draws = torch.bernoulli(torch.full((200_000, strategy.n), p), generator=gen).sum(-1)
        freq = (draws >= k).double().mean().item()
        se = math.sqrt(freq * (1 - freq) / draws.numel())
        s = obj.log_success(strategy, torch.tensor(math.log(p))).exp().item()
        assert abs(freq - s) < 5 * se + 1e-6


def test_maj_k1_equals_pass_and_kN_is_n_log_p():
    log_p = torch.log(torch.tensor(PS, dtype=torch.float64))
    for n in [2, 8, 64]:
        torch.testing.assert_close(
            obj.log_success(Strategy("maj", n, 1), log_p), obj.log_success(Strategy("pass", n), log_p)
        )
        torch.testing.assert_close(obj.log_success(Strategy("maj", n, n), log_p), n * log_p)
        torch.testing.assert_close(obj.w_sft(Strategy("maj", n, 1), log_p), obj.w_sft(Strategy("pass", n), log_p))
        torch.testing.assert_close(obj.w_sft(Strategy("maj", n, n), log_p), torch.full_like(log_p, n))


# ------------------------------------------------------------------ weights


@pytest.mark.parametrize("strategy", STRATEGIES, ids=str)
def test_autograd_of_sft_loss_is_w_sft_times_grad_neg_log_p(strategy):
    """d(-log S)/d theta = w_SFT * d(-log p)/d theta, with log p a function of parameters theta."""
    theta = torch.tensor([-3.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    for scale in [1e-3, 0.1, 1.0, 5.0, 40.0, 700.0, 1e4]:
        log_p = -scale * torch.nn.functional.softplus(theta)  # any differentiable map into log p < 0
        grad_loss = torch.autograd.grad(obj.sft_loss(strategy, log_p).sum(), theta, retain_graph=True)[0]
        grad_nll = torch.autograd.grad((-log_p).sum(), theta)[0]
        w = obj.w_sft(strategy, log_p)
        assert torch.isfinite(grad_loss).all()
        torch.testing.assert_close(grad_loss, w * grad_nll, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s.kind != "ce" and s.n > 1], ids=str)
@pytest.mark.parametrize("p", PS)
def test_w_sft_matches_exact_p_dS_over_S(strategy, p):
    log_p = math.log(p)
    want = mpmath.exp(mpmath.mpf(log_p)) * exact_dS(strategy, log_p) / exact_S(strategy, log_p)
    got = obj.w_sft(strategy, torch.tensor(log_p, dtype=torch.float64)).item()
    assert rel_close(got, want), (got, float(want))


@pytest.mark.parametrize(
    "strategy", [Strategy("pass", 4), Strategy("pass", 64), Strategy("maj", 8, 3), Strategy("maj", 16, 4)], ids=str
)
@pytest.mark.parametrize("p", [0.01, 0.1, 0.3, 0.5, 0.7, 0.9])
def test_w_rl_raw_is_finite_difference_of_S(strategy, p):
    h = mpmath.mpf("1e-20")
    pm = mpmath.mpf(p)

    def S(x):
        return exact_S(strategy, mpmath.log(x))

    with mpmath.workdps(150):  # S' can be ~1e-62 beside S ~ 1: resolve it with room to spare
        fd = (S(pm + h) - S(pm - h)) / (2 * h)
    got = obj.w_rl(strategy, torch.tensor(math.log(p), dtype=torch.float64)).item()
    assert rel_close(got, fd, 1e-8), (got, float(fd))


def test_w_rl_log_form_is_w_sft():
    log_p = torch.log(torch.tensor([0.01, 0.3, 0.9], dtype=torch.float64))
    for s in [Strategy("pass", 16), Strategy("maj", 8, 3)]:
        torch.testing.assert_close(obj.w_rl(s, log_p, "log"), obj.w_sft(s, log_p))


def test_bon_log_form_is_refused():
    with pytest.raises(StrategyError, match="raw"):
        obj.w_rl(Strategy("bon", 4), torch.tensor(-1.0), "log")


def test_edge_values():
    log_p = torch.log(torch.tensor(PS, dtype=torch.float64))
    for s in [Strategy("pass", 1), Strategy("maj", 1), Strategy("ce")]:
        assert torch.equal(obj.w_sft(s, log_p), torch.ones_like(log_p))
        assert torch.equal(obj.w_rl(s, log_p), torch.ones_like(log_p))
    for n in [2, 16, 1024]:
        w = obj.w_sft(Strategy("pass", n), log_p)
        assert (w <= 1 + 1e-12).all()
        assert abs(w[0].item() - 1) < 1e-12  # p -> 0
        assert w[-1].item() < 1e-12  # p -> 1
        torch.testing.assert_close(
            obj.w_rl(Strategy("pass", n), torch.tensor(-1e4)), torch.tensor(float(n), dtype=torch.float64)
        )
    for n, k in [(8, 3), (16, 4), (64, 26)]:
        assert abs(obj.w_sft(Strategy("maj", n, k), log_p)[0].item() - k) < 1e-9  # p -> 0


def test_bon_sft_is_pass_sft():
    log_p = torch.log(torch.tensor(PS, dtype=torch.float64))
    torch.testing.assert_close(obj.sft_loss(Strategy("bon", 8), log_p), obj.sft_loss(Strategy("pass", 8), log_p))


@pytest.mark.parametrize("n", NS)
def test_everything_finite_at_the_extremes(n):
    log_p = torch.cat(
        [torch.tensor([-1e4, -700.0, -1e-16], dtype=torch.float64), torch.log(torch.tensor(PS, dtype=torch.float64))]
    ).requires_grad_(True)
    for s in [Strategy("pass", n), Strategy("maj", n), Strategy("maj", n, max(1, n // 4)), Strategy("maj", n, n)]:
        loss = obj.sft_loss(s, log_p)
        (grad,) = torch.autograd.grad(loss.sum(), log_p)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), s
        for form in ("raw", "log"):
            assert torch.isfinite(obj.w_rl(s, log_p, form)).all(), (s, form)
        assert torch.isfinite(obj.w_sft(s, log_p)).all()
    # the endpoints themselves take the continuous extension
    ends = torch.tensor([float("-inf"), 0.0], dtype=torch.float64)
    assert torch.isfinite(obj.w_sft(Strategy("pass", n), ends)).all()
    assert torch.isfinite(obj.w_rl(Strategy("maj", n), ends)).all()


def test_gradcheck_float64():
    for s in [Strategy("pass", 16), Strategy("maj", 8, 3), Strategy("maj", 64, 26)]:
        log_p = torch.tensor([-8.0, -2.0, -0.3, -0.01], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, s=s: obj.sft_loss(s, x), (log_p,))


def test_weights_are_detached_and_loss_keeps_input_graph():
    log_p = torch.tensor([-1.0, -2.0], requires_grad=True)
    assert not obj.w_sft(Strategy("pass", 4), log_p).requires_grad
    assert obj.sft_loss(Strategy("pass", 4), log_p).requires_grad


# ------------------------------------------------------------------ RL estimation rules (§2, §4)


@pytest.mark.parametrize(
    "n,c_max,m,k", [(8, 0, 8, 2), (8, 1, 8, 2), (8, 3, 8, 4), (8, 8, 8, 5), (4, 8, 8, 3), (1, 3, 4, 1)]
)
def test_dynamic_k_examples(n, c_max, m, k):
    assert obj.dynamic_k(n, c_max, m) == k


def test_laplace_p():
    correct = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(obj.laplace_log_p(correct).exp(), torch.tensor([3 / 6, 1 / 6], dtype=torch.float64))


def test_bon_quantile_with_ties():
    q = obj.bon_quantile(torch.tensor([[0.1, 0.5, 0.5, 0.9]]))
    torch.testing.assert_close(q, torch.tensor([[1 / 5, 2 / 5, 2 / 5, 4 / 5]], dtype=torch.float64))


def test_normalise_batch_mean_rules():
    w = torch.tensor([[2.0, 2.0], [6.0, 6.0]], dtype=torch.float64)
    torch.testing.assert_close(obj.normalise_batch_mean(w, 2).mean(), torch.tensor(1.0, dtype=torch.float64))
    one = torch.tensor([[3.0, 3.0]], dtype=torch.float64)
    assert torch.equal(obj.normalise_batch_mean(one, 1), one)
    zeros = torch.zeros(2, 2, dtype=torch.float64)
    assert torch.equal(obj.normalise_batch_mean(zeros, 2), zeros)


def test_rollout_log_p_is_clamped():
    lp = obj.rollout_log_p(torch.tensor([-1e4, -60.0, -1.0, 0.0]))
    p = lp.exp()
    assert p[0].item() == pytest.approx(1e-10) and p[1].item() == pytest.approx(1e-10)
    assert p[2].item() == pytest.approx(math.exp(-1))
    assert p[3].item() == pytest.approx(1 - 1e-10)


def test_maj_rl_weights_differ_between_prompts_and_survive_standardisation():
    s = parse_strategy("maj@4")
    correct = torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]])
    c_max = torch.tensor([3, 2])
    out = obj.rl_weights(s, correct, wrong_mode_counts=c_max)
    assert out.ks == (obj.dynamic_k(4, 3, 8), obj.dynamic_k(4, 2, 8)) == (2, 2)
    raw = torch.stack([obj.w_rl(Strategy("maj", 4, 2), torch.log(torch.tensor(p))) for p in (2 / 10, 7 / 10)])
    want = raw / raw.mean()
    torch.testing.assert_close(out.weights[:, 0], want)
    adv = obj.group_advantages(correct.double())
    cat = obj.cat_advantages(adv, out.weights, correct, obj.ALL_WRONG_PENALTY)
    ratio = cat / adv.where(adv != 0, torch.ones_like(adv))
    assert not torch.allclose(ratio[0], ratio[1])  # per-prompt scale is not cancelled


def test_maj_rl_clip_then_normalise_and_all_wrong_penalty():
    s = parse_strategy("maj@64:k=26")
    correct = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0]])
    out = obj.rl_weights(s, correct)
    raw = obj.w_rl(Strategy("maj", 64, 26), obj.laplace_log_p(correct))
    clipped = raw.clamp(max=10.0)
    torch.testing.assert_close(out.weights[:, 0], clipped / clipped.mean())
    adv = obj.group_advantages(correct.double())
    cat = obj.cat_advantages(adv, out.weights, correct, obj.ALL_WRONG_PENALTY)
    # the penalty comes before the weight: (0 - 0.5) * w, and w != 1 here
    assert out.weights[0, 0].item() != pytest.approx(1.0)
    torch.testing.assert_close(cat[0], -0.5 * out.weights[0])
    torch.testing.assert_close(cat[1], adv[1] * out.weights[1])


def test_all_wrong_penalty_is_weighted_like_the_authors_reference():
    # their test: rewards [[0,0],[1,1]] with penalty 0.5 give group advantages [[-0.5,-0.5],[0,0]];
    # the CAT weight multiplies those, so an all-wrong group with weight 2 ends at -1
    correct = torch.tensor([[0, 0], [1, 1]])
    adv = obj.group_advantages(correct.double())
    assert torch.equal(obj.cat_advantages(adv, torch.ones(2, 2), correct), adv)  # no penalty: GRPO's own
    unit = obj.cat_advantages(adv, torch.ones(2, 2), correct, 0.5)
    torch.testing.assert_close(unit, torch.tensor([[-0.5, -0.5], [0.0, 0.0]], dtype=torch.float64))
    weighted = obj.cat_advantages(adv, torch.tensor([[2.0, 2.0], [0.5, 0.5]]), correct, 0.5)
    torch.testing.assert_close(weighted, torch.tensor([[-1.0, -1.0], [0.0, 0.0]], dtype=torch.float64))


def test_pass_rl_weights_from_rollout_log_probs_unnormalised_and_clipped():
    s = parse_strategy("pass@64")
    seq = torch.tensor([[-1e3, -0.5], [-3.0, -0.01]])
    out = obj.rl_weights(s, torch.ones(2, 2), seq_log_p=seq)
    want = obj.w_rl(s, obj.rollout_log_p(seq)).clamp(max=50.0)
    torch.testing.assert_close(out.weights, want)
    assert out.weights[0, 0].item() == 50.0  # p at the floor: 64 (1-1e-10)^63 clipped to 50


def test_pass_rl_weights_from_the_success_rate_are_one_per_prompt():
    # p = (c + 1) / (M + 2) per prompt, whatever each rollout's own probability (cat-spec §2.1)
    from fractions import Fraction

    s = parse_strategy("pass@8")
    correct = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    out = obj.rl_weights(s, correct, form="log", p_estimate="success")
    for row, c in zip(out.weights, (0, 1, 4)):
        p = Fraction(c + 1, 6)
        s_p = 1 - (1 - p) ** 8
        want = float(8 * p * (1 - p) ** 7 / s_p)  # w_SFT exactly, far below the clip
        assert torch.allclose(row, torch.full((4,), want, dtype=torch.float64), rtol=1e-12)
    assert out.weights[0, 0] > out.weights[1, 0] > out.weights[2, 0]  # harder prompts weigh more
    raw = obj.rl_weights(s, correct, p_estimate="success").weights
    assert raw[0, 0].item() == pytest.approx(8 * (5 / 6) ** 7)  # raw form N (1-p)^(N-1), unnormalised


def test_bon_rl_weights_rank_within_group():
    s = parse_strategy("bon@4")
    rewards = torch.tensor([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]])
    out = obj.rl_weights(s, torch.ones(2, 3), rewards=rewards)
    q = obj.bon_quantile(rewards)
    raw = 4 * q**3
    torch.testing.assert_close(out.weights, raw / raw.mean())


def test_group_advantages_match_grpo_rule():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    a = obj.group_advantages(r)
    want0 = (r[0] - 0.5) / (r[0].std() + 1e-4)
    torch.testing.assert_close(a[0], want0.double())
    assert torch.equal(a[1], torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("strategy, gradient", [("ce", -1.0), ("pass@1", -1.0), ("maj@8:k=8", -8.0), ("pass@8", 0.0)])
def test_sft_gradient_at_p_equal_to_one_is_the_formulas_limit(strategy, gradient):
    # the reference's tests: -log p has gradient -1 at p = 1, and maj@N:k=N's -N log p has -N; a plain
    # clamp of log p to -1e-300 zeroed them
    for value in (0.0, -1e-300, -5e-301):
        log_p = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(obj.sft_loss(parse_strategy(strategy), log_p), log_p)
        assert grad.item() == pytest.approx(gradient, rel=1e-9, abs=1e-12), value


def test_bon_weights_of_a_one_prompt_batch_are_normalised_too():
    # the one-prompt rule keeps weights that are constant within a prompt; bon@N's vary by rollout
    s = parse_strategy("bon@4")
    rewards = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    out = obj.rl_weights(s, torch.ones(1, 4), rewards=rewards)
    raw = 4 * obj.bon_quantile(rewards) ** 3
    torch.testing.assert_close(out.weights, raw / raw.mean())
    assert out.weights.mean().item() == pytest.approx(1.0)
