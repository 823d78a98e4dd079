"""The markdown tables of docs/benchmarks.md's "Does it work?" section, from bench/claim.py's JSON.

    python bench/claim_tables.py [bench/results/claim.json]

Per part: each arm's held-apart metrics pooled over its seeds with the per-seed values of the
part's headline metric, then each arm's paired difference to its baseline with the CI that
resamples seeds and problems. Points are percentage points; the warm-up row is on the same
problems as the arms.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# per part: its baseline, the metrics shown, and the one whose per-seed values are listed
PARTS = {
    "sft": ("ce", ["pass@1", "pass@4", "pass@16", "pass@32", "maj@16", "maj@32"], "pass@32"),
    "rl": ("grpo", ["pass@1", "pass@4", "pass@16", "maj@4", "maj@16"], "pass@16"),
    "solution": ("ce", ["pass@1", "pass@4", "pass@16", "maj@4", "maj@16"], "maj@16"),
}


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def signed(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-", "−")


def metric_table(part: dict, shown: list[str], headline: str) -> list[str]:
    seeds = ", ".join(str(s) for s in part["seeds"])
    lines = [
        f"| arm | {' | '.join(shown)} | {headline} per seed ({seeds}) |",
        "|---" * (len(shown) + 2) + "|",
    ]
    warm = part.get("warmup", {})
    if warm:
        lines.append(f"| warm-up | {' | '.join(pct(warm[m]) if m in warm else '' for m in shown)} |  |")
    for arm, pooled in part["pooled"].items():
        values = [pct(pooled["metrics"][m]["mean"]) if m in pooled["metrics"] else "" for m in shown]
        per_seed = " / ".join(pct(r["metrics"][headline]) for r in part["per_seed"][arm])
        lines.append(f"| {arm} | {' | '.join(values)} | {per_seed} |")
    return lines


def diff_table(part: dict, shown: list[str]) -> list[str]:
    lines = [f"| arm | baseline | {' | '.join(shown)} |", "|---" * (len(shown) + 2) + "|"]
    for key in (k for k in part if k.startswith("vs_")):
        for arm, d in part[key].items():
            cells = []
            for m in shown:
                e = d["diff"].get(m)
                cells.append(f"{signed(e['mean'])} [{signed(e['ci'][0])}, {signed(e['ci'][1])}]" if e else "")
            lines.append(f"| {arm} | {key[3:]} | {' | '.join(cells)} |")
    return lines


def tables(result: dict) -> str:
    out = []
    for name, (_, shown, headline) in PARTS.items():
        part = result.get(name)
        if not part:
            continue
        have = set(next(iter(part["pooled"].values()))["metrics"])
        shown = [m for m in shown if m in have] or sorted(have)  # a --quick run has k up to 8 only
        headline = headline if headline in have else shown[-1]
        n = part.get("n_shared_problems")
        size = f", {n} held-apart problems" if n else ""
        out.append(f"**{name}** ({len(part['seeds'])} seed(s){size}; %):")
        out += ["", *metric_table(part, shown, headline), ""]
        out.append("Paired difference to the baseline, points, 95 % CI over seeds and problems:")
        out += ["", *diff_table(part, shown), ""]
    return "\n".join(out)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/claim.json")
    print(tables(json.loads(path.read_text())))
