"""What runs beside training: held-apart evaluation along the way (--eval-*) and sampled p
estimates (sft --p-estimate success), through the real CLI on the embedded model."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from conftest import run_cli, start_cli, wait_for

pytestmark = pytest.mark.slow

EVAL = [
    "--eval-data",
    "arith",
    "--eval-limit",
    "8",
    "--eval-n",
    "4",
    "--eval-k",
    "1,2,4",
    "--eval-max-new-tokens",
    "16",
]
SAME_AS_EVAL = ["--data", "arith", "--limit", "8", "--n", "4", "--k", "1,2,4", "--max-new-tokens", "16"]
SFT = ["sft", "--model", "smollm2-135m", "--data", "arith", "--levels", "1", "--limit", "16", "--batch-size", "4",
       "--grad-accum", "1", "--lr", "3e-4", "--no-load-in-4bit"]  # fmt: skip


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "run"
    r = run_cli(*SFT, "--max-steps", "4", *EVAL, "--eval-every", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rl") / "run"
    r = run_cli("rl", "--model", "smollm2-135m", "--no-load-in-4bit", "--data", "arith", "--levels", "1",
                "--strategy", "pass@4", "--num-generations", "4", "--prompts-per-step", "2", "--max-steps", "2",
                "--max-new-tokens", "16", *EVAL, "--eval-every", "1", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.parametrize("which, steps", [("sft_run", [2, 4]), ("rl_run", [1, 2])])
def test_training_evaluates_along_the_way_and_its_last_row_is_what_eval_gives(request, tmp_path, which, steps):
    run = request.getfixturevalue(which)
    rows = _rows(run / "eval_log.jsonl")
    assert [row["step"] for row in rows] == steps
    assert all(row["seconds"] > 0 and row["samples"] == 32 and "lengths" in row for row in rows)
    assert set(rows[0]["metrics"]) == {f"{m}@{k}" for m in ("pass", "maj") for k in (1, 2, 4)}
    record = json.loads((run / "run.json").read_text())
    assert record["eval_seconds"] > 0 and record["train_seconds"] > 0  # evaluation timed apart from training
    # an evaluation's log line leaves each step's own line there and whole (TRL's GRPO log would take
    # its reward; transformers' on_log would drop it)
    train_log = _rows(run / "train_log.jsonl")
    assert [row["step"] for row in train_log] == list(range(1, steps[-1] + 1))
    assert all(row["loss"] is not None and row.get("reward_mean", 0) is not None for row in train_log)
    r = run_cli("eval", "--model", str(run), *SAME_AS_EVAL, "--out", str(tmp_path / "eval"), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["metrics"] == rows[-1]["metrics"]
    final = {row["id"]: row["completions"] for row in _rows(run / "eval" / f"step-{steps[-1]}.jsonl")}
    assert final == {row["id"]: row["completions"] for row in _rows(tmp_path / "eval" / "samples.jsonl")}


def test_plot_and_compare_read_evaluations_along_training(sft_run, rl_run, tmp_path):
    png = tmp_path / "curve.png"
    r = run_cli("plot", str(sft_run), str(rl_run), "-o", str(png))
    assert r.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same eval settings and seed: the same problems, paired at the step both evaluated
    r = run_cli("compare", str(sft_run), str(rl_run), "--k", "1,4", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    steps = json.loads(r.stdout)["steps"]
    assert list(steps) == ["2"] and steps["2"]["n_shared"] == 8 and set(steps["2"]["diff"]) == {
        "pass@1", "maj@1", "pass@4", "maj@4"
    }  # fmt: skip
    r = run_cli("plot", str(sft_run), str(tmp_path), "-o", str(png))
    assert r.returncode != 0 and "catcli: error:" in r.stderr


def test_a_killed_run_resumes_to_the_estimates_weights_and_rows_of_an_uninterrupted_one(tmp_path):
    """--p-estimate success refreshes every 2 steps and the run evaluates every 2: killed after its
    checkpoint at step 2, the resumed run refreshes and evaluates at steps 4 and 6 exactly as the
    uninterrupted one does, and keeps its step-2 row without evaluating it again."""
    args = [*SFT, "--limit", "8", "--max-steps", "6", "--save-steps", "2", "--strategy", "pass@4",
            "--p-estimate", "success", "--p-samples", "4", "--p-every", "2", "--p-max-new-tokens", "16",
            *EVAL, "--eval-every", "2"]  # fmt: skip
    whole = tmp_path / "whole"
    r = run_cli(*args, "--out", str(whole))
    assert r.returncode == 0, r.stderr[-3000:]

    out = tmp_path / "killed"
    proc = start_cli(*args, "--out", str(out))
    wait_for(lambda: (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists(), proc)
    time.sleep(1.0)  # trainer_state.json is written in place: let the write end before the kill
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter").exists()
    r = run_cli(*args, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]

    assert json.loads((out / "p_estimates.json").read_text()) == json.loads((whole / "p_estimates.json").read_text())
    assert json.loads((out / "p_estimates.json").read_text())["step"] == 4  # refreshed after the resume
    saved = json.loads((out / "checkpoints" / "checkpoint-6" / "p_estimates.json").read_text())
    assert saved == json.loads((out / "p_estimates.json").read_text())  # what it trained with, whole
    weights = [
        {k: row[k] for k in ("step", "weight_mean", "weight_min", "weight_max")}
        for row in _rows(whole / "train_log.jsonl")
    ]
    assert weights == [{k: row[k] for k in weights[0]} for row in _rows(out / "train_log.jsonl")]
    assert [row["step"] for row in _rows(out / "eval_log.jsonl")] == [2, 4, 6]  # none twice
    for a, b in zip(_rows(whole / "eval_log.jsonl"), _rows(out / "eval_log.jsonl")):
        assert a["metrics"] == b["metrics"]


def test_sampled_estimates_spread_the_weights_that_the_sequence_estimate_leaves_constant(tmp_path, boxing_adapter):
    """On worked solutions the target's probability is ~0, so maj@16:k=4 weighs every sequence k = 4:
    CE with a 4x step, and the run says so. From answers sampled by the warmed-up policy, problems it
    gets right more often weigh less, within every batch."""
    args = [*SFT, "--init-adapter", str(boxing_adapter), "--target", "solution", "--strategy", "maj@16:k=4",
            "--max-steps", "2", "--batch-size", "8"]  # fmt: skip
    r = run_cli(*args, "--p-estimate", "sequence", "--out", str(tmp_path / "sequence"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "CAT weights were constant (w = 4 at every step): this run trained as CE with a 4x step" in r.stderr
    assert json.loads((tmp_path / "sequence" / "run.json").read_text())["constant_weight"] == pytest.approx(4, rel=1e-2)

    out = tmp_path / "success"
    r = run_cli(*args, "--p-estimate", "success", "--p-samples", "8", "--p-max-new-tokens", "16", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "CAT weights were constant" not in r.stderr
    log = _rows(out / "train_log.jsonl")
    assert log[0]["p_refresh_samples"] == 8 * 16 and log[0]["p_refresh_seconds"] > 0
    assert any(row["weight_p90"] >= 2 * row["weight_p10"] for row in log)
    assert json.loads((out / "run.json").read_text())["constant_weight"] is None
