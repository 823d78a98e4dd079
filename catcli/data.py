"""Data: one record type (Problem) and the sources that produce it.

Stage: data -> prompts. Sources, chosen by `--data`:
  math      MATH (Hendrycks et al. 2021) from the Hugging Face hub: split train | test
            (EleutherAI/hendrycks_math) or math500 (HuggingFaceH4/MATH-500).
  arith     a built-in, seeded generator of MATH-format arithmetic (levels below).
  PATH      a local .jsonl / .json / .parquet file with the columns of MATH's train.jsonl:
            problem, answer and/or solution, level (int or "Level N"), subject, unique_id.

arith levels, chosen so the embedded 135M model finds level 1 easy-ish and level 3 hard:
  1  a + b                a, b in 0..99
  2  a + b - c            a, b, c in 10..99
  3  a x b                a, b in 10..99          (two-digit multiplication)
Its train and test splits are disjoint: a problem belongs to test iff a hash of its text
falls in one tenth of the range, so held-apart evaluation never sees a training item.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from catcli.errors import DataError, UsageError
from catcli.grading import extract_boxed

SUBJECT_ARITH = "Arithmetic"
ARITH_SIZE = {"train": 2000, "test": 500}  # problems per level
MATH_SUBJECT_CONFIGS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    solution: str
    answer: str
    level: int
    subject: str

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- filters


def parse_levels(text: str) -> frozenset[int]:
    """`1-3`, `1,2,5` or `2` -> a set of levels; malformed text is a usage error."""
    levels: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise UsageError(f"invalid --levels {text!r}: use a range like 1-3 or a list like 1,2")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo > hi:
            raise UsageError(f"invalid --levels {text!r}: range {part} is empty")
        levels.update(range(lo, hi + 1))
    return frozenset(levels)


def select(
    problems: list[Problem],
    *,
    levels: frozenset[int] | None = None,
    subjects: list[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    source: str = "",
) -> list[Problem]:
    """Filter by level and subject, then take a seeded random `limit` (order kept otherwise)."""
    chosen = problems
    if levels:
        chosen = [p for p in chosen if p.level in levels]
    if subjects:
        wanted = {s.strip().lower() for s in subjects}
        chosen = [p for p in chosen if p.subject.lower() in wanted]
    if not chosen:
        have_levels = sorted({p.level for p in problems})
        have_subjects = sorted({p.subject for p in problems})
        raise DataError(
            f"no problems in {source or 'the data'} match the filters "
            f"(levels {sorted(levels) if levels else 'any'}, subjects {subjects or 'any'}); "
            f"it has levels {have_levels} and subjects {have_subjects}"
        )
    if limit is not None:
        if limit < 1:
            raise UsageError(f"--limit must be at least 1, got {limit}")
        if limit < len(chosen):
            idx = sorted(random.Random(seed).sample(range(len(chosen)), limit))
            chosen = [chosen[i] for i in idx]
    return chosen


def fingerprint(problems: Iterable[Problem]) -> str:
    """sha256 over the chosen ids and answers: two runs on the same selection share it."""
    h = hashlib.sha256()
    for p in problems:
        h.update(f"{p.id}\t{p.answer}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------- arith


def _arith_item(level: int, rng: random.Random) -> tuple[str, str, str]:
    if level == 1:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        return f"What is ${a} + {b}$?", f"${a} + {b} = {a + b}$.", str(a + b)
    if level == 2:
        a, b, c = (rng.randint(10, 99) for _ in range(3))
        v = a + b - c
        return (
            f"What is ${a} + {b} - {c}$?",
            f"First ${a} + {b} = {a + b}$, then ${a + b} - {c} = {v}$.",
            str(v),
        )
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return (
        f"What is ${a} \\times {b}$?",
        f"${a} \\times {b} = {a} \\times {b // 10 * 10} + {a} \\times {b % 10} = "
        f"{a * (b // 10 * 10)} + {a * (b % 10)} = {a * b}$.",
        str(a * b),
    )


def _in_test_split(text: str) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 10 == 0


def generate_arith(split: str, seed: int = 0, size: int | None = None) -> list[Problem]:
    """Seeded MATH-format arithmetic, `size` distinct problems per level (see module docstring)."""
    if split not in ARITH_SIZE:
        raise UsageError(f"arith has splits {sorted(ARITH_SIZE)}, not {split!r}")
    size = size or ARITH_SIZE[split]
    want_test = split == "test"
    out: list[Problem] = []
    for level in (1, 2, 3):
        rng = random.Random(f"arith-{seed}-{level}")
        seen: set[str] = set()
        while len(seen) < size:
            problem, work, answer = _arith_item(level, rng)
            if problem in seen or _in_test_split(problem) != want_test:
                continue
            seen.add(problem)
            out.append(
                Problem(
                    id=f"arith/{split}/L{level}/{len(seen) - 1}",
                    problem=problem,
                    solution=f"{work} The answer is $\\boxed{{{answer}}}$.",
                    answer=answer,
                    level=level,
                    subject=SUBJECT_ARITH,
                )
            )
    return out


# ---------------------------------------------------------------- records from files and the hub

_EMPTY_BOX = re.compile(r"\\(?:boxed|fbox)\{\s*\}")


class MalformedRow(DataError):
    """A row that cannot become a Problem; `kind` is the why in a few words, for a skip count."""

    def __init__(self, where: str, message: str, kind: str):
        super().__init__(f"{where}: {message}")
        self.kind = kind


def _level(value, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(?:Level\s+)?(\d+)\s*", value)
        if m:
            return int(m.group(1))
    raise MalformedRow(where, f"level must be an integer or 'Level N', got {value!r}", f"level {value!r}")


def record_to_problem(row: dict, where: str, fallback_id: str) -> Problem:
    """One MATH-schema row -> Problem; `answer` is derived from the solution's last box if absent."""
    if not isinstance(row, dict):
        raise MalformedRow(where, f"expected a JSON object, got {type(row).__name__}", "a record that is not an object")
    missing = [c for c in ("problem", "level") if c not in row]
    if "answer" not in row and "solution" not in row:
        missing.append("answer or solution")
    if missing:
        names = ", ".join(missing)
        raise MalformedRow(where, f"missing column(s) {names}", f"missing column(s) {names}")
    for col in ("problem", "solution", "answer", "subject", "type"):
        if col in row and row[col] is not None and not isinstance(row[col], str):
            raise MalformedRow(
                where, f"column {col!r} must be a string, got {type(row[col]).__name__}", f"a non-string {col!r}"
            )
    solution = row.get("solution") or ""
    answer = row.get("answer")
    if answer is None:
        answer = extract_boxed(solution)
        if answer is None and _EMPTY_BOX.search(solution):
            raise MalformedRow(
                where, "no answer column and the solution's \\boxed{} is empty", "an empty \\boxed{} answer"
            )
        if answer is None:
            raise MalformedRow(where, "no answer column and no \\boxed{} in the solution", "no \\boxed{} answer")
    return Problem(
        id=str(row.get("unique_id") or row.get("id") or fallback_id),
        problem=row["problem"],
        solution=solution,
        answer=str(answer).strip(),
        level=_level(row["level"], where),
        subject=row.get("subject") or row.get("type") or "",
    )


