"""Does CAT work? The claim measured where it should show, over seeds (issues 15, 25).

sft (recipes/claim_sft.toml): one CE warm-up, then CE, CAT pass@16 and CAT maj@16:k=4 branches for
SFT_STEPS each, one per seed, in the over-confident regime (answer-only arith level 3, 64
problems, 25 epochs); each evaluated on 256 held-apart problems x 32 samples with its seed. CE's
held-apart pass@k against training length comes from seed-0 CE runs of fewer steps (--ce-steps).
rl (recipes/claim_rl.toml): a 48-step answer-only CE warm-up on arith levels 1-3, then GRPO, GRPO
with the all-wrong penalty, CAT pass@8 (log form; sequence p and success p), CAT maj@8, PKPO and
Pass@k at k = 4, RL_STEPS each, one per seed, equal prompts and rollouts (M = 8); each evaluated on
256 held-apart problems x 16 samples. Its pilot is the warm-up and GRPO's first seed, checked
against the regime the paper targets (PILOT): held-apart pass@1 in 0.1-0.5 and pass@16 below 0.9
after the warm-up, and GRPO raising pass@1 while pass@16 does not rise.
solution (recipes/claim_sft_solution.toml): the over-confident regime on worked solutions, whose
sequence p is negligible: CE, CAT maj@16:k=4 with sequence p and with success p (sampled answers).

Each arm is paired with its baseline (CE; GRPO, and GRPO with the penalty for CAT maj@8) over the
problems all its runs share, pooled over seeds with a CI that redraws seeds as well as problems
(catcli.curves.compare_seeds); per-seed columns beside it. The weight statistics (train_log,
run.json's constant_weight, `catcli weights --from`) say how far each CAT arm moved from CE.

Every stage is `catcli` in a subprocess writing OUT/<part>/<stage>: finished stages are
skipped, an interrupted one resumed, so a stopped run loses nothing; OUT/walls/ keeps each
stage's time across invocations. Each evaluated branch is also kept in ARCHIVE (committed:
bench/results/claim_runs): its samples, eval.json, the run's train log and run.json, and both
stages' times; a branch's adapter is not kept, a warm-up's is. A machine that lost OUT reads
finished branches from there and trains only the missing ones, from the kept warm-up, so seeds
run in different sessions pool into one summary.
Prints one JSON object and writes it to OUT/claim.json, keeping the parts of an earlier
OUT/claim.json that this invocation did not run; plots in OUT.

    python bench/claim.py [--quick] [--out runs/claim] [--parts sft,rl,solution] [--seeds 0,1,2]

Run it beside other work with OMP_NUM_THREADS=1: two 2-thread torch processes on 2 cores
slow each other far more than 2x. Every stage runs in float32 (UNSLOTH_CPU_BF16=0), as the kept
seeds did: on a CPU with bf16 compute Unsloth would pick bfloat16, and seeds would pool across
precisions.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import shutil
from pathlib import Path

import device
from cat_vs_ce import catcli, exit_on_sigterm, stage

from catcli.config import load_recipe
from catcli.curves import compare_seeds, plot_curves, save_png, summarise_seeds
from catcli.data import load_selection
from catcli.rundir import read_jsonl, write_atomic

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SFT_RECIPE, RL_RECIPE = RECIPES / "claim_sft.toml", RECIPES / "claim_rl.toml"
SOLUTION_RECIPE = RECIPES / "claim_sft_solution.toml"
SOLUTION_STEPS = 100
SOLUTION_ARMS = {
    "ce": ["--strategy", "ce"],
    "maj@16:k=4_sequence": ["--strategy", "maj@16:k=4", "--p-estimate", "sequence"],
    "maj@16:k=4_success": ["--strategy", "maj@16:k=4", "--p-estimate", "success"],
}
SFT_STEPS = 200
SFT_ARMS = {a: ["--strategy", a] for a in ("ce", "pass@16", "maj@16:k=4")}
RL_STEPS = 40
# M = 8 rollouts each. grpo_penalty is the authors' majority baseline (vanilla GRPO with maj@N's
# all-wrong -0.5), so CAT maj@8 against it isolates the weight; the peers run at k = 4 < M,
# where their advantages have signal (at k = M PKPO zeroed 98 % of them).
RL_ARMS = {
    "grpo": ["--strategy", "grpo"],
    "grpo_penalty": ["--strategy", "grpo", "--all-wrong-penalty", "0.5"],
    "cat_pass@8_log_seq": ["--strategy", "pass@8", "--form", "log", "--p-estimate", "sequence"],
    "cat_pass@8_log_success": ["--strategy", "pass@8", "--form", "log", "--p-estimate", "success"],
    "cat_maj@8": ["--strategy", "maj@8"],
    "pkpo_pass@4": ["--method", "pkpo", "--strategy", "pass@4"],
    "passk_pass@4": ["--method", "passk", "--strategy", "pass@4"],
}
# arms also paired with a baseline besides GRPO: the one they differ from in exactly one thing
RL_ALSO = {"grpo_penalty": ["cat_maj@8"]}
# the regime the RL part must be in, read off the pilot (cat-spec §9.1)
PILOT = {"warmup_pass@1": (0.1, 0.5), "warmup_pass@16_below": 0.9}
BUDGET_S = 2 * 3600
# --quick: every stage on a handful of problems, one step each, to prove the pipeline in CI
QUICK = {
    "sft": [
        "--batch-size",
        "4",
        "--max-steps",
        "1",
        "--save-steps",
        "1",
        "--p-samples",
        "2",
        "--p-max-new-tokens",
        "8",
    ],
    "rl": ["--prompts-per-step", "2", "--max-steps", "1", "--save-steps", "1"],
    "eval": ["--n", "8", "--k", "1,2,8", "--batch-size", "4"],
}
QUICK_LIMIT = {"sft": 8, "rl": 4, "eval": 4}


ARCHIVE = Path(__file__).resolve().parent / "results" / "claim_runs"
# what a branch keeps: enough to pool it again (samples, eval.json) and to report its training;
# a warm-up also keeps its adapter (7 MB), so branches trained in later sessions start from it
KEPT = {"eval": ("eval.json", "samples.jsonl"), "train": ("train_log.jsonl", "run.json")}
ADAPTER = ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/catcli_base.json")


class Bench:
    def __init__(self, out: Path, quick: bool, archive: Path | None):
        self.out, self.quick, self.archive = out, quick, archive

    def kept(self, out: Path) -> Path | None:
        """The archived copy of stage OUT, if an earlier run kept it."""
        if self.archive is None:
            return None
        path = self.archive / out.relative_to(self.out)
        return path if path.is_dir() else None

    def keep(self, run: Path, done: Path, adapter: bool = False) -> None:
        """Copy a finished RUN and its eval DONE into the archive (with ADAPTER, the run's adapter
        too). The eval lands last and marks the pair whole: a run kept without it is a half left
        by a stopped keep, and the RUN now kept replaces it, so an eval never pairs with another
        training. A RUN that is itself the archived copy stays as it is."""
        if self.archive is None:
            return
        staged = []
        for out in (run, done):
            if out.is_relative_to(self.archive):
                continue
            final = self.archive / out.relative_to(self.out)
            tmp = final.with_name(f".{final.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            evaluated = (out / "eval.json").exists()
            for name in KEPT["eval"] if evaluated else KEPT["train"] + (ADAPTER if adapter else ()):
                data = (out / name).read_bytes()
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                if name == "samples.jsonl":  # the completions' text: ~10x smaller compressed
                    (tmp / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
                else:
                    (tmp / name).write_bytes(data)
            wall = self.wall_file(out)
            if wall.exists():
                shutil.copyfile(wall, tmp / "wall_s")
            staged.append((tmp, final))
        for tmp, final in staged:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)

    def stage(self, out: Path, command: str, recipe: Path, *args: str) -> Path:
        """`catcli COMMAND --recipe RECIPE ARGS --out OUT` unless finished; resumes a started OUT."""
        done = "eval.json" if command == "eval" else "adapter/adapter_config.json"
        if (out / done).exists():
            return out
        quick = QUICK[command] if self.quick else []
        data = ["--data", str(self.frozen(recipe, command))]
        stage(out, done, command, "--recipe", str(recipe), *data, *quick, *args, wall=self.wall_file(out))
        return out

    def wall_file(self, out: Path) -> Path:
        """One file per stage, so the SFT and RL parts can run as two processes side by side."""
        return self.out / "walls" / str(out.relative_to(self.out)).replace("/", "__")

    def walls(self) -> dict[str, float]:
        kept = self.archive.glob("*/*/wall_s") if self.archive else []
        walls = {str(f.parent.relative_to(self.archive)): float(f.read_text()) for f in kept}
        here = (self.out / "walls").glob("[!.]*")
        walls |= {f.name.replace("__", "/"): float(f.read_text()) for f in here}
        return dict(sorted(walls.items()))

    def frozen(self, recipe: Path, command: str) -> Path:
        """The recipe's problems for COMMAND, chosen once with seed 0 and written as a JSONL file.

        arith's problems and a --limit subset both follow --seed, so without this every seed
        would train and be evaluated on other problems, and nothing would be paired.
        """
        path = self.out / "data" / f"{recipe.stem}_{command}.jsonl"
        if not path.exists():
            table = load_recipe(recipe)[command]
            limit = QUICK_LIMIT[command] if self.quick else table.get("limit")
            split = table.get("split", "train")
            problems = load_selection(table["data"], split, levels=table.get("levels"), limit=limit, seed=0)
            write_atomic(path, "".join(json.dumps(p.to_dict()) + "\n" for p in problems))
        return path


def slug(arm: str) -> str:
    return arm.replace("@", "_").replace(":", "_").replace("=", "_")


def records(eval_dir: Path) -> list[dict]:
    """An eval's samples, from its run directory or its archived copy."""
    if (eval_dir / "samples.jsonl").exists():
        return read_jsonl(eval_dir / "samples.jsonl")
    return [json.loads(line) for line in gzip.decompress((eval_dir / "samples.jsonl.gz").read_bytes()).splitlines()]


