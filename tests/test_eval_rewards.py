"""`catcli eval --reward` end to end, bad rewards through the real CLI, and bon metrics in score / compare / plot."""

from __future__ import annotations

import json

import pytest

from catcli.estimators import bon_at_k, bon_correct_at_k
from conftest import run_cli

# the embedded model in 16 bit loads in a third of the 4-bit time; 8 tokens keep sampling short
EVAL = ["eval", "--model", "smollm2-135m", "--data", "arith", "--no-load-in-4bit", "--max-new-tokens", "8"]
SMALL = ["--limit", "4", "--n", "2", "--k", "1,2", "--batch-size", "2"]


def rows_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("catcli: error:")]


# ---------------------------------------------------------------- with the model


@pytest.mark.slow
def test_eval_with_a_reward_reports_bon_beside_pass_and_maj(tmp_path):
    from catcli.rewards import closeness

    out = tmp_path / "run"
    r = run_cli(*EVAL, *SMALL, "--reward", "closeness", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert set(result["metrics"]) == {f"{m}@{k}" for m in ("pass", "maj", "bon", "bon_correct") for k in (1, 2)}
    assert all(set(level) == set(result["metrics"]) for level in result["levels"].values())
    rows = rows_of(out / "samples.jsonl")
    assert len(rows) == 4
    for row in rows:  # each completion's reward is closeness of its own text
        assert row["reward"] == closeness(row["completions"], answer=[row["answer"]] * 2)
    curves = (out / "curves.csv").read_text()
    assert ",bon," in curves and ",bon_correct," in curves
    # score reads the rewards back and gives the same numbers with no model
    s = run_cli("score", str(out / "samples.jsonl"), "--k", "1,2", "--json")
    assert s.returncode == 0, s.stderr[-2000:]
    assert json.loads(s.stdout)["metrics"] == result["metrics"]


FLAKY = """
calls = [0]


def scored(completions, **kwargs):
    calls[0] += 1
    if calls[0] == 2:
        raise RuntimeError("cannot score this batch")
    return [len(c[0]["content"]) / 100 for c in completions]
"""

FIXED = """
def scored(completions, **kwargs):
    return [len(c[0]["content"]) / 100 for c in completions]
"""


@pytest.mark.slow
def test_a_failing_reward_keeps_finished_problems_and_resume_continues(tmp_path):
    reward_file, out = tmp_path / "user_reward.py", tmp_path / "run"
    reward_file.write_text(FLAKY)
    spec = f"{reward_file}:scored"
    base = [*EVAL, *SMALL, "--reward", spec, "--reward", "correct"]
    args = [*base, "--reward-weights", "1,2", "--out", str(out)]
    r = run_cli(*args)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert error_lines(r.stderr) == [f"catcli: error: reward {spec!r} raised RuntimeError: cannot score this batch"]
    rows = rows_of(out / "samples.jsonl")
    assert len(rows) == 2 and all(len(row["reward"]) == 2 for row in rows)  # the first chunk, scored
    assert not (out / "eval.json").exists()

    # the reward is part of what a resumed run must agree on
    other = run_cli(*base, "--reward-weights", "1,3", "--out", str(out), "--resume")
    assert other.returncode == 2 and "different reward_weights" in other.stderr

    reward_file.write_text(FIXED)
    resumed = run_cli(*args, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = rows_of(out / "samples.jsonl")
    assert len(rows) == len({row["id"] for row in rows}) == 4
    for row in rows:  # 1 x length / 100 + 2 x correctness
        expected = [len(c) / 100 + 2.0 * ok for c, ok in zip(row["completions"], row["correct"])]
        assert row["reward"] == pytest.approx(expected)
    assert "bon@2" in json.loads(resumed.stdout)["metrics"]


BAD_AT_RUN_TIME = {
    "raises": ("def r(completions, **kw):\n    raise ValueError('boom')\n", "raised ValueError: boom"),
    "wrong_length": ("def r(completions, **kw):\n    return [0.0]\n", "returned 1 rewards for 4 completions"),
    "nan": ("def r(completions, **kw):\n    return [float('nan')] * len(completions)\n", "gave nan for completion 0"),
    "string": ("def r(completions, **kw):\n    return ['high'] * len(completions)\n", "gave 'high' for completion 0"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_AT_RUN_TIME)
def test_a_reward_that_misbehaves_is_one_line_and_exit_1(tmp_path, case):
    code, fragment = BAD_AT_RUN_TIME[case]
    (tmp_path / "bad.py").write_text(code)
    spec = f"{tmp_path / 'bad.py'}:r"
    out = tmp_path / "run"
    r = run_cli(*EVAL, "--limit", "2", "--n", "2", "--k", "1,2", "--reward", spec, "--out", str(out))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    [line] = error_lines(r.stderr)
    assert line.startswith(f"catcli: error: reward {spec!r} ") and fragment in line
    assert not (out / "samples.jsonl").exists()  # the one chunk failed: nothing half-written


# ---------------------------------------------------------------- before any model loads


@pytest.mark.parametrize(
    "code, function, fragment",
    [
        ("import catcli_no_such_dependency_xyz\n", "r", "cannot import"),
        ("def other(completions, **kw):\n    return []\n", "r", "has no function 'r' (it defines: other)"),
        ("r = 3\n", "r", "is not callable: r = 3"),
    ],
)
def test_a_reward_that_cannot_load_is_one_line_and_exit_2(tmp_path, code, function, fragment):
    (tmp_path / "bad.py").write_text(code)
    spec = f"{tmp_path / 'bad.py'}:{function}"
    out = tmp_path / "run"
    r = run_cli(*EVAL, *SMALL, "--reward", spec, "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [line for line in r.stderr.splitlines() if line.strip()] == error_lines(r.stderr)  # nothing else
    [line] = error_lines(r.stderr)
    assert line.startswith(f"catcli: error: reward {spec!r}: ") and fragment in line
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--reward", "closeness", "--reward-weights", "1,2"], "has 2 weights for 1 --reward"),
        (["--reward", "closeness", "--reward-weights", "heavy"], "one number per --reward"),
        (["--reward-weights", "1"], "give at least one --reward"),
        (["--reward", "module_without_function"], "not a built-in reward"),
        (["--reward", "catcli_no_such_module_xyz:r"], "ModuleNotFoundError"),
    ],
)
def test_bad_reward_flags_are_usage_errors(tmp_path, flags, fragment):
    out = tmp_path / "run"
    r = run_cli(*EVAL, *SMALL, *flags, "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    [line] = error_lines(r.stderr)
    assert fragment in line
    assert not out.exists()


# ---------------------------------------------------------------- samples files with rewards


PROBLEMS = [
    {"id": "a", "level": 1, "answer": "4", "completions": ["\\boxed{4}", "\\boxed{5}", "x", "\\boxed{4}"]},
    {"id": "b", "level": 2, "answer": "7", "completions": ["\\boxed{7}", "\\boxed{8}", "\\boxed{7}", "no"]},
]


def write_samples(path, rewards) -> None:
    path.write_text("".join(json.dumps({**p, "reward": r}) + "\n" for p, r in zip(PROBLEMS, rewards)))


def test_score_gives_bon_metrics_from_a_samples_file(tmp_path):
    rewards = [[0.9, 0.95, 0.1, 0.5], [2, 3, 2, -1]]  # integers are numbers too
    write_samples(tmp_path / "s.jsonl", rewards)
    r = run_cli("score", str(tmp_path / "s.jsonl"), "--k", "1,2,4", "--json")
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)["metrics"]
    correct = [[True, False, False, True], [True, False, True, False]]
    for k in (1, 2, 4):
        assert metrics[f"bon@{k}"]["mean"] == pytest.approx(sum(bon_at_k(x, k) for x in rewards) / 2)
        expected = sum(bon_correct_at_k(x, c, k) for x, c in zip(rewards, correct)) / 2
        assert metrics[f"bon_correct@{k}"]["mean"] == pytest.approx(expected)
    assert metrics["bon_correct@4"]["mean"] == 0.0  # the top reward is a wrong answer in both
    table = run_cli("score", str(tmp_path / "s.jsonl"), "--k", "1,2", env={"COLUMNS": "200"})
    assert table.returncode == 0 and "bon_correct@k %" in table.stdout and "bon@k" in table.stdout


def test_compare_and_plot_carry_bon_metrics(tmp_path):
    write_samples(tmp_path / "a.jsonl", [[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 0.0]])
    write_samples(tmp_path / "b.jsonl", [[0.9, 0.2, 0.3, 0.4], [0.5, 0.0, 0.0, 0.0]])
    r = run_cli("compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--k", "1,2", "--json")
    assert r.returncode == 0, r.stderr
    diff = json.loads(r.stdout)["diff"]
    assert diff["bon@1"]["mean"] == pytest.approx((0.2 + 0.125) / 2)
    assert diff["bon_correct@1"]["mean"] == 0.0  # one draw is blind to the reward
    # b rewards right answers highest: a's pairs pick right 3/6 and 1/2, b's 5/6 and 4/6
    assert diff["bon_correct@2"]["mean"] == pytest.approx(0.25)
    # compared with a run without rewards, only the shared metrics are compared
    (tmp_path / "plain.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    r = run_cli("compare", str(tmp_path / "plain.jsonl"), str(tmp_path / "b.jsonl"), "--k", "1,2", "--json")
    assert r.returncode == 0 and set(json.loads(r.stdout)["diff"]) == {"pass@1", "maj@1", "pass@2", "maj@2"}

    s = run_cli("score", str(tmp_path / "b.jsonl"), "--k", "1,2,4", "--json")
    (tmp_path / "eval.json").write_text(s.stdout)
    p = run_cli("plot", str(tmp_path / "eval.json"), "-o", str(tmp_path / "curves.png"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "rewards, code, fragment",
    [
        ([[0.1, float("nan"), 0.3, 0.4], [0, 0, 0, 0]], 3, "reward must be a list of finite numbers"),
        ([[0.1, 0.2, 0.3, 0.4], None], 3, "problem b has none"),
    ],
)
def test_bad_rewards_in_a_samples_file(tmp_path, rewards, code, fragment):
    path = tmp_path / "s.jsonl"
    path.write_text(
        "".join(json.dumps({**p, **({"reward": r} if r is not None else {})}) + "\n" for p, r in zip(PROBLEMS, rewards))
    )
    r = run_cli("score", str(path), "--k", "1,2")
    assert r.returncode == code and "Traceback" not in r.stderr
    [line] = error_lines(r.stderr)
    assert fragment in line
