"""The GPU check, in parts that each fit one GPU lease (`make gpu-check [PART=N]`).

Run on a CUDA machine after `make gpu-wheels` has put its missing packages in .whl/gpu (the
Makefile installs them beside the machine's own PyTorch, then runs this with HF_HUB_OFFLINE=1).
Each part runs its GPU tests (tests/test_gpu.py, on random-init models built from configs: no
download) and benchmarks under one time limit, and writes one JSON of figures naming the device:
bench/results/gpu_check_part<N>.json, and --out too when given.

  part 1 (<= 6 min): sft pass@16; rl pass@4 with prompts of different lengths; the rollout
         log-probs of a LoRA model after for_training; eval's sampler against plain generate;
         the 4-bit / 16-bit training-memory pair
  part 2 (<= 8 min): the rest of tests/test_gpu.py (other strategies, --init-adapter and
         --save-merged, --hybrid, vLLM where installed)
  part 3 (<= 8 min): step-time and sampling benchmarks on a Qwen2.5-0.5B-shaped model

    python bench/gpu_check.py --part 1 [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_TESTS = "tests/test_gpu.py"
FIRST = [
    "test_sft_on_gpu[pass@16]",
    "test_rl_on_gpu_with_prompts_of_different_lengths[pass@4]",
    "test_rollout_log_probs_on_gpu_match_each_rollout_scored_alone",
    "test_eval_sampler_on_gpu_equals_plain_generate",
]
PARTS = {
    1: {"tests": FIRST, "benches": [("memory", ["--steps", "1", "--batch-size", "2"])], "limit_s": 330},
    2: {"tests": None, "benches": [], "limit_s": 450},  # None: every GPU test that part 1 does not run
    3: {"tests": [], "benches": [("sft_overhead", []), ("rl_overhead", []), ("eval_throughput", [])], "limit_s": 450},
}


def device() -> dict:
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU here; the GPU check runs on a CUDA machine (README, On a GPU)")
    return {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
    }


def run_tests(names: list[str] | None, deadline: float) -> list[dict]:
    """pytest on the GPU tests (all but part 1's when `names` is None); one row per test."""
    if names is None:
        select = [GPU_TESTS, *[a for n in FIRST for a in ("--deselect", f"{GPU_TESTS}::{n}")]]
    else:
        select = [f"{GPU_TESTS}::{n}" for n in names]
    report = Path(tempfile.mkdtemp()) / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", f"--junitxml={report}", *select]
    try:
        subprocess.run(cmd, cwd=ROOT, timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass  # what finished is in the report; the rest is reported as not run
    rows = []
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    outcome += f": {(node.get('message') or '')[:300]}"
            rows.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0))})
    ran = {r["test"] for r in rows}
    rows += [{"test": n, "outcome": "not run: out of time"} for n in names or () if n not in ran]
    return rows


def run_bench(name: str, args: list[str], deadline: float) -> dict:
    model = subprocess.run(
        [sys.executable, "bench/random_model.py", "--shape", "qwen2-0.5b"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    extra = [] if name == "memory" else ["--model", model]
    try:
        r = subprocess.run(
            [sys.executable, f"bench/{name}.py", *extra, *args], cwd=ROOT, capture_output=True, text=True,
            timeout=max(1, deadline - time.monotonic()),
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": "out of time"}
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", type=int, choices=sorted(PARTS), default=1)
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    part = PARTS[args.part]
    start = time.monotonic()
    deadline = start + part["limit_s"]
    result = {"check": f"gpu part {args.part}", **device()}
    if part["tests"] != []:
        result["tests"] = run_tests(part["tests"], deadline)
    result["benches"] = {name: run_bench(name, bench_args, deadline) for name, bench_args in part["benches"]}
    result["wall_s"] = time.monotonic() - start
    tests_ok = all(r["outcome"] == "passed" or r["outcome"].startswith("skipped") for r in result.get("tests", []))
    result["green"] = tests_ok and not any("error" in b for b in result["benches"].values())
    text = json.dumps(result, indent=2) + "\n"
    out = ROOT / "bench" / "results" / f"gpu_check_part{args.part}.json"
    out.write_text(text)
    if args.out:
        args.out.write_text(text)
    print(text)
    sys.exit(0 if result["green"] else 1)


if __name__ == "__main__":
    main()