def metrics(eval_dir: Path) -> dict:
    return {m: e["mean"] for m, e in json.loads((eval_dir / "eval.json").read_text())["metrics"].items()}


def means(recs: list[dict], ks: list[int]) -> dict:
    """One run's metrics over the problems in `recs`."""
    return {m: e["mean"] for m, e in summarise_seeds([recs], ks)["metrics"].items()}


def ks_of(eval_dir: Path) -> list[int]:
    return [int(k) for k in json.loads((eval_dir / "eval.json").read_text())["config"]["k"]]


def train_stats(run: Path, keys: tuple[str, ...]) -> dict:
    """Each key's mean over the run's logged steps, and its last value."""
    rows = [r for r in read_jsonl(run / "train_log.jsonl") if all(r.get(k) is not None for k in keys)]
    return {k: {"mean": sum(r[k] for r in rows) / len(rows), "last": rows[-1][k]} for k in keys}


def weights_from(run: Path, strategy: str) -> dict:
    """`catcli weights --from RUN` without its source path, which names this machine's OUT or the archive."""
    out = json.loads(catcli("weights", "--from", str(run), "--strategy", strategy, "--json", capture=True))
    return {k: v for k, v in out.items() if k != "source"}


def branch(bench: Bench, run_out: Path, command: str, recipe: Path, init, flags: list[str], seed: list[str]):
    """A run trained with `init()` (the warm-up's flags), FLAGS and SEED, then evaluated with SEED:
    from the archive when it holds both, else from OUT, training what is missing, then archived."""
    eval_out = run_out.with_name(f"eval_{run_out.name}")
    if (run := bench.kept(run_out)) and (done := bench.kept(eval_out)):
        return run, done
    run = bench.stage(run_out, command, recipe, *init(), *flags, *seed)
    done = bench.stage(eval_out, "eval", recipe, "--model", str(run), *seed)
    bench.keep(run, done)
    return run, done


