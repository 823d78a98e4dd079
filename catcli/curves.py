"""Curves: metrics over a set of graded problems, their files, plots and tables.

Stage: estimators -> curves. Reads graded sample records, writes eval.json pieces,
curves.csv and curves.png (each metric kind against k on a log2 axis, 95 % CI bands),
and renders rich tables for eval, score and compare.

Metric names are `kind@k`. Records with a `reward` add bon@k and bon_correct@k. Every kind is a
rate shown in % except bon@k, an expected reward shown in the reward's own units.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

import numpy as np

from catcli.errors import DataError, UsageError
from catcli.estimators import Estimate, EstimatorError, estimate, hierarchical_difference, problem_scores
from catcli.rundir import write_atomic

KINDS = ("pass", "maj", "bon", "bon_correct")  # display order


def per_problem_scores(records: list[dict], ks: list[int]) -> dict[str, dict[str, float]]:
    """{problem id: {metric: score}} for every record; k > n is a usage error naming the problem.

    bon metrics need a reward on every record or on none: a mean over the problems that happen
    to have one would not be comparable.
    """
    with_reward = [r for r in records if r.get("reward") is not None]
    if with_reward and len(with_reward) < len(records):
        missing = next(r for r in records if r.get("reward") is None)
        raise DataError(
            f"{len(with_reward)} of {len(records)} problems have a reward, but problem {missing['id']} has none: "
            "bon@k needs a reward on every problem"
        )
    out = {}
    for r in records:
        n = len(r["completions"])
        if ks[-1] > n:
            raise UsageError(
                f"k = {ks[-1]} is larger than the {n} samples of problem {r['id']}: lower --k or raise --n"
            )
        try:
            out[str(r["id"])] = problem_scores(r["correct"], r["keys"], ks, r.get("reward"))
        except EstimatorError as e:
            raise UsageError(str(e)) from None
    return out


TRUNCATION_WARN = 0.05  # above this share of samples cut at the cap, eval says so


def length_stats(records: list[dict]) -> dict | None:
    """{"samples", "truncated", "mean_tokens"}: how many samples, the share cut at --max-new-tokens
    (stop "length"), their mean length in tokens; None when no record says (another tool's file)."""
    rows = [r for r in records if r.get("stop") is not None and r.get("tokens") is not None]
    if not rows:
        return None
    stops = [s for r in rows for s in r["stop"]]
    tokens = [t for r in rows for t in r["tokens"]]
    return {
        "samples": len(stops),
        "truncated": stops.count("length") / len(stops),
        "mean_tokens": sum(tokens) / len(tokens),
    }


def summarise(records: list[dict], ks: list[int], seed: int = 0) -> dict:
    """{"n_problems", "metrics": {name: estimate}, "levels": {level: {name: estimate}}, "lengths":
    {"all" | level: length_stats}} as JSON-ready dicts ("lengths" only when the records have them)."""
    scores = per_problem_scores(records, ks)
    names = list(next(iter(scores.values())))
    metrics = {m: estimate([s[m] for s in scores.values()], seed).to_dict() for m in names}
    by_level: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("level") is not None:
            by_level[str(r["level"])].append(r)
    levels = {
        lvl: {m: estimate([scores[str(r["id"])][m] for r in rows], seed).to_dict() for m in names}
        for lvl, rows in sorted(by_level.items())
    }
    summary = {"n_problems": len(records), "metrics": metrics, "levels": levels}
    lengths = {"all": length_stats(records), **{lvl: length_stats(rows) for lvl, rows in sorted(by_level.items())}}
    if lengths["all"] is not None:
        summary["lengths"] = {k: v for k, v in lengths.items() if v is not None}
    return summary


def truncation_warning(summary: dict, max_new_tokens: int) -> str | None:
    """One line when more than 5 % of the samples were cut at the token cap, else None."""
    stats = summary.get("lengths", {}).get("all")
    if not stats or stats["truncated"] <= TRUNCATION_WARN:
        return None
    return (
        f"{100 * stats['truncated']:.0f} % of the {stats['samples']} samples were cut at --max-new-tokens "
        f"{max_new_tokens} before they ended, so their answers are mostly missing: a larger --max-new-tokens "
        "lets them finish"
    )


def lengths_line(summary: dict) -> str | None:
    """`12.5 % of 32 samples cut at the token cap; mean length 436 tokens`, or None without lengths."""
    stats = summary.get("lengths", {}).get("all")
    if not stats:
        return None
    return (
        f"{100 * stats['truncated']:.1f} % of {stats['samples']} samples cut at the token cap; "
        f"mean length {stats['mean_tokens']:.0f} tokens"
    )


def _split(name: str) -> tuple[str, int]:
    kind, k = name.rsplit("@", 1)
    return kind, int(k)


def _kinds(names) -> list[str]:
    return sorted({_split(m)[0] for m in names}, key=KINDS.index)


def _is_rate(kind: str) -> bool:
    return kind != "bon"


def curves_csv(summary: dict) -> str:
    """One row per level and metric; then, when the samples say, each level's truncated share and
    mean length (metrics `truncated` and `mean_tokens`, no k, n_problems holding the sample count)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["level", "metric", "k", "mean", "se", "ci_lo", "ci_hi", "n_problems"])
    groups = [("all", summary["metrics"])] + list(summary["levels"].items())
    for level, metrics in groups:
        for name, e in metrics.items():
            kind, k = _split(name)
            ci = e["ci"] or (None, None)
            w.writerow([level, kind, k, e["mean"], e["se"], ci[0], ci[1], e["n_problems"]])
    for level, stats in summary.get("lengths", {}).items():
        for name in ("truncated", "mean_tokens"):
            w.writerow([level, name, "", stats[name], "", "", "", stats["samples"]])
    return buf.getvalue()


def plot_curves(runs: list[tuple[str, dict]], path: Path, title: str = "") -> None:
    """One panel per metric kind against k (log2 axis) with 95 % CI bands; one line per run. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = _kinds(m for _, s in runs for m in s["metrics"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for label, summary in runs:
            pts = sorted((_split(m)[1], e) for m, e in summary["metrics"].items() if _split(m)[0] == kind)
            if not pts:
                continue
            ks, scale = [k for k, _ in pts], 100 if _is_rate(kind) else 1
            ax.plot(ks, [scale * e["mean"] for _, e in pts], marker="o", label=label)
            if all(e["ci"] for _, e in pts):  # one problem has no CI
                lo, hi = [scale * e["ci"][0] for _, e in pts], [scale * e["ci"][1] for _, e in pts]
                ax.fill_between(ks, lo, hi, alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (samples)")
        ax.set_ylabel(f"{kind}@k (%)" if _is_rate(kind) else f"{kind}@k (expected best reward)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    save_png(fig, path)


def load_eval_results(runs: list[Path]) -> list[tuple[str, dict]]:
    """(label, eval.json) of each eval run directory or eval.json file, for plot_curves."""
    import json

    loaded = []
    for run in runs:
        path = run / "eval.json" if run.is_dir() else run
        try:
            loaded.append((str(run), json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read eval results {path}: {getattr(e, 'strerror', None) or e}") from None
        if "metrics" not in loaded[-1][1]:
            raise DataError(f"{path} is not an eval.json written by catcli eval (no metrics)")
    return loaded


def load_eval_log(run: Path) -> list[dict]:
    """The rows of a training run's OUT/eval_log.jsonl (`sft`/`rl` with --eval-data), by step."""
    from catcli.rundir import read_jsonl

    path = run / "eval_log.jsonl" if run.is_dir() else run
    if not path.exists():
        raise DataError(f"{run} holds no eval_log.jsonl: train with --eval-data to evaluate along the way")
    return sorted(read_jsonl(path), key=lambda row: row["step"])


def is_training_run(path: Path) -> bool:
    """A run directory whose evaluations are along its training (eval_log.jsonl), not one eval."""
    return path.is_dir() and (path / "eval_log.jsonl").exists() and not (path / "eval.json").exists()


def plot_over_steps(runs: list[tuple[str, list[dict]]], path: Path, title: str = "") -> None:
    """Each metric kind against the optimizer step, one line per run and k, 95 % CI bands; atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {m for _, rows in runs for row in rows for m in row["metrics"]}
    kinds = _kinds(names)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for label, rows in runs:
            for k in sorted({_split(m)[1] for m in names if _split(m)[0] == kind}):
                pts = [(row["step"], row["metrics"][f"{kind}@{k}"]) for row in rows if f"{kind}@{k}" in row["metrics"]]
                scale = 100 if _is_rate(kind) else 1
                steps = [s for s, _ in pts]
                ax.plot(steps, [scale * e["mean"] for _, e in pts], marker="o", label=f"{label} {kind}@{k}")
                if all(e["ci"] for _, e in pts):
                    lo, hi = [scale * e["ci"][0] for _, e in pts], [scale * e["ci"][1] for _, e in pts]
                    ax.fill_between(steps, lo, hi, alpha=0.15)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"{kind}@k (%)" if _is_rate(kind) else f"{kind}@k")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    save_png(fig, path)


def compare_over_steps(a: Path, b: Path, ks: list[int] | None, seed: int = 0) -> dict:
    """`compare` of two training runs' evaluations at each step both made (OUT/eval/step-N.jsonl):
    equal eval settings and seed give the same problems and pair them."""
    from catcli.samples import load_samples

    steps = sorted({r["step"] for r in load_eval_log(a)} & {r["step"] for r in load_eval_log(b)})
    if not steps:
        raise UsageError(f"{a} and {b} share no evaluated step: evaluate both at the same --eval-every")
    out = {}
    for step in steps:
        ra, rb = (load_samples(run / "eval" / f"step-{step}.jsonl") for run in (a, b))
        out[str(step)] = compare(ra, rb, ks or common_ks(ra, rb), seed)
    return {"steps": out}


def plot_weights(result: dict, path: Path, form: str) -> None:
    """w_SFT and w_RL against p (log axes) from reweighting.weight_points; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [pt for pt in result["points"] if pt["p"] > 0]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([pt["p"] for pt in pts], [pt["sft_weight"] for pt in pts], marker="o", label="w_SFT")
    ax.plot([pt["p"] for pt in pts], [pt["rl_weight"] for pt in pts], marker="s", label=f"w_RL ({form})")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("p")
    ax.set_ylabel("weight")
    ax.set_title(f"CAT weights: {result['strategy']}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_png(fig, path)


def save_png(fig, path: Path) -> None:
    """Lay out, render and close a matplotlib figure; the PNG is written atomically."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def console(stderr: bool = False):
    """A rich console on stdout (tables a user asked for) or stderr (progress, beside --json)."""
    import sys

    from rich.console import Console

    return Console(file=sys.stderr) if stderr else Console()


def metrics_table(summary: dict, title: str = ""):
    """Rows k, columns metric: mean (% for rates) with 95 % CI."""
    from rich.table import Table

    caption = lengths_line(summary)
    table = Table(title=title or f"{summary['n_problems']} problems", caption=caption)
    kinds = _kinds(summary["metrics"])
    ks = sorted({_split(m)[1] for m in summary["metrics"]})
    table.add_column("k", justify="right")
    for kind in kinds:
        table.add_column(f"{kind}@k %" if _is_rate(kind) else f"{kind}@k", justify="right")
    for k in ks:
        row = [str(k)]
        for kind in kinds:
            e = summary["metrics"].get(f"{kind}@{k}")
            row.append(f"{_fmt(kind, e['mean'])} {_ci(kind, e['ci'])}" if e else "")
        table.add_row(*row)
    return table


def _ci(kind: str, ci: list | None, sign: str = "") -> str:
    """[lo, hi], or a note where one problem leaves no spread to estimate it from."""
    return f"[{_fmt(kind, ci[0], sign)}, {_fmt(kind, ci[1], sign)}]" if ci else "(no CI: one problem)"


def _fmt(kind: str, value: float, sign: str = "") -> str:
    """A rate in % with one decimal; a reward with 4 significant digits (its scale is the user's)."""
    return f"{100 * value:{sign}.1f}" if _is_rate(kind) else f"{value:{sign}.4g}"


def seed_mean_scores(runs: list[list[dict]], ks: list[int]) -> dict[str, dict[str, float]]:
    """{problem id: {metric: score averaged over the runs}} over the problems and metrics every run has.

    The runs are one arm's seeds on the same problems: averaging per problem first keeps the
    problem the unit a bootstrap resamples, which the seeds share.
    """
    per_run = [per_problem_scores(r, ks) for r in runs]
    shared = sorted(set.intersection(*(set(s) for s in per_run)))
    if not shared:
        raise UsageError("the runs share no problem ids: compare runs on the same problems")
    names = [m for m in per_run[0][shared[0]] if all(m in s[shared[0]] for s in per_run)]
    return {i: {m: sum(s[i][m] for s in per_run) / len(per_run) for m in names} for i in shared}


def summarise_seeds(runs: list[list[dict]], ks: list[int], seed: int = 0) -> dict:
    """`summarise` of one arm over its seeds: per problem each metric averaged over the runs, then
    estimated over problems (no per-level split)."""
    scores = seed_mean_scores(runs, ks)
    names = list(next(iter(scores.values())))
    metrics = {m: estimate([s[m] for s in scores.values()], seed).to_dict() for m in names}
    return {"n_problems": len(scores), "n_runs": len(runs), "metrics": metrics}


def common_ks(*runs: list[dict]) -> list[int]:
    """1, 2, 4, ... up to the fewest samples any problem of the runs has: compare's default k."""
    import math

    n = min(len(r["completions"]) for run in runs for r in run)
    return [2**i for i in range(int(math.log2(n)) + 1)]


def compare(a: list[dict], b: list[dict], ks: list[int], seed: int = 0) -> dict:
    """Paired difference B - A per metric over the problems both runs scored.

    Only metrics both runs have: bon metrics when both carry rewards. With each run's truncated
    share and mean length over the shared problems ("lengths"), when both samples files say.
    """
    result = compare_seeds([a], [b], ks, seed)
    shared = {str(r["id"]) for r in a} & {str(r["id"]) for r in b}
    la, lb = (length_stats([r for r in run if str(r["id"]) in shared]) for run in (a, b))
    if la and lb:
        result["lengths"] = {"a": la, "b": lb}
    return result


def compare_seeds(a: list[list[dict]], b: list[list[dict]], ks: list[int], seed: int = 0) -> dict:
    """`compare` pooled over seeds: B - A over the problems all runs share, with a CI that redraws
    the seeds as well as the problems (estimators.hierarchical_difference), so it is never narrower
    than the seeds' spread; run i of A and run i of B are seed i of each arm. One run a side is
    the plain paired comparison over problems."""
    if len(a) != len(b):
        raise UsageError(f"{len(a)} runs against {len(b)}: pool the same seeds on both sides")
    per_run = [per_problem_scores(r, ks) for r in (*a, *b)]
    shared = sorted(set.intersection(*(set(s) for s in per_run)))
    if not shared:
        raise UsageError("the two runs share no problem ids: compare runs on the same problems")
    names = [m for m in per_run[0][shared[0]] if all(m in s[shared[0]] for s in per_run)]
    table = {m: np.array([[s[i][m] for i in shared] for s in per_run]) for m in names}  # (2S, P)
    n = len(a)
    diffs: dict[str, Estimate] = {m: hierarchical_difference(x[:n], x[n:], seed) for m, x in table.items()}
    return {
        "n_shared": len(shared),
        "n_runs": n,
        "a": {m: float(x[:n].mean()) for m, x in table.items()},
        "b": {m: float(x[n:].mean()) for m, x in table.items()},
        "diff": {m: d.to_dict() for m, d in diffs.items()},
    }


def compare_table(result: dict, label_a: str, label_b: str, prefix: str = ""):
    from rich.table import Table

    lengths = result.get("lengths")
    caption = None
    if lengths:
        caption = "; ".join(
            f"{label}: {100 * s['truncated']:.1f} % cut at the token cap, mean {s['mean_tokens']:.0f} tokens"
            for label, s in ((label_a, lengths["a"]), (label_b, lengths["b"]))
        )
    title = f"{prefix}{label_b} - {label_a} on {result['n_shared']} shared problems (rates: diff in points)"
    table = Table(title=title, caption=caption)
    for col in ("metric", label_a, label_b, "diff", "95% CI"):
        table.add_column(col, justify="right")
    for m, d in result["diff"].items():
        kind = _split(m)[0]
        table.add_row(
            m,
            _fmt(kind, result["a"][m]),
            _fmt(kind, result["b"][m]),
            _fmt(kind, d["mean"], "+"),
            _ci(kind, d["ci"], "+"),
        )
    return table
