"""Grader accuracy and speed on the real MATH train split.

- own: each record's solution graded against its own answer (should be correct)
- cross: each solution graded against another record's different answer (should be wrong)
- speed: answers/s of grading plus vote keys on completions drawn from the split's solutions,
  with the parse cache warm (realistic: samples repeat answers) and with it cleared per call.
Prints one JSON object. Target (issue 7): >= 2,000 answers/s with the cache.

    python bench/grading.py [--quick] [--data ../shared/data/math/train.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from catcli import grading

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "math" / "train.jsonl"


def _clear_caches() -> None:
    for fn in (grading._parsed, grading.answers_equal, grading.vote_key):
        fn.cache_clear()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="200 records (CI smoke)")
    ap.add_argument("--data", type=Path, default=DEFAULT)
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.data.read_text().splitlines()]
    rng = random.Random(0)
    if args.quick:
        rows = rng.sample(rows, 200)

    start = time.perf_counter()
    own = sum(grading.grade_completion(r["answer"], r["solution"]) for r in rows) / len(rows)
    own_s = time.perf_counter() - start
    start = time.perf_counter()
    wrong = 0
    for r in rows:
        other = rng.choice(rows)
        while other["answer"] == r["answer"]:
            other = rng.choice(rows)
        wrong += not grading.grade_completion(other["answer"], r["solution"])
    cross_s = time.perf_counter() - start

    # 64 samples per problem whose answers repeat, as sampled completions do
    problems = rng.sample(rows, 10 if args.quick else 50)
    distractors = [r["answer"] for r in rows[:40]]

    def completion(gold: str) -> str:
        answer = rng.choice(distractors) if rng.random() < 0.5 else gold
        return f"so the answer is $\\boxed{{{answer}}}$"

    pools = [(p["answer"], [completion(p["answer"]) for _ in range(64)]) for p in problems]
    n_answers = sum(len(c) for _, c in pools)
    _clear_caches()
    start = time.perf_counter()
    for gold, comps in pools:
        grading.grade_completions(gold, comps)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    for gold, comps in pools:
        grading.grade_completions(gold, comps)
    warm_s = time.perf_counter() - start
    print(
        json.dumps(
            {
                "bench": "grading",
                "records": len(rows),
                "own_correct": own,
                "own_s": own_s,
                "cross_wrong": wrong / len(rows),
                "cross_s": cross_s,
                "answers_per_s_cold_cache": n_answers / cold_s,
                "answers_per_s_warm_cache": n_answers / warm_s,
                "target_answers_per_s": 2000,
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