def branches(bench: Bench, out: Path, command: str, recipe: Path, arms: dict, seeds: list[int], init, *extra: str):
    """Each arm trained once per seed with `extra` flags, then evaluated with the same seed."""
    runs: dict[str, list[Path]] = {a: [] for a in arms}
    evals: dict[str, list[Path]] = {a: [] for a in arms}
    for seed in seeds:
        for arm, flags in arms.items():
            s = ["--seed", str(seed)]
            run, done = branch(bench, out / f"{slug(arm)}_s{seed}", command, recipe, init, [*extra, *flags], s)
            runs[arm].append(run)
            evals[arm].append(done)
    return runs, evals


def warm_up(bench: Bench, out: Path, recipe: Path):
    """The warm-up's eval, and a function giving the branches' `--init-adapter` flags: the kept
    warm-up's adapter, else one trained only when a branch or the warm-up's eval needs it."""
    train = functools.cache(lambda: bench.kept(out / "warmup") or bench.stage(out / "warmup", "sft", recipe))
    warm_eval = bench.kept(out / "eval_warmup")
    if warm_eval is None:
        warm_eval = bench.stage(out / "eval_warmup", "eval", recipe, "--model", str(train()))
        bench.keep(train(), warm_eval, adapter=True)
    return warm_eval, lambda: ["--init-adapter", str(train())]


