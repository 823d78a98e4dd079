"""`catcli eval` end to end on the embedded model, and kill / --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli, start_cli, wait_for

EVAL = ["eval", "--model", "smollm2-135m", "--data", "arith", "--max-new-tokens", "24"]


@pytest.mark.slow
def test_eval_writes_all_outputs(tmp_path):
    out = tmp_path / "run"
    r = run_cli(*EVAL, "--limit", "8", "--n", "8", "--k", "1,2,4,8", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)  # stdout is exactly one JSON object
    assert set(result["metrics"]) == {f"{m}@{k}" for m in ("pass", "maj") for k in (1, 2, 4, 8)}
    assert result["data"]["n_problems"] == 8 and len(result["data"]["fingerprint"]) == 64
    assert result["model_dtype"] == "float32"  # conftest turns Unsloth's CPU bf16 off
    for name in ("eval.json", "run.json", "samples.jsonl", "curves.csv", "curves.png"):
        assert (out / name).stat().st_size > 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(len(r["completions"]) == 8 for r in rows)
    assert json.loads((out / "eval.json").read_text())["metrics"] == result["metrics"]
    # score recomputes the same numbers with no model
    s = run_cli("score", str(out / "samples.jsonl"), "--k", "1,2,4,8", "--json")
    assert json.loads(s.stdout)["metrics"] == result["metrics"]


@pytest.mark.slow
def test_killed_eval_resumes_to_the_uninterrupted_result(tmp_path):
    # 24 one-problem chunks: the kill lands after 2, so 22 are left and the run cannot finish
    # first even when this process is starved (with 6, 4 were left); 8-token completions keep
    # the uninterrupted reference run cheap
    args = ["eval", "--model", "smollm2-135m", "--data", "arith", "--max-new-tokens", "8"]
    args += ["--limit", "24", "--n", "2", "--k", "1,2", "--batch-size", "1", "--seed", "7"]
    ref = run_cli(*args, "--out", str(tmp_path / "ref"), "--json")
    assert ref.returncode == 0, ref.stderr[-2000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "catcli", *args, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    samples = out / "samples.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = samples.read_text().count("\n")
    assert 2 <= partial < 24

    again = run_cli(*args, "--out", str(out), "--json")
    assert again.returncode == 2 and "not empty" in again.stderr  # no silent clobbering
    resumed = run_cli(*args, "--out", str(out), "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ids = [json.loads(line)["id"] for line in samples.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 24
    assert json.loads(resumed.stdout)["metrics"] == json.loads(ref.stdout)["metrics"]
    ref_rows = {
        json.loads(x)["id"]: json.loads(x)["completions"]
        for x in (tmp_path / "ref" / "samples.jsonl").read_text().splitlines()
    }
    got_rows = {json.loads(x)["id"]: json.loads(x)["completions"] for x in samples.read_text().splitlines()}
    assert got_rows == ref_rows


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "run"
    r = run_cli(*EVAL, "--limit", "2", "--n", "2", "--k", "1,2", "--batch-size", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    # stderr is a pipe here, as in a script's log: one plain progress line per finished chunk
    assert "sampling: 1/2 problems done" in r.stderr and "sampling: 2/2 problems done" in r.stderr
    assert "ETA 0.0 min" in r.stderr
    r = run_cli(*EVAL, "--limit", "2", "--n", "2", "--k", "1,2", "--seed", "5", "--out", str(out), "--resume")
    assert r.returncode == 2 and "different seed" in r.stderr


@pytest.mark.slow
def test_sigint_keeps_finished_problems_and_exits_130(tmp_path):
    out = tmp_path / "run"
    # 500 one-problem chunks: once the first line is written, minutes of work are left, so the
    # SIGINT always lands mid-run (with 6 a busy machine once finished them all first); it stops
    # the run, so the size costs nothing
    proc = start_cli(*EVAL, "--limit", "500", "--n", "2", "--k", "1,2", "--batch-size", "1", "--out", str(out))
    samples = out / "samples.jsonl"
    wait_for(lambda: samples.exists() and samples.read_text().count("\n") >= 1, proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "rerun with --resume" in err and "Traceback" not in err
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert 1 <= len(rows) < 500 and not (out / "eval.json").exists()


@pytest.mark.gpu
def test_vllm_backend_matches_the_samples_contract(tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "run"
    r = run_cli(*EVAL, "--limit", "4", "--n", "4", "--k", "1,4", "--backend", "vllm", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(len(row["completions"]) == 4 for row in rows)


@pytest.mark.slow
def test_greedy_eval_reports_what_the_cap_cut_and_keeps_third_party_notices_quiet(tmp_path):
    args = ["--limit", "4", "--temperature", "0", "--n", "1", "--max-new-tokens", "4", "--json"]
    r = run_cli(*EVAL[:-2], *args, "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert set(result["metrics"]) == {"pass@1", "maj@1"}  # greedy: k defaults to 1
    assert result["lengths"]["all"] == {"samples": 4, "truncated": 1.0, "mean_tokens": 4.0}
    rows = [json.loads(line) for line in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    assert all(row["tokens"] == [4] and row["stop"] == ["length"] for row in rows)
    assert json.loads((tmp_path / "a" / "run.json").read_text())["decoding"] == "greedy"
    # one line of catcli's own: no banners, loading bars or library notices
    assert r.stderr.strip().splitlines() == [
        "catcli: 100 % of the 4 samples were cut at --max-new-tokens 4 before they ended, so their answers are "
        "mostly missing: a larger --max-new-tokens lets them finish"
    ]
    again = run_cli(*EVAL[:-2], *args, "--seed", "3", "--out", str(tmp_path / "b"), env={"CATCLI_DEBUG": "1"})
    assert again.returncode == 0, again.stderr[-2000:]
    other = [json.loads(line) for line in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    same_ids = {row["id"]: row["completions"] for row in rows}
    assert all(same_ids[row["id"]] == row["completions"] for row in other if row["id"] in same_ids)  # greedy
    assert "Unsloth" in again.stderr  # CATCLI_DEBUG=1 lets the libraries speak
