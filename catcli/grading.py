"""Grades: last \\boxed{} extraction, math-verify equivalence with a time bound, vote keys.

Stage: samples -> grades. Graders never estimate; estimators never grade.

math-verify (Hugging Face) bounds parse/verify with `signal.alarm`, which only works on the main
thread. Off the main thread (a data-loader or reward thread) we send the work to a one-process
pool and wait with a timeout instead, killing the worker when it overruns, so a pathological
answer such as \\boxed{9^{9^{9^{9}}}} is graded wrong within the bound wherever it is graded.
Parse results are cached per distinct string: most completions repeat a handful of answers.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import threading
from dataclasses import dataclass
from functools import lru_cache

TIMEOUT_S = 1  # per parse or verify call; math-verify's signal timeout takes whole seconds
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def extract_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...} with balanced braces, else None.

    `\\boxed 2` (no braces, as two MATH solutions write it) yields the token after it.
    An empty box or unbalanced braces yield None: there is no answer to grade.
    """
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    while start >= 0:
        cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
        i = start + len(cmd)
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        inner = text[i + 1 : j].strip()
                        return inner or None
                j += 1
        elif i < len(text) and text[i] == " ":
            token = text[i + 1 :].split(maxsplit=1)
            if token:
                return token[0].rstrip("$.") or None
        # unbalanced or malformed: try an earlier box
        start = max(text.rfind(c, 0, start) for c in _BOX_COMMANDS)
    return None


# ---------------------------------------------------------------- math-verify, time-bounded


def _mv_parse(answer: str) -> list:
    from math_verify import parse

    return parse("\\boxed{" + answer + "}", parsing_timeout=TIMEOUT_S)


def _mv_equal(gold: str, pred: str) -> bool:
    from math_verify import verify

    g, p = _parsed(gold), _parsed(pred)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=TIMEOUT_S))


def _mv_key(answer: str) -> str:
    parsed = _parsed(answer)
    # sympy's printing is canonical for equal expressions (0.5, 1/2 and \frac12 all print 1/2)
    return str(parsed[0]) if parsed else " ".join(answer.split())


@lru_cache(maxsize=100_000)
def _parsed(answer: str) -> list:
    return _mv_parse(answer)


_pool: cf.ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _off_main_thread(fn, *args, default):
    """Run fn in a one-worker process (its main thread, so signals work); kill it on overrun."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        pool = _pool
        future = pool.submit(fn, *args)
        try:
            return future.result(timeout=3 * TIMEOUT_S + 5)
        except (cf.TimeoutError, cf.process.BrokenProcessPool):
            # overran, or the worker died (killed, out of memory): grade as wrong, start afresh
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            _pool = None
            return default


def _bounded(fn, *args, default):
    if threading.current_thread() is threading.main_thread():
        return fn(*args)
    return _off_main_thread(fn, *args, default=default)


@lru_cache(maxsize=200_000)
def answers_equal(gold: str, pred: str) -> bool:
    """math-verify equivalence of two extracted answers, gold first, within the time bound."""
    if gold == pred:
        return True
    return _bounded(_mv_equal, gold, pred, default=False)


@lru_cache(maxsize=100_000)
def vote_key(answer: str) -> str:
    """Canonical string for an extracted answer, so equivalent answers fall in one vote class."""
    return _bounded(_mv_key, answer, default=" ".join(answer.split()))


# ---------------------------------------------------------------- grading a problem's samples


@dataclass(frozen=True)
class Grades:
    """One problem's graded completions: extracted answer (None = invalid), correctness, vote key."""

    extracted: list[str | None]
    correct: list[bool]
    keys: list[str | None]


def grade_completions(gold: str, completions: list[str]) -> Grades:
    """Extract, grade against `gold` and assign vote keys to all completions of one problem.

    Keys are canonical strings, then classes whose keys math-verify still finds equal are merged
    into the first key seen, so `4i+8` and `8+4i` vote together even when printed differently.
    """
    extracted = [extract_boxed(c) for c in completions]
    correct = [e is not None and answers_equal(gold, e) for e in extracted]
    raw_keys = [vote_key(e) if e is not None else None for e in extracted]
    representative: dict[str, str] = {}
    reps: list[tuple[str, str]] = []  # (key, an extracted answer with that key)
    for e, k in zip(extracted, raw_keys):
        if k is None or k in representative:
            continue
        same = next((rk for rk, ra in reps if answers_equal(ra, e)), None)
        representative[k] = same if same is not None else k
        if same is None:
            reps.append((k, e))
    keys = [representative[k] if k is not None else None for k in raw_keys]
    return Grades(extracted, correct, keys)


def grade_completion(gold: str, completion: str) -> bool:
    """Is the last boxed answer of `completion` equivalent to `gold`?"""
    e = extract_boxed(completion)
    return e is not None and answers_equal(gold, e)