def pooled_part(
    warm_eval: Path, evals: dict[str, list[Path]], baseline: str, also: dict[str, list[str]] | None = None
) -> tuple[dict, dict[str, list[dict]]]:
    """The warm-up and each arm pooled over its seeds, and paired with `baseline` (and the arms in
    `also` with theirs) with seed-and-problem bootstrap CIs; also each run's own metrics. All on the
    problems every eval of the part scored, so the warm-up, the pilot and each seed read off one set."""
    ks = ks_of(evals[baseline][0])
    warm, loaded = records(warm_eval), {a: [records(d) for d in ds] for a, ds in evals.items()}
    ids = set.intersection(
        {str(r["id"]) for r in warm}, *({str(r["id"]) for r in rs} for v in loaded.values() for rs in v)
    )
    runs = {a: [[r for r in rs if str(r["id"]) in ids] for rs in v] for a, v in loaded.items()}
    result = {
        "warmup": means([r for r in warm if str(r["id"]) in ids], ks),
        "n_shared_problems": len(ids),
        "pooled": {a: summarise_seeds(r, ks) for a, r in runs.items()},
        "vs_" + slug(baseline): {a: compare_seeds(runs[baseline], r, ks) for a, r in runs.items() if a != baseline},
    }
    for other, arms in (also or {}).items():
        if other in runs:
            result["vs_" + slug(other)] = {a: compare_seeds(runs[other], runs[a], ks) for a in arms if a in runs}
    return result, {a: [means(recs, ks) for recs in v] for a, v in runs.items()}


def pilot(warmup: dict, grpo: dict) -> dict:
    """The pilot's numbers and whether they show the regime PILOT asks for."""
    lo, hi = PILOT["warmup_pass@1"]
    top = max((m for m in warmup if m.startswith("pass@")), key=lambda m: int(m.split("@")[1]))
    checks = {
        f"warm-up pass@1 in [{lo}, {hi}]": lo <= warmup["pass@1"] <= hi,
        f"warm-up {top} below {PILOT['warmup_pass@16_below']}": warmup[top] < PILOT["warmup_pass@16_below"],
        "GRPO raises pass@1": grpo["pass@1"] > warmup["pass@1"],
        f"GRPO's {top} does not rise": grpo[top] <= warmup[top],
    }
    return {"warmup": warmup, "grpo_seed0": grpo, "checks": checks, "in_regime": all(checks.values())}


