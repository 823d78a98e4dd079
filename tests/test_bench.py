"""Every benchmark runs in --quick mode and prints one JSON object, so the scripts cannot rot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MATH_TRAIN, ROOT


@pytest.mark.slow
@pytest.mark.parametrize(
    "script,keys",
    [
        pytest.param(
            "grading.py",
            {"own_correct", "cross_wrong", "answers_per_s_warm_cache"},
            marks=pytest.mark.skipif(
                not MATH_TRAIN.exists(), reason="bench/grading.py reads ../shared/data/math/train.jsonl"
            ),
        ),
        ("sft_overhead.py", {"ce_step_s", "cat_step_s", "ratio_median"}),
        ("rl_overhead.py", {"grpo_step_s", "cat_step_s", "ratio_median"}),
        ("eval_throughput.py", {"speedup_vs_generate", "catcli_over_floor", "load_s"}),
    ],
)
def test_bench_quick(script, keys):
    # eval_throughput in bfloat16, the dtype a CPU with bf16 compute loads: its step costs once
    # built a float32 cache for a bf16 model there
    result = _run_quick(script, env={"UNSLOTH_CPU_BF16": "1"} if script == "eval_throughput.py" else None)
    assert keys <= set(result)
    assert all(min(v.values()) > 0 if isinstance(v := result[k], dict) else v > 0 for k in keys)
    if script == "eval_throughput.py":  # each step cost, with catcli's attention and transformers' own
        assert set(result["step_s"]) == {"1x8", "1x40", "2x8", "2x40"}
        for arms in result["step_s"].values():
            assert set(arms) == {"catcli", "transformers"} and min(arms.values()) > 0


@pytest.mark.slow
def test_memory_quick_measures_both_arms_of_the_target_pair():
    result = _run_quick("memory.py")
    shape = result["shapes"]["135m"]
    arms = shape["arms"]
    assert set(arms) == {"4bit_bf16", "16bit_bf16"}
    assert all(a["dtype"] == "torch.bfloat16" for a in arms.values())
    # 4-bit weights hold less than 16-bit ones once loaded (SmolLM2-135M: ~150 MiB less)
    assert arms["4bit_bf16"]["rss_after_load_mib"] < arms["16bit_bf16"]["rss_after_load_mib"] - 50
    # both arms load the model before the step: the step's peak is above what the imports hold
    assert all(a["peak_rss_step_mib"] > a["rss_before_load_mib"] > 0 for a in arms.values())
    assert (
        shape["ratio_4bit_16bit"]
        == arms["4bit_bf16"]["peak_rss_step_above_imports_mib"]
        / (arms["16bit_bf16"]["peak_rss_step_above_imports_mib"])
    )


@pytest.mark.slow
def test_cat_vs_ce_quick_runs_every_stage_and_compares_against_ce(tmp_path):
    result = _run_quick("cat_vs_ce.py", "--out", str(tmp_path), "--arms", "ce,pass@16")
    assert set(result["arms"]) == {"ce", "pass@16"}
    assert set(result["arms"]["ce"]["metrics"]) == {f"{m}@{k}" for m in ("pass", "maj") for k in (1, 2, 4)}
    diff = result["vs_ce"]["pass@16"]
    assert diff["n_shared"] == 4 and set(diff["diff"]) == set(result["arms"]["ce"]["metrics"])
    assert (tmp_path / "curves.png").stat().st_size > 0
    # a second run finds every stage done and trains nothing: no stage's result is rewritten (its
    # wall time against the first run's would race the machine's load, not test the skipping)
    done = [*tmp_path.glob("*/adapter/adapter_model.safetensors"), *tmp_path.glob("eval_*/eval.json")]
    stamps = {p: p.stat().st_mtime_ns for p in done}
    assert len(stamps) == 5  # warm-up, two branches, two evals
    again = _run_quick("cat_vs_ce.py", "--out", str(tmp_path), "--arms", "ce,pass@16")
    assert again["arms"] == result["arms"]
    assert {p: p.stat().st_mtime_ns for p in done} == stamps


@pytest.mark.slow
def test_claim_quick_pools_seeds_against_each_baseline_and_resumes(tmp_path):
    # two seeds where pooling over seeds is checked (RL), one for the other parts: every stage
    # is a process that loads a model, and CI runs them one after another
    arms = "pass@16,pkpo_pass@4,maj@16:k=4_success"
    archive = tmp_path / "archive"
    args = ("--seeds", "0", "--rl-seeds", "0,1", "--arms", arms, "--archive", str(archive))
    result = _run_quick("claim.py", "--out", str(tmp_path), *args)
    sft, rl, solution = result["sft"], result["rl"], result["solution"]
    assert set(sft["pooled"]) == {"ce", "pass@16"} and set(rl["pooled"]) == {"grpo", "pkpo_pass@4"}
    assert set(solution["pooled"]) == {"ce", "maj@16:k=4_success"}
    for part, base, arm, seeds in (
        (sft, "ce", "pass@16", [0]),
        (rl, "grpo", "pkpo_pass@4", [0, 1]),
        (solution, "ce", "maj@16:k=4_success", [0]),
    ):
        assert part["pooled"][arm]["n_runs"] == len(seeds)
        assert [r["seed"] for r in part["per_seed"][arm]] == seeds
        diff = part[f"vs_{base}"][arm]
        assert diff["n_shared"] == part["n_shared_problems"] == 4 and diff["n_runs"] == len(seeds)
        assert "pass@8" in diff["diff"]
        # pooled = the mean over seeds of each seed's own metric (same problems in every seed)
        seed_means = [r["metrics"]["pass@8"] for r in part["per_seed"][arm]]
        assert part["pooled"][arm]["metrics"]["pass@8"]["mean"] == pytest.approx(sum(seed_means) / len(seeds))
        assert diff["diff"]["pass@8"]["ci"][0] <= diff["diff"]["pass@8"]["mean"] <= diff["diff"]["pass@8"]["ci"][1]
    assert sft["weights_seed0"]["pass@16"]["unit"] == "step"
    assert [r["branch_steps"] for r in sft["ce_over_steps"]] == [0, 0]  # the warm-up, then CE at its end
    assert set(rl["pilot"]["checks"]) and rl["pilot"]["in_regime"] == all(rl["pilot"]["checks"].values())
    assert len(solution["constant_weight"]["maj@16:k=4_success"]) == 1
    pngs = ("sft_curves.png", "rl_curves.png", "ce_over_steps.png", "solution_curves.png")
    assert all((tmp_path / f).stat().st_size > 0 for f in pngs)
    assert json.loads((tmp_path / "claim.json").read_text()) == result
    md = subprocess.run(
        [sys.executable, "bench/claim_tables.py", str(tmp_path / "claim.json")],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "| pkpo_pass@4 | grpo |" in md and "| maj@16:k=4_success | ce |" in md and md.count("| warm-up |") == 3
    # 3 warm-ups, 3 warm-up evals, (sft + solution) x 2 arms x 1 seed + rl x 2 arms x 2 seeds, each train + eval
    assert len(result["stage_walls_s"]) == 22
    # a second run finds every stage done: nothing is retrained or re-evaluated; a run of one part
    # keeps the others' results in claim.json
    done = [*tmp_path.glob("*/*/adapter/adapter_model.safetensors"), *tmp_path.glob("*/eval_*/eval.json")]
    stamps = {p: p.stat().st_mtime_ns for p in done}
    assert len(stamps) == 22
    again = _run_quick("claim.py", "--out", str(tmp_path), *args, "--parts", "rl")
    assert {p: p.stat().st_mtime_ns for p in done} == stamps
    assert (
        again["stage_walls_s"] == result["stage_walls_s"]
        and again["sft"] == sft
        and again["rl"]["pooled"] == rl["pooled"]
    )
    # a machine that lost OUT: every branch and warm-up eval comes back from the archive (samples
    # compressed, the warm-ups' adapters only), nothing is trained, and the summary is the same
    assert len(list(archive.glob("*/eval_*/samples.jsonl.gz"))) == 11
    assert sorted(str(p.relative_to(archive)) for p in archive.rglob("*.safetensors")) == [
        f"{part}/warmup/adapter/adapter_model.safetensors" for part in ("rl", "sft", "solution")
    ]
    fresh = tmp_path / "fresh"
    restored = _run_quick("claim.py", "--out", str(fresh), *args)
    assert not [p for p in fresh.iterdir() if p.is_dir()]  # no stage ran, no problems were frozen
    assert all(restored[k] == result[k] for k in ("sft", "rl", "solution", "stage_walls_s"))
    # a branch the archive lacks is trained there, from the kept warm-up, then kept
    for stage in ("pkpo_pass_4_s1", "eval_pkpo_pass_4_s1"):
        shutil.rmtree(archive / "rl" / stage)
    _run_quick("claim.py", "--out", str(fresh), *args, "--parts", "rl")
    assert sorted(p.name for p in (fresh / "rl").iterdir()) == ["eval_pkpo_pass_4_s1", "pkpo_pass_4_s1"]
    run = json.loads((fresh / "rl" / "pkpo_pass_4_s1" / "run.json").read_text())
    assert run["config"]["init_adapter"] == str(archive / "rl" / "warmup")
    assert (archive / "rl" / "eval_pkpo_pass_4_s1" / "samples.jsonl.gz").exists()


def _run_quick(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    r = subprocess.run(
        [sys.executable, f"bench/{script}", "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, **(env or {})},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert result["quick"] is True
    return result


@pytest.mark.slow
def test_math_baseline_quick_runs_its_stages_and_a_rerun_skips_them(tmp_path):
    result = _run_quick("math_baseline.py", "--out", str(tmp_path))
    assert result["speed_4bit"]["wall_s"] > 0 and result["speed_16bit"]["wall_s"] > 0
    card = result["card"]
    assert card["mode"] in ("4bit", "16bit") and card["n_problems"] == 4 and 0 <= card["boxed_rate"] <= 1
    assert {"pass@4", "maj@4"} <= set(card["metrics"]) and card["levels"]
    again = _run_quick("math_baseline.py", "--out", str(tmp_path))
    assert again["card"]["metrics"] == card["metrics"]
    # every stage skipped: the recorded walls come back unchanged and still decide the mode
    assert again["card"]["wall_s"] == card["wall_s"] and again["card"]["mode"] == card["mode"]
    assert again["speed_4bit"]["wall_s"] == result["speed_4bit"]["wall_s"]


def _stage(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def test_claim_keeps_a_branch_whole_and_replaces_a_half_left_by_a_stopped_keep(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from claim import Bench, records

    out, archive = tmp_path / "out", tmp_path / "archive"
    bench = Bench(out, quick=False, archive=archive)
    # a keep stopped between its two renames left the first training's run without its eval
    _stage(archive / "rl" / "arm_s0", {"train_log.jsonl": "first\n", "run.json": "{}"})
    run = _stage(out / "rl" / "arm_s0", {"train_log.jsonl": "second\n", "run.json": "{}", "adapter/x": ""})
    done = _stage(out / "rl" / "eval_arm_s0", {"eval.json": "{}", "samples.jsonl": '{"a": 1}\n'})
    assert bench.kept(run) and not bench.kept(done)
    bench.keep(run, done)
    assert (archive / "rl" / "arm_s0" / "train_log.jsonl").read_text() == "second\n"
    assert not (archive / "rl" / "arm_s0" / "adapter").exists()  # a branch keeps no adapter
    assert records(bench.kept(done)) == [{"a": 1}]
    assert sorted(p.name for p in (archive / "rl").iterdir()) == ["arm_s0", "eval_arm_s0"]  # no tmp left
    # a warm-up read from the archive is evaluated here: its eval is kept, the archived run untouched
    warm = _stage(archive / "rl" / "warmup", {"run.json": "kept", "adapter/adapter_config.json": "{}"})
    warm_eval = _stage(out / "rl" / "eval_warmup", {"eval.json": "{}", "samples.jsonl": ""})
    bench.keep(warm, warm_eval, adapter=True)
    assert (warm / "run.json").read_text() == "kept" and bench.kept(warm_eval)


def test_a_stage_stopped_by_sigterm_still_counts_its_seconds(tmp_path):
    # the math_baseline card spans sessions: each stopped invocation's time must reach its wall
    # file, or the card's samples/s would count only the invocation that finished it
    script = f"""
import sys, time
from pathlib import Path
sys.path.insert(0, {str(ROOT / "bench")!r})
import cat_vs_ce
cat_vs_ce.catcli = lambda *args: (print("started", flush=True), time.sleep(60))
cat_vs_ce.exit_on_sigterm()
cat_vs_ce.stage(Path({str(tmp_path / "out")!r}), "done", "eval", wall=Path({str(tmp_path / "wall")!r}))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    proc.terminate()
    assert proc.wait(timeout=30) == 128 + 15
    assert float((tmp_path / "wall").read_text()) > 0
