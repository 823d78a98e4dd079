"""Every benchmark runs in --quick mode and prints one JSON object, so the scripts cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
@pytest.mark.parametrize(
    "script,keys",
    [
        ("memory.py", {"ratio_4bit_16bit", "ratio_4bit_fp32", "ratio_4bit_16bit_whole_process"}),
        ("grading.py", {"own_correct", "cross_wrong", "answers_per_s_warm_cache"}),
        ("sft_overhead.py", {"ce_step_s", "cat_step_s", "ratio_median"}),
        ("rl_overhead.py", {"grpo_step_s", "cat_step_s", "ratio_median"}),
        ("eval_throughput.py", {"catcli_samples_per_s", "naive_samples_per_s", "speedup"}),
    ],
)
def test_bench_quick(script, keys):
    result = _run_quick(script)
    assert keys <= set(result)
    assert all(result[k] > 0 for k in keys)


@pytest.mark.slow
def test_cat_vs_ce_quick_runs_every_stage_and_compares_against_ce(tmp_path):
    result = _run_quick("cat_vs_ce.py", "--out", str(tmp_path), "--arms", "ce,pass@16")
    assert set(result["arms"]) == {"ce", "pass@16"}
    assert set(result["arms"]["ce"]["metrics"]) == {f"{m}@{k}" for m in ("pass", "maj") for k in (1, 2, 4)}
    diff = result["vs_ce"]["pass@16"]
    assert diff["n_shared"] == 4 and set(diff["diff"]) == set(result["arms"]["ce"]["metrics"])
    assert (tmp_path / "curves.png").stat().st_size > 0
    # a second run finds every stage done and trains nothing
    again = _run_quick("cat_vs_ce.py", "--out", str(tmp_path), "--arms", "ce,pass@16")
    assert again["arms"] == result["arms"] and again["wall_s"] < result["wall_s"] / 2


def _run_quick(script: str, *args: str) -> dict:
    r = subprocess.run(
        [sys.executable, f"bench/{script}", "--quick", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert result["quick"] is True
    return result