def per_seed(seeds: list[int], runs: dict, run_metrics: dict, stats: tuple[str, ...]) -> dict:
    return {
        a: [{"seed": s, "metrics": m, **train_stats(r, stats)} for s, r, m in zip(seeds, runs[a], run_metrics[a])]
        for a in runs
    }


def sft_part(bench: Bench, seeds: list[int], arms: dict[str, list[str]], ce_steps: list[int]) -> dict:
    out = bench.out / "sft"
    warm_eval, init = warm_up(bench, out, SFT_RECIPE)
    steps = [] if bench.quick else ["--max-steps", str(SFT_STEPS)]
    runs, evals = branches(bench, out, "sft", SFT_RECIPE, arms, seeds, init, *steps)
    over_steps = [(0, warm_eval)]
    for n in () if bench.quick else ce_steps:
        over_steps.append(
            (n, branch(bench, out / f"ce_{n}steps", "sft", SFT_RECIPE, init, ["--max-steps", str(n)], [])[1])
        )
    over_steps.append((0 if bench.quick else SFT_STEPS, evals["ce"][0]))
    result, run_metrics = pooled_part(warm_eval, evals, "ce")
    result["per_seed"] = per_seed(seeds, runs, run_metrics, ("p_mean", "weight_mean", "weight_min"))
    result["ce_over_steps"] = [{"branch_steps": n, **metrics(e)} for n, e in over_steps]
    result["weights_seed0"] = {a: weights_from(runs[a][0], a) for a in arms if a != "ce"}
    plot_curves(
        [(f"{a} ({len(seeds)} seeds)", s) for a, s in result["pooled"].items()],
        bench.out / "sft_curves.png",
        "SFT, arith L3 answer-only, held-apart",
    )
    plot_over_steps(result["ce_over_steps"], bench.out / "ce_over_steps.png")
    return {"recipe": SFT_RECIPE.name, "seeds": seeds, "branch_steps": None if bench.quick else SFT_STEPS, **result}


def rl_part(bench: Bench, seeds: list[int], arms: dict[str, list[str]]) -> dict:
    out = bench.out / "rl"
    warm_eval, init = warm_up(bench, out, RL_RECIPE)
    runs, evals = branches(bench, out, "rl", RL_RECIPE, arms, seeds, init)
    result, run_metrics = pooled_part(warm_eval, evals, "grpo", RL_ALSO)
    stats = ("reward_mean", "frac_reward_zero_std", "adv_abs_mean", "adv_frac_zero", "weight_mean", "weight_max")
    result["per_seed"] = per_seed(seeds, runs, run_metrics, stats)
    if seeds[0] == 0 and "grpo" in evals:
        result["pilot"] = pilot(result["warmup"], result["per_seed"]["grpo"][0]["metrics"])
    plot_curves(
        [(f"{a} ({len(seeds)} seeds)", s) for a, s in result["pooled"].items()],
        bench.out / "rl_curves.png",
        "RL, arith L1-3, held-apart",
    )
    return {"recipe": RL_RECIPE.name, "seeds": seeds, "steps": None if bench.quick else RL_STEPS, **result}


