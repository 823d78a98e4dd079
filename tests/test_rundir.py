"""Run directories: a resumed run's logs are cut back to its checkpoint, and it must be the run it continues."""

from __future__ import annotations

import json

import pytest

from catcli.errors import UsageError
from catcli.rundir import check_resume, resume_checkpoint


def _log(path, steps):
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in steps))


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_logs_past_the_last_checkpoint_are_dropped(tmp_path):
    for step in (2, 4):
        ck = tmp_path / "checkpoints" / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoints" / "checkpoint-6").mkdir()  # killed while saving: not complete
    _log(tmp_path / "train_log.jsonl", range(1, 7))
    _log(tmp_path / "eval_log.jsonl", [2, 4, 6])
    assert resume_checkpoint(tmp_path, logs=("train_log.jsonl", "eval_log.jsonl")).name == "checkpoint-4"
    assert _steps(tmp_path / "train_log.jsonl") == [1, 2, 3, 4]
    assert _steps(tmp_path / "eval_log.jsonl") == [2, 4]


def test_without_a_checkpoint_the_run_and_its_logs_start_again(tmp_path):
    # a run killed before its first checkpoint restarts at step 0: its rows would otherwise be
    # logged twice, and evaluations it made would stand in for the restarted run's
    _log(tmp_path / "train_log.jsonl", range(1, 21))
    _log(tmp_path / "eval_log.jsonl", [5, 10, 15, 20])
    assert resume_checkpoint(tmp_path, logs=("train_log.jsonl", "eval_log.jsonl")) is None
    assert _steps(tmp_path / "train_log.jsonl") == [] and _steps(tmp_path / "eval_log.jsonl") == []


def test_a_resume_with_other_settings_is_refused(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"config": {"strategy": "pass@4", "eval_n": 4}}))
    default = {"strategy": "ce", "eval_n": None, "p_samples": 8}
    check_resume(tmp_path, {"strategy": "pass@4", "eval_n": 4, "p_samples": 8}, default, tuple(default))
    with pytest.raises(UsageError, match="different strategy, eval_n than the run started with"):
        check_resume(tmp_path, {"strategy": "ce", "eval_n": 8, "p_samples": 8}, default, tuple(default))
