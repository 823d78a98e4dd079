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
        ("grading.py", {"own_correct", "cross_wrong", "answers_per_s_warm_cache"}),
        ("sft_overhead.py", {"ce_step_s", "cat_step_s", "ratio_median"}),
        ("rl_overhead.py", {"grpo_step_s", "cat_step_s", "ratio_median"}),
        ("eval_throughput.py", {"catcli_samples_per_s", "naive_samples_per_s", "speedup"}),
    ],
)
def test_bench_quick(script, keys):
    r = subprocess.run(
        [sys.executable, f"bench/{script}", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert keys <= set(result) and result["quick"] is True
    assert all(result[k] > 0 for k in keys)