def _read_rows(path: Path) -> Iterable[tuple[str, dict]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several unrelated types for a bad file
            raise DataError(f"cannot read {path} as parquet: {e}") from None
        for i, row in enumerate(table.to_pylist()):
            yield f"{path} row {i + 1}", row
        return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}): re-save it as UTF-8") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    if suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} is not valid JSON (line {e.lineno}): {e.msg}") from None
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of records")
        for i, row in enumerate(rows):
            yield f"{path} record {i + 1}", row
        return
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {i + 1} is not valid JSON: {e.msg}") from None
        yield f"{path} line {i + 1}", row


def load_file(path: Path) -> list[Problem]:
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if path.is_dir():
        raise DataError(f"data path {path} is a directory; name a .jsonl, .json or .parquet file")
    if path.suffix.lower() not in (".jsonl", ".json", ".parquet"):
        raise DataError(f"data file {path}: use a .jsonl, .json or .parquet file")
    problems = [record_to_problem(row, where, f"{path.stem}/{i}") for i, (where, row) in enumerate(_read_rows(path))]
    if not problems:
        raise DataError(f"data file {path} holds no records")
    return problems


def load_math_hub(split: str) -> list[Problem]:
    """MATH from the Hugging Face hub via `datasets` (needs network or a warm HF cache).

    The hub's train split has rows no grader can use (level "Level ?", an empty \\boxed{}): they
    are skipped and counted on stderr, never silently. A local file with such rows is refused
    instead (load_file), since the user can fix it; nobody can fix the hub's copy.
    """
    import datasets

    try:
        if split == "math500":
            rows = [
                ("HuggingFaceH4/MATH-500", r) for r in datasets.load_dataset("HuggingFaceH4/MATH-500", split="test")
            ]
        elif split in ("train", "test"):
            rows = [
                (f"EleutherAI/hendrycks_math/{cfg}", r)
                for cfg in MATH_SUBJECT_CONFIGS
                for r in datasets.load_dataset("EleutherAI/hendrycks_math", cfg, split=split)
            ]
        else:
            raise UsageError(f"MATH has splits train, test, math500; not {split!r}")
    except (ConnectionError, OSError, ValueError) as e:
        if isinstance(e, UsageError):
            raise
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"cannot load MATH ({split}) from the Hugging Face hub ({first}); "
            "offline, pass a local file with --data PATH.jsonl"
        ) from None
    problems: list[Problem] = []
    skipped: Counter[str] = Counter()
    for i, (src, r) in enumerate(rows):
        try:
            # ids number all rows, so skipping one never renames the others
            problems.append(record_to_problem(dict(r), f"{src} row {i + 1}", f"math/{split}/{i}"))
        except MalformedRow as e:
            skipped[e.kind] += 1
    if skipped:
        n = sum(skipped.values())
        why = ", ".join(f"{count} with {kind}" for kind, count in skipped.most_common())
        if not problems:
            raise DataError(f"all {n} MATH {split} rows from the hub are malformed ({why}); the dataset has changed")
        print(f"catcli: skipped {n} malformed MATH {split} row{'s' * (n != 1)} ({why})", file=sys.stderr)
    return problems


def load_problems(source: str, split: str = "train", seed: int = 0) -> list[Problem]:
    """All problems of a source (`math`, `arith` or a path) before filtering."""
    if source == "arith":
        return generate_arith(split, seed)
    if source == "math":
        return load_math_hub(split)
    path = Path(source)
    if path.suffix == "" and not path.exists():
        raise DataError(f"unknown data source {source!r}: use math, arith, or a .jsonl/.json/.parquet path")
    return load_file(path)


def load_selection(
    source: str,
    split: str,
    *,
    levels: str | None,
    subjects: Iterable[str] = (),
    limit: int | None = None,
    seed: int = 0,
) -> list[Problem]:
    """load_problems + select, from the flag values every command shares (`--levels 1-3` etc.)."""
    return select(
        load_problems(source, split, seed),
        levels=parse_levels(levels) if levels else None,
        subjects=list(subjects),
        limit=limit,
        seed=seed,
        source=source,
    )