def solution_part(bench: Bench, seeds: list[int], arms: dict[str, list[str]]) -> dict:
    out = bench.out / "solution"
    warm_eval, init = warm_up(bench, out, SOLUTION_RECIPE)
    steps = [] if bench.quick else ["--max-steps", str(SOLUTION_STEPS)]
    runs, evals = branches(bench, out, "sft", SOLUTION_RECIPE, arms, seeds, init, *steps)
    result, run_metrics = pooled_part(warm_eval, evals, "ce")
    stats = ("p_mean", "weight_mean", "weight_min", "weight_max")
    result["per_seed"] = per_seed(seeds, runs, run_metrics, stats)
    result["constant_weight"] = {
        a: [json.loads((r / "run.json").read_text()).get("constant_weight") for r in rs] for a, rs in runs.items()
    }
    plot_curves(
        [(f"{a} ({len(seeds)} seeds)", s) for a, s in result["pooled"].items()],
        bench.out / "solution_curves.png",
        "SFT on worked solutions, arith L1-3, held-apart",
    )
    return {"recipe": SOLUTION_RECIPE.name, "seeds": seeds, "branch_steps": None if bench.quick else SOLUTION_STEPS,
            **result}  # fmt: skip


def plot_over_steps(rows: list[dict], path: Path) -> None:
    """CE's held-apart pass@1 and pass@k (largest k) against its branch steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max((m for m in rows[0] if m.startswith("pass@")), key=lambda m: int(m.split("@")[1]))
    fig, ax = plt.subplots(figsize=(5, 4))
    for m in ("pass@1", top):
        ax.plot([r["branch_steps"] for r in rows], [100 * r[m] for r in rows], marker="o", label=m)
    ax.set_xlabel("CE steps after the warm-up")
    ax.set_ylabel("held-apart (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_png(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a handful of problems and one step per stage (CI smoke)")
    ap.add_argument("--out", type=Path, help="[default: runs/claim, or runs/claim_quick with --quick]")
    ap.add_argument("--parts", default="sft,rl,solution")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rl-seeds", help="the RL part's seeds [default: --seeds]")
    ap.add_argument(
        "--ce-steps", default="50,100", help="shorter CE runs: held-apart pass@k against training length ('' none)"
    )
    ap.add_argument("--arms", help="run only these arms (comma-separated) besides the baselines ce and grpo")
    ap.add_argument(
        "--archive", type=Path, help=f"finished branches, kept across machines [default: {ARCHIVE}; none with --quick]"
    )
    args = ap.parse_args()
    exit_on_sigterm()
    os.environ["UNSLOTH_CPU_BF16"] = "0"  # the stages' subprocesses inherit it
    seeds = [int(s) for s in args.seeds.split(",")]
    out = args.out or Path("runs/claim_quick" if args.quick else "runs/claim")
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(out, args.quick, args.archive or (None if args.quick else ARCHIVE))
    parts = args.parts.split(",")
    earlier = json.loads((out / "claim.json").read_text()) if (out / "claim.json").exists() else {}
    result: dict = {k: earlier[k] for k in ("sft", "rl", "solution") if k in earlier and k not in parts}
    result.update(bench="claim", machine=device.describe(), quick=args.quick)
    keep = set(args.arms.split(",")) | {"ce", "grpo"} if args.arms else None
    if "sft" in parts:
        ce_steps = [int(n) for n in args.ce_steps.split(",") if n]
        arms = {a: f for a, f in SFT_ARMS.items() if keep is None or a in keep}
        result["sft"] = sft_part(bench, seeds, arms, ce_steps)
    if "rl" in parts:
        rl_seeds = [int(s) for s in args.rl_seeds.split(",")] if args.rl_seeds else seeds
        result["rl"] = rl_part(bench, rl_seeds, {a: f for a, f in RL_ARMS.items() if keep is None or a in keep})
    if "solution" in parts:
        arms = {a: f for a, f in SOLUTION_ARMS.items() if keep is None or a in keep}
        result["solution"] = solution_part(bench, seeds, arms)
    result["stage_walls_s"] = bench.walls()
    result["wall_s"] = sum(result["stage_walls_s"].values())  # every stage's own time, summed over invocations
    result["budget_s"] = BUDGET_S
    text = json.dumps(result)
    write_atomic(out / "claim.json", text.encode())
    print(text)


if __name__ == "__main__":
    main()
