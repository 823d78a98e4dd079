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
