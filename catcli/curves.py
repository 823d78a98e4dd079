"""Curves: metrics over a set of graded problems, their files, plots and tables.

Stage: estimators -> curves. Reads graded sample records, writes eval.json pieces,
curves.csv and curves.png (pass@k and maj@k against k on a log2 axis, 95 % CI bands),
and renders rich tables for eval, score and compare.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

from catcli.errors import UsageError
from catcli.estimators import Estimate, EstimatorError, estimate, paired_difference, problem_scores
from catcli.rundir import write_atomic


def per_problem_scores(records: list[dict], ks: list[int]) -> dict[str, dict[str, float]]:
    """{problem id: {metric: score}} for every record; k > n is a usage error naming the problem."""
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


def summarise(records: list[dict], ks: list[int], seed: int = 0) -> dict:
    """{"n_problems", "metrics": {name: estimate}, "levels": {level: {name: estimate}}} as JSON-ready dicts."""
    scores = per_problem_scores(records, ks)
    names = list(next(iter(scores.values())))
    metrics = {m: estimate([s[m] for s in scores.values()], seed).to_dict() for m in names}
    by_level: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("level") is not None:
            by_level[str(r["level"])].append(scores[str(r["id"])])
    levels = {
        lvl: {m: estimate([s[m] for s in rows], seed).to_dict() for m in names}
        for lvl, rows in sorted(by_level.items())
    }
    return {"n_problems": len(records), "metrics": metrics, "levels": levels}


def _split(name: str) -> tuple[str, int]:
    kind, k = name.split("@")
    return kind, int(k)


def curves_csv(summary: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["level", "metric", "k", "mean", "se", "ci_lo", "ci_hi", "n_problems"])
    groups = [("all", summary["metrics"])] + list(summary["levels"].items())
    for level, metrics in groups:
        for name, e in metrics.items():
            kind, k = _split(name)
            w.writerow([level, kind, k, e["mean"], e["se"], e["ci"][0], e["ci"][1], e["n_problems"]])
    return buf.getvalue()


def plot_curves(runs: list[tuple[str, dict]], path: Path, title: str = "") -> None:
    """pass@k and maj@k vs k (log2 axis) with 95 % CI bands; one line per run. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({_split(m)[0] for _, s in runs for m in s["metrics"]}, key=["pass", "maj", "bon"].index)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for label, summary in runs:
            pts = sorted((_split(m)[1], e) for m, e in summary["metrics"].items() if _split(m)[0] == kind)
            if not pts:
                continue
            ks = [k for k, _ in pts]
            ax.plot(ks, [100 * e["mean"] for _, e in pts], marker="o", label=label)
            ax.fill_between(ks, [100 * e["ci"][0] for _, e in pts], [100 * e["ci"][1] for _, e in pts], alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (samples)")
        ax.set_ylabel(f"{kind}@k (%)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def metrics_table(summary: dict, title: str = ""):
    """Rows k, columns metric: mean % with 95 % CI."""
    from rich.table import Table

    table = Table(title=title or f"{summary['n_problems']} problems")
    kinds = sorted({_split(m)[0] for m in summary["metrics"]}, key=["pass", "maj", "bon"].index)
    ks = sorted({_split(m)[1] for m in summary["metrics"]})
    table.add_column("k", justify="right")
    for kind in kinds:
        table.add_column(f"{kind}@k %", justify="right")
    for k in ks:
        row = [str(k)]
        for kind in kinds:
            e = summary["metrics"].get(f"{kind}@{k}")
            row.append(f"{100 * e['mean']:.1f} [{100 * e['ci'][0]:.1f}, {100 * e['ci'][1]:.1f}]" if e else "")
        table.add_row(*row)
    return table


def compare(a: list[dict], b: list[dict], ks: list[int], seed: int = 0) -> dict:
    """Paired difference B - A per metric over the problems both runs scored."""
    sa, sb = per_problem_scores(a, ks), per_problem_scores(b, ks)
    shared = sorted(set(sa) & set(sb))
    if not shared:
        raise UsageError("the two runs share no problem ids: compare runs on the same problems")
    names = list(sa[shared[0]])
    diffs: dict[str, Estimate] = {
        m: paired_difference([sa[i][m] for i in shared], [sb[i][m] for i in shared], seed) for m in names
    }
    return {
        "n_shared": len(shared),
        "a": {m: sum(sa[i][m] for i in shared) / len(shared) for m in names},
        "b": {m: sum(sb[i][m] for i in shared) / len(shared) for m in names},
        "diff": {m: d.to_dict() for m, d in diffs.items()},
    }


def compare_table(result: dict, label_a: str, label_b: str):
    from rich.table import Table

    table = Table(title=f"{label_b} - {label_a} on {result['n_shared']} shared problems")
    for col in ("metric", label_a, label_b, "diff (pts)", "95% CI"):
        table.add_column(col, justify="right")
    for m, d in result["diff"].items():
        table.add_row(
            m,
            f"{100 * result['a'][m]:.1f}",
            f"{100 * result['b'][m]:.1f}",
            f"{100 * d['mean']:+.1f}",
            f"[{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]",
        )
    return table
