"""A baseline card: qwen2.5-coder-1.5b on MATH levels 1-3 (../shared/data/math/train.jsonl).

Two stages, each `catcli eval` in a subprocess writing OUT/<stage>, skipped when finished and
resumed when interrupted, so a stopped run loses nothing:
  speed_4bit, speed_16bit   the same 4 problems x 2 samples x 128 tokens in 4-bit and in 16-bit,
                            to pick the faster one on this machine
  card                      --limit problems (seeded) x 8 samples, k = 1,2,4,8, --max-new-tokens
                            (2,048, the shortest cap tried that cuts < 5 % of this model's answers:
                            1,024 cut 7.8 %, and at 512 a third boxed none), temperature 0.8, in the
                            faster mode
Prints one JSON object: pass@k and maj@k with CIs overall and per level, the boxed-answer rate,
the share of samples cut at the cap and their mean length, wall time and samples/s of each stage
(OUT/walls keeps it for reruns, a stopped invocation counted; see cat_vs_ce.stage). The train split
may be in the model's pretraining data: this is a card for the pipeline, not a contamination-free
score.

The card takes longer than a session on 2 CPU cores, so its run directory is kept in the
repository, one per length (bench/results/math_baseline_run_<max-new-tokens>, committed as it
grows), and the next machine resumes it.

    python bench/math_baseline.py [--quick] [--out DIR] [--limit 48]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import device
from cat_vs_ce import exit_on_sigterm, stage

from catcli.rundir import read_jsonl

MATH = Path(__file__).resolve().parents[2] / "shared" / "data" / "math" / "train.jsonl"
RESULTS = Path(__file__).resolve().parent / "results"
SPEED = ["--limit", "4", "--n", "2", "--k", "1,2", "--max-new-tokens", "128", "--batch-size", "4"]


def timed_stage(out: Path, *args: str) -> float:
    """Seconds the stage took, summed over the invocations that ran it (OUT/../walls/<stage>),
    so a rerun that skips finished stages still knows which mode was faster."""
    wall = out.parent / "walls" / out.name
    stage(out, "eval.json", *args, wall=wall)
    return float(wall.read_text())


def samples_summary(out: Path) -> dict:
    rows = read_jsonl(out / "samples.jsonl")
    extracted = [e for r in rows for e in r["extracted"]]
    return {"samples": len(extracted), "boxed_rate": sum(e is not None for e in extracted) / len(extracted)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the embedded model on arith, a few tokens (CI smoke)")
    ap.add_argument(
        "--out",
        type=Path,
        help="[default: bench/results/math_baseline_run_<max-new-tokens>; runs/math_baseline_quick with --quick]",
    )
    ap.add_argument("--limit", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=2048)
    args = ap.parse_args()
    exit_on_sigterm()
    if args.quick:
        model, data = "smollm2-135m", ["--data", "arith", "--levels", "1-3"]
        out = args.out or Path("runs/math_baseline_quick")
        card = ["--limit", "4", "--n", "4", "--k", "1,2,4", "--max-new-tokens", "16", "--batch-size", "4"]
        speed = ["--limit", "2", "--n", "2", "--k", "1,2", "--max-new-tokens", "8", "--batch-size", "2"]
    else:
        if not MATH.exists():
            sys.exit(f"math_baseline: needs {MATH}")
        model, data = "qwen2.5-coder-1.5b", ["--data", str(MATH), "--levels", "1-3"]
        out = args.out or RESULTS / f"math_baseline_run_{args.max_new_tokens}"
        card = ["--limit", str(args.limit), "--n", "8", "--k", "1,2,4,8", "--max-new-tokens", str(args.max_new_tokens)]
        card += ["--batch-size", "4"]  # 32 sequences a chunk: 12-27 min each, so a stop loses little
        speed = SPEED
    common = ["--model", model, *data, "--temperature", "0.8", "--seed", "0"]
    result: dict = {"bench": "math_baseline", "model": model, "machine": device.describe(), "quick": args.quick}
    walls = {}
    for name, flag in (("speed_4bit", "--load-in-4bit"), ("speed_16bit", "--no-load-in-4bit")):
        walls[name] = timed_stage(out / name, "eval", *common, *speed, flag)
        result[name] = {"wall_s": walls[name], **samples_summary(out / name)}
    fast = min(("speed_4bit", "speed_16bit"), key=walls.__getitem__)
    card_dir = out / "card"
    if (card_dir / "run.json").exists():  # a started card keeps the mode it started with
        four = json.loads((card_dir / "run.json").read_text())["config"]["load_in_4bit"]
        fast = "speed_4bit" if four else "speed_16bit"
    flag = "--load-in-4bit" if fast == "speed_4bit" else "--no-load-in-4bit"
    wall = timed_stage(card_dir, "eval", *common, *card, flag)
    summary = samples_summary(card_dir)
    metrics = json.loads((card_dir / "eval.json").read_text())
    result["card"] = {
        "mode": fast.removeprefix("speed_"),
        "wall_s": wall,
        "samples_per_s": summary["samples"] / wall,
        "boxed_rate": summary["boxed_rate"],
        "lengths": metrics.get("lengths"),
        "n_problems": metrics["n_problems"],
        "metrics": metrics["metrics"],
        "levels": metrics["levels"],
        "command": f"catcli eval {' '.join([*common, *card, flag])}",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
