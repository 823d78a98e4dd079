"""The paper's claim, small: one CE warm-up, then CE and CAT SFT branches at equal steps, each
evaluated for pass@k / maj@k, k = 1..32, on held-apart problems, and each CAT branch's paired
difference to CE with a bootstrap 95 % CI.

Settings live in recipes/cat_vs_ce.toml, sized for a budget of 40 minutes on 2 CPU cores.
Every stage is `catcli` itself in a subprocess writing OUT/<stage>: a finished stage is
skipped and an interrupted one resumed, so re-running after a kill continues where it was.
Prints one JSON object (each arm's metrics and final mean training-target p, each CAT arm
minus CE, wall time against the budget); writes OUT/curves.png.

    python bench/cat_vs_ce.py [--quick] [--out runs/cat_vs_ce] [--arms ce,pass@16,maj@16:k=4]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from catcli.rundir import read_jsonl, write_atomic

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "cat_vs_ce.toml"
BUDGET_S = 40 * 60
BRANCH_STEPS = 48  # after the recipe's 16 warm-up steps: 8 epochs of 128 problems in all
# --quick: the same stages on a handful of problems, to prove the pipeline in CI
QUICK_SFT = ["--limit", "8", "--batch-size", "4", "--max-steps", "1", "--save-steps", "1"]
QUICK_EVAL = ["--limit", "4", "--n", "4", "--k", "1,2,4", "--batch-size", "4"]


def catcli(*args: str, capture: bool = False) -> str:
    """Run a catcli command; its own output goes to stderr (stdout is this script's JSON) unless captured."""
    out = subprocess.PIPE if capture else sys.stderr
    r = subprocess.run([sys.executable, "-m", "catcli", *args], stdout=out, text=True)
    if r.returncode != 0:
        sys.exit(f"{Path(sys.argv[0]).stem}: `catcli {' '.join(args)}` failed with exit {r.returncode}")
    return r.stdout


def stage(out: Path, done: str, *args: str, wall: Path | None = None) -> None:
    """Run `catcli ARGS --out OUT` unless OUT/DONE exists; resume a started OUT.

    WALL, when given, accumulates the seconds each invocation that ran the stage spent on it, so
    a bench rerun that skips finished stages still reports what they cost. An invocation that
    fails or is stopped (Ctrl-C, or SIGTERM where the bench turns it into an exit) counts too: a
    stage that spans several sessions is then over-, not under-counted, by the unit of work each
    stop threw away; only a SIGKILL loses its seconds."""
    if (out / done).exists():
        print(f"== {out}: done, skipped", file=sys.stderr)
        return
    resume = ["--resume"] if out.is_dir() and any(out.iterdir()) else []
    print(f"== {out}: catcli {' '.join(args)}", file=sys.stderr)
    start = time.monotonic()
    try:
        catcli(*args, "--out", str(out), *resume)
    finally:
        if wall is not None:
            previous = float(wall.read_text()) if wall.exists() else 0.0
            write_atomic(wall, str(previous + time.monotonic() - start))


def exit_on_sigterm() -> None:
    """Turn SIGTERM (`kill`, a session's end) into an exit, so `stage` counts a stopped invocation's seconds."""
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))


def arm_dir(strategy: str) -> str:
    return strategy.replace("@", "_").replace(":", "_").replace("=", "_")


def last_p_mean(train_log: Path) -> float:
    return [r for r in read_jsonl(train_log) if "p_mean" in r][-1]["p_mean"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a handful of problems and one step per stage (CI smoke)")
    ap.add_argument("--out", type=Path, help="[default: runs/cat_vs_ce, or runs/cat_vs_ce_quick with --quick]")
    ap.add_argument("--arms", default="ce,pass@16,maj@16:k=4", help="strategies; the first is the baseline")
    args = ap.parse_args()
    arms = args.arms.split(",")
    out = args.out or Path("runs/cat_vs_ce_quick" if args.quick else "runs/cat_vs_ce")
    sft, ev = ["sft", "--recipe", str(RECIPE)], ["eval", "--recipe", str(RECIPE)]
    steps = ["--max-steps", str(BRANCH_STEPS)]
    if args.quick:
        sft, ev, steps = sft + QUICK_SFT, ev + QUICK_EVAL, []

    start = time.monotonic()
    warmup = out / "warmup"
    stage(warmup, "adapter/adapter_config.json", *sft)
    branches = [out / arm_dir(s) for s in arms]
    evals = [out / f"eval_{arm_dir(s)}" for s in arms]
    for s, branch, ev_dir in zip(arms, branches, evals):
        stage(branch, "adapter/adapter_config.json", *sft, *steps, "--strategy", s, "--init-adapter", str(warmup))
        stage(ev_dir, "eval.json", *ev, "--model", str(branch))
    catcli("plot", *map(str, evals), "-o", str(out / "curves.png"))
    base = evals[0]
    result = {
        "bench": "cat_vs_ce",
        "recipe": str(RECIPE.relative_to(RECIPE.parent.parent)),
        "branch_steps": None if args.quick else BRANCH_STEPS,
        "arms": {
            s: {
                "metrics": {m: e["mean"] for m, e in json.loads((d / "eval.json").read_text())["metrics"].items()},
                "train_p_mean_last": last_p_mean(branch / "train_log.jsonl"),
            }
            for s, branch, d in zip(arms, branches, evals)
        },
        "vs_" + arm_dir(arms[0]): {
            s: json.loads(catcli("compare", str(base), str(d), "--json", capture=True))
            for s, d in zip(arms[1:], evals[1:])
        },
        "curves": str(out / "curves.png"),
        "wall_s": time.monotonic() - start,  # of this invocation: stages found done cost nothing
        "budget_s": BUDGET_S,
        "quick": args.quick,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
