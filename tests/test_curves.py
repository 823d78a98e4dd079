"""Pooling an arm's seeds before the paired difference (bench/claim.py's statistics)."""

from __future__ import annotations

import pytest

from catcli.curves import compare, compare_seeds, summarise_seeds
from catcli.errors import UsageError


def record(pid: str, correct: list[bool]) -> dict:
    return {"id": pid, "correct": correct, "keys": [str(c) for c in correct], "completions": [""] * len(correct)}


def run(*rows: tuple[str, list[bool]]) -> list[dict]:
    return [record(pid, c) for pid, c in rows]


def test_one_seed_per_side_is_the_plain_compare():
    a = run(("p1", [True, False]), ("p2", [False, False]), ("p3", [True, True]))
    b = run(("p1", [True, True]), ("p2", [True, False]), ("p3", [False, False]))
    assert compare_seeds([a], [b], [1, 2]) == compare(a, b, [1, 2])


def test_seeds_are_averaged_per_problem_before_the_difference():
    a0 = run(("p1", [False, False]), ("p2", [True, True]))
    a1 = run(("p1", [True, True]), ("p2", [True, True]))
    b0 = run(("p1", [True, True]), ("p2", [True, False]))
    b1 = run(("p1", [True, True]), ("p2", [False, False]))
    r = compare_seeds([a0, a1], [b0, b1], [1])
    # pass@1 per problem, mean over seeds: A p1 0.5, p2 1.0; B p1 1.0, p2 0.25
    assert r["a"]["pass@1"] == pytest.approx(0.75)
    assert r["b"]["pass@1"] == pytest.approx(0.625)
    assert r["diff"]["pass@1"]["mean"] == pytest.approx((0.5 - 0.75) / 2)
    assert r["diff"]["pass@1"]["n_problems"] == 2


def test_only_problems_every_seed_scored_are_pooled():
    a0 = run(("p1", [True]), ("p2", [False]))
    a1 = run(("p1", [False]))
    s = summarise_seeds([a0, a1], [1])
    assert s["n_problems"] == 1 and s["n_runs"] == 2
    assert s["metrics"]["pass@1"]["mean"] == pytest.approx(0.5)
    with pytest.raises(UsageError, match="share no problem"):
        summarise_seeds([run(("p1", [True])), run(("p2", [True]))], [1])


def test_lengths_are_reported_when_the_samples_say_and_files_without_them_still_score():
    from catcli.curves import curves_csv, summarise, truncation_warning

    rows = [
        {"id": "a", "level": 1, "correct": [True, False], "keys": ["1", "2"], "completions": ["x", "y"],
         "tokens": [10, 512], "stop": ["eos", "length"]},
        {"id": "b", "level": 2, "correct": [False, False], "keys": [None, None], "completions": ["x", "y"],
         "tokens": [30, 40], "stop": ["eos", "eos"]},
    ]  # fmt: skip
    summary = summarise(rows, [1, 2])
    assert summary["lengths"]["all"] == {"samples": 4, "truncated": 0.25, "mean_tokens": (10 + 512 + 30 + 40) / 4}
    assert summary["lengths"]["1"]["truncated"] == 0.5 and summary["lengths"]["2"]["truncated"] == 0.0
    assert "25 % of the 4 samples were cut at --max-new-tokens 512" in truncation_warning(summary, 512)
    assert "2,truncated,,0.0,,,,2" in curves_csv(summary)
    bare = [{k: v for k, v in r.items() if k not in ("tokens", "stop")} for r in rows]
    assert "lengths" not in summarise(bare, [1, 2]) and truncation_warning(summarise(bare, [1]), 512) is None
    few = summarise([{**rows[0], "stop": ["eos", "eos"]}] * 1, [1])
    assert truncation_warning(few, 512) is None  # nothing cut: no line


def test_one_problem_has_no_standard_error():
    from catcli.curves import metrics_table, summarise

    summary = summarise([{"id": "a", "correct": [True, False], "keys": ["1", "2"], "completions": ["x", "y"]}], [1])
    assert summary["metrics"]["pass@1"] == {"mean": 0.5, "se": None, "ci": None, "n_problems": 1}
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(metrics_table(summary))
    assert "no CI: one problem" in console.export_text()
