"""How much CAT reweights a data set against CE: reweighting.summarise and `catcli weights --from`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from catcli.cli import main
from catcli.objectives import parse_strategy
from catcli.reweighting import reweighted_share, summarise


def pass4_sft(p: float) -> float:
    """Table 1 by hand: N p (1-p)^(N-1) / (1 - (1-p)^N) with N = 4."""
    return 4 * p * (1 - p) ** 3 / (1 - (1 - p) ** 4)


def test_pass4_summary_matches_hand_computed_weights():
    r = summarise([0.99, 0.01, 0.5], parse_strategy("pass@4"))
    lo, mid, hi = 3.96e-6 / (1 - 1e-8), 4 / 15, 0.04 * 0.99**3 / (1 - 0.99**4)  # p = 0.99, 0.5, 0.01
    assert (lo, mid, hi) == pytest.approx([pass4_sft(0.99), pass4_sft(0.5), pass4_sft(0.01)], rel=1e-12)
    w = r.w_sft
    assert (w.min, w.p50, w.max, w.mean) == pytest.approx([lo, mid, hi, (lo + mid + hi) / 3], rel=1e-9)
    assert w.p10 == pytest.approx(lo + 0.2 * (mid - lo), rel=1e-9)  # linear interpolation at rank 0.2
    assert w.p90 == pytest.approx(mid + 0.8 * (hi - mid), rel=1e-9)
    assert (r.p.min, r.p.p50, r.p.max, r.p.mean) == pytest.approx([0.01, 0.5, 0.99, 0.5])
    rl = r.w_rl  # S'(p) = 4 (1-p)^3
    assert (rl.min, rl.p50, rl.max) == pytest.approx([4e-6, 0.5, 4 * 0.99**3], rel=1e-9)
    assert r.count == 3 and r.strategy == "pass@4" and r.form == "raw"
    assert r.share_sft == r.share_rl == 1.0  # relative weights 2.36, 0.64, ~0: all far from CE's 1


def test_share_counts_relative_weights_more_than_10_percent_from_1():
    # pass@2: w_SFT = 2 (1-p) / (2-p). Nineteen unsolved problems (w = 1) and one solved (w = 0):
    # mean 0.95, so the unsolved ones sit at 1/0.95 = 1.053 (within 10 %) and only the solved is reweighted
    r = summarise([0.0] * 19 + [1.0], parse_strategy("pass@2"))
    assert r.w_sft.mean == pytest.approx(0.95) and r.share_sft == pytest.approx(0.05)
    # nine at p = 0.1 (w = 18/19) and one at 0.5 (w = 2/3): ratios 1.031 and 0.725
    r = summarise([0.1] * 9 + [0.5], parse_strategy("pass@2"))
    assert r.w_sft.mean == pytest.approx((9 * 18 / 19 + 2 / 3) / 10) and r.share_sft == pytest.approx(0.1)
    # a common factor is not reweighting: equal weights of any size count as CE's
    assert reweighted_share(torch.full((5,), 7.0, dtype=torch.float64)) == 0.0
    assert reweighted_share(torch.tensor([1.0, 1.2], dtype=torch.float64)) == 0.0  # ratios 0.909, 1.091
    assert reweighted_share(torch.tensor([1.0, 1.25], dtype=torch.float64)) == 1.0  # ratios 0.889, 1.111
    assert reweighted_share(torch.zeros(3, dtype=torch.float64)) is None  # no relative weight exists
    ce = summarise([0.0, 0.3, 1.0], parse_strategy("ce"))
    assert ce.share_sft == ce.share_rl == 0.0 and ce.w_sft.min == ce.w_sft.max == 1.0


@pytest.mark.parametrize("text", ["pass@4", "pass@16", "pass@1024", "maj@8", "maj@8:k=3", "maj@16:k=16", "bon@4"])
def test_p_zero_and_one_give_finite_weights_at_their_limits(text):
    s = parse_strategy(text)
    r = summarise([0.0, 1.0], s)
    for d in (r.p, r.w_sft, r.w_rl):
        if d is not None:
            assert all(math.isfinite(v) for v in vars(d).values()), (text, d)
    if s.kind in ("pass", "bon"):
        assert r.w_sft.max == pytest.approx(1.0) and r.w_sft.min == pytest.approx(0.0, abs=1e-12)  # w(0) = 1, w(1) = 0
    else:
        assert r.w_sft.max == pytest.approx(s.sft_k)  # w_SFT(0) = k
    if s.kind == "pass":
        assert r.w_rl.max == pytest.approx(s.n)  # S'(0) = N
    assert (r.w_rl is None) == (s.kind == "bon")  # bon@N's RL weight ranks rewards, not p


def test_log_form_uses_w_sft_for_rl_and_empty_input_is_refused():
    r = summarise([0.05, 0.2, 0.7], parse_strategy("maj@8:k=3"), form="log")
    assert r.w_rl == r.w_sft and r.form == "log"
    with pytest.raises(ValueError, match="no p values"):
        summarise([], parse_strategy("pass@4"))


# ---------------------------------------------------------------- catcli weights --from


def call(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def eval_run(tmp_path):
    """An eval run of 4 problems x 4 samples with c = 0, 1, 2, 4 correct; ungraded, as another tool writes it."""
    run = tmp_path / "eval"
    run.mkdir()
    rows = [
        {"id": f"q{i}", "answer": "7", "completions": ["\\boxed{7}"] * c + ["\\boxed{8}"] * (4 - c)}
        for i, c in enumerate([0, 1, 2, 4])
    ]
    write_jsonl(run / "samples.jsonl", rows)
    return run


def test_from_an_eval_run_uses_each_problems_success_rate(capsys, tmp_path):
    run = eval_run(tmp_path)
    code, out, _ = call(capsys, "weights", "--from", str(run / "samples.jsonl"), "--strategy", "pass@4", "--json")
    assert code == 0
    r = json.loads(out)
    assert r["unit"] == "problem" and r["count"] == 4 and "c/n" in r["note"]
    assert (r["p"]["min"], r["p"]["p50"], r["p"]["max"], r["p"]["mean"]) == pytest.approx([0, 0.375, 1, 0.4375])
    w = [1.0, pass4_sft(0.25), 4 / 15, 0.0]  # p = 0, 1/4, 1/2, 1
    assert r["w_sft"]["mean"] == pytest.approx(sum(w) / 4)
    assert r["share_sft"] == 1.0  # relative weights 2.12, 1.31, 0.57, 0
    # S'(p) = 4 (1-p)^3 = 4, 1.6875, 0.5, 0; mean 1.547: only p = 1/4 stays within 10 % (1.09)
    assert r["w_rl"]["mean"] == pytest.approx((4 + 1.6875 + 0.5) / 4) and r["share_rl"] == pytest.approx(0.75)
    assert r["reweighted"].startswith("|w_i / mean(w) - 1| > 0.1")

    code, out, _ = call(capsys, "weights", "--from", str(run), "--strategy", "pass@4")  # the directory works too
    assert code == 0
    assert "reweights 100 % of these 4 problems by more than 10 % against CE in SFT (RL, raw: 75 %)" in out
    assert "|w_i / mean(w) - 1| > 0.1" in out and "10 %" in out and "w_RL (raw)" in out


def test_from_an_sft_train_log_uses_per_step_batch_means(capsys, tmp_path):
    run = tmp_path / "sft"
    run.mkdir()
    steps = [{"step": i + 1, "loss": 1.0, "weight_mean": 0.9, "p_mean": p} for i, p in enumerate([0.0, 0.01, 0.3])]
    write_jsonl(run / "train_log.jsonl", [*steps, {"train_runtime": 12.0}])  # the closing line has no p_mean
    code, out, _ = call(capsys, "weights", "--from", str(run), "--strategy", "pass@16", "--json")
    assert code == 0
    r = json.loads(out)
    assert r["unit"] == "step" and r["count"] == 3 and "batch-mean" in r["note"]
    assert (r["p"]["min"], r["p"]["max"]) == pytest.approx([0.0, 0.3])
    code, out, _ = call(capsys, "weights", "--from", str(run / "train_log.jsonl"), "--strategy", "pass@16")
    assert code == 0 and "not a per-problem p" in out and "of these 3 steps" in out


@pytest.mark.parametrize(
    "argv,code,message",
    [
        (["--from", "{tmp}/nope", "--strategy", "pass@4"], 3, "does not exist"),
        (["--from", "{tmp}/empty", "--strategy", "pass@4"], 3, "holds neither samples.jsonl"),
        (["--from", "{tmp}/eval", "--strategy", "pass@x"], 2, "invalid strategy"),
        (["--from", "{tmp}/eval", "--strategy", "pass@4", "--p", "0.5"], 2, "--from and --p"),
        (["--from", "{tmp}/eval", "--strategy", "pass@4", "--plot", "{tmp}/w.png"], 2, "does not take --from"),
        (["--from", "{tmp}/rl", "--strategy", "pass@4"], 3, "no p_mean"),
        (["--from", "{tmp}/badp", "--strategy", "pass@4"], 3, "line 2: p_mean must be a number in [0, 1]"),
        (["--from", "{tmp}/both", "--strategy", "pass@4"], 2, "name the file"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(capsys, tmp_path, argv, code, message):
    eval_run(tmp_path)
    (tmp_path / "empty").mkdir()
    for name, rows in {
        "rl": [{"step": 1, "reward_mean": 0.5}],
        "badp": [{"step": 1, "p_mean": 0.1}, {"step": 2, "p_mean": 1.5}],
        "both": [{"step": 1, "p_mean": 0.1}],
    }.items():
        (tmp_path / name).mkdir()
        write_jsonl(tmp_path / name / "train_log.jsonl", rows)
    write_jsonl(tmp_path / "both" / "samples.jsonl", [{"answer": "1", "completions": ["1"]}])
    got, out, err = call(capsys, "weights", *(a.format(tmp=tmp_path) for a in argv))
    assert got == code and out == "", err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "w.png").exists()


def test_constant_weight_is_found_when_every_weight_is_within_one_percent():
    from catcli.reweighting import constant_weight

    assert constant_weight([3.0, 2.99, 3.0], [3.0, 3.01, 3.005]) == pytest.approx((2.99 * 3.01) ** 0.5)
    assert constant_weight([3.0, 2.9], [3.0, 3.0]) is None  # one step's batch reached 3 % below
    assert constant_weight([1.0, 1.0], [1.0, 1.02]) is None  # within a batch the spread was 2 %
    assert constant_weight([0.0], [0.0]) is None  # all zero: no step at all, not a rescaled CE
    # brute force: constant iff the largest of all is within 1 % of the smallest of all
    import random

    rng = random.Random(0)
    for _ in range(200):
        lows = [rng.uniform(1.0, 1.02) for _ in range(4)]
        highs = [lo * rng.uniform(1.0, 1.01) for lo in lows]
        want = max(highs) <= 1.01 * min(lows)
        assert (constant_weight(lows, highs) is not None) == want


def test_sampled_estimates_are_laplace_rates_and_weights_follow_them():
    from fractions import Fraction

    import torch

    from catcli import objectives

    for m in (1, 4, 8):
        for c in range(m + 1):
            assert objectives.laplace_p(c, m) == float(Fraction(c + 1, m + 2))
    s = parse_strategy("maj@16:k=4")
    p = torch.tensor([objectives.laplace_p(c, 8) for c in range(9)], dtype=torch.float64)
    w = objectives.w_sft(s, torch.log(p))
    assert (w[:-1] > w[1:]).all()  # the harder the problem, the heavier its examples
    assert w[0] / w[-1] > 2  # a spread the sequence estimate on long targets never has (all at k)


def test_from_an_sft_run_with_sampled_estimates_uses_each_problems_estimate(capsys, tmp_path):
    import json

    from catcli.cli import main

    run = tmp_path / "sft"
    run.mkdir()
    (run / "train_log.jsonl").write_text(json.dumps({"step": 1, "p_mean": 0.5}) + "\n")
    estimates = {"step": 4, "m": 4, "correct": {"a": 0, "b": 4}, "p": {"a": 1 / 6, "b": 5 / 6}}
    (run / "p_estimates.json").write_text(json.dumps(estimates))
    assert main(["weights", "--from", str(run), "--strategy", "pass@4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["unit"] == "problem" and out["count"] == 2 and "m = 4 answers sampled" in out["note"]
    assert out["p"]["min"] == pytest.approx(1 / 6) and out["p"]["max"] == pytest.approx(5 / 6)
