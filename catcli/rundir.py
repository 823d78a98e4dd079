"""Run directories: refuse to clobber, write atomically, append resumably, record provenance.

Every result file is written to a temporary file and renamed into place, so a crash leaves
either the old file or the new one. Per-unit logs are JSONL appended one fsync'd line at a
time; a line cut short by a kill is ignored on reading, so `--resume` redoes just that unit.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from catcli.errors import DataError, UsageError

# files of a training run beside train_log.jsonl and run.json (trainers/callbacks.py writes them)
EVAL_LOG = "eval_log.jsonl"  # one row per evaluation along training
P_ESTIMATES = "p_estimates.json"  # the latest sampled p estimates; each checkpoint holds its own


def prepare_out(out: Path, *, resume: bool, overwrite: bool) -> Path:
    """Make `out` ready: a non-empty directory is refused unless --resume or --overwrite.

    Under a multi-process launch only rank 0 checks and prepares it; the others would find
    rank 0's files there and refuse.
    """
    if os.environ.get("RANK", "0") != "0":
        out.mkdir(parents=True, exist_ok=True)
        return out
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: pick one")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a directory")
    if out.is_dir() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise UsageError(f"--out {out} is not empty: add --resume to continue it or --overwrite to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as e:
        raise UsageError(f"--out {out} is not writable: {e.strerror}") from None
    return out


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write via a temporary file in the same directory and rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append whole lines and fsync, so a finished unit survives a kill right after."""
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file. A torn last line (no newline: the writer was killed) is dropped."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends in a newline
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {i + 1} is not valid JSON: {e.msg}") from None
    if torn.strip():
        try:
            rows.append(json.loads(torn))
        except json.JSONDecodeError:
            pass  # the unit it belonged to was not finished; --resume redoes it
    return rows


def drop_torn_tail(path: Path) -> None:
    """Cut a last line that has no newline, before appending after it."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(cut)


def resume_checkpoint(out: Path, logs: tuple[str, ...] = ("train_log.jsonl",)) -> Path | None:
    """The last complete Trainer checkpoint under OUT/checkpoints, or None.

    Rows of the OUT/`logs` (JSONL with a "step") past that checkpoint's step (past step 0 when there
    is none) are dropped: the resumed run logs those steps again.
    """
    done = [p for p in (out / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    last = max(done, key=lambda p: int(p.name.split("-")[-1])) if done else None
    # no checkpoint: the run starts again from step 0, and so do its logs
    step = json.loads((last / "trainer_state.json").read_text())["global_step"] if last else 0
    for name in logs:
        log = out / name
        if log.exists():
            keep = [r for r in read_jsonl(log) if r["step"] <= step]
            write_atomic(log, "".join(json.dumps(r) + "\n" for r in keep))
    return last


def check_resume(out: Path, config: dict, default: dict, keys: tuple[str, ...]) -> None:
    """Refuse to resume OUT with other settings `keys` than OUT/run.json recorded.

    `default` holds each key's default: a key an older catcli did not write had it.
    """
    run = out / "run.json"
    if not run.exists():
        return
    old = json.loads(run.read_text())["config"]
    changed = [k for k in keys if old.get(k, default[k]) != config.get(k)]
    if changed:
        raise UsageError(
            f"--resume of {out} with different {', '.join(changed)} than the run started with; "
            "use the same settings or a new --out"
        )


def merge_parts(out: Path) -> None:
    """Append the rows of per-process part files (samples.partN.jsonl) that samples.jsonl lacks,
    then remove the parts: what a multi-process eval leaves, merged by rank 0."""
    samples_path = out / "samples.jsonl"
    drop_torn_tail(samples_path)
    parts = sorted(out.glob("samples.part*.jsonl"))
    if not parts:
        return
    have = {str(r["id"]) for r in read_jsonl(samples_path)} if samples_path.exists() else set()
    for part in parts:
        drop_torn_tail(part)
        rows = [r for r in read_jsonl(part) if str(r["id"]) not in have]
        append_jsonl(samples_path, rows)
        have.update(str(r["id"]) for r in rows)
    for part in parts:
        part.unlink()


def provenance() -> dict:
    """Library versions, git commit and machine: what is needed to rerun a result."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("catcli", "torch", "transformers", "trl", "peft", "unsloth", "unsloth_zoo", "math-verify"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {
        "versions": versions,
        "git_commit": commit,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
