"""Rewards: the built-ins on designed cases, loading every kind of spec, checking, weights."""

from __future__ import annotations

import math

import pytest

from catcli.data import Problem
from catcli.errors import RewardError, RewardFailure, UsageError
from catcli.rewards import (
    checked,
    closeness,
    combine,
    correct,
    load_reward,
    problem_rewards,
)


def msgs(*texts: str) -> list[list[dict]]:
    """Completions in TRL's conversational format."""
    return [[{"role": "assistant", "content": t}] for t in texts]


def prompts(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": "Problem:\nWhat is 2 + 2?"}]] * n


# ---------------------------------------------------------------- built-ins


def test_closeness_designed_cases():
    def score(pred: str, gold: str) -> float:
        return closeness(msgs(f"so the answer is \\boxed{{{pred}}}."), answer=[gold])[0]

    assert score("57", "57") == 1.0
    assert score("\\frac{1}{2}", "0.5") == 1.0  # math-verify-equal, written differently
    assert score("1,000", "1000") == 1.0
    near, far = score("58", "57"), score("5700", "57")
    assert near == pytest.approx(math.exp(-1 / 57)) and 0.98 < near < 1.0
    assert 0.0 <= far < 1e-20
    assert score("60", "57") < near  # a nearer answer always scores higher
    assert score("-12", "-10") == pytest.approx(math.exp(-0.2))  # relative to |gold|
    assert score("10", "-10") == pytest.approx(math.exp(-2.0))  # the sign matters
    assert score("0.5", "0") == pytest.approx(math.exp(-0.5))  # absolute error below |gold| = 1
    assert score("\\frac{3}{4}", "1") == pytest.approx(math.exp(-0.25))  # a LaTeX fraction is a number
    assert score("x + 1", "57") == 0.0  # not a number
    assert score("50 + 8 = 58", "57") == near  # an equation: its right side
    assert score("\\sqrt{2}", "\\sqrt{2}") == 1.0  # non-numeric gold: equal ...
    assert score("\\sqrt{3}", "\\sqrt{2}") == 0.0  # ... or not, nothing in between
    assert score("2", "\\sqrt{2}") == 0.0
    assert closeness(msgs("57, no box"), answer=["57"]) == [0.0]
    assert closeness(["plain \\boxed{57}"], answer=["57"]) == [1.0]  # TRL's standard format too


def test_correct_builtin():
    assert correct(msgs("\\boxed{4}", "\\boxed{5}", "4"), answer=["4", "4", "4"]) == [1.0, 0.0, 0.0]


# ---------------------------------------------------------------- loading specs


def test_builtin_specs_keep_short_names():
    for name in ("correct", "closeness"):
        fn = load_reward(name)
        assert fn.__name__ == name
        assert fn(prompts(1), msgs("\\boxed{4}"), answer=["4"], id=["p"]) == [1.0]


USER_REWARD = '''
def length_reward(prompts, completions, answer, id, **kwargs):
    """Longer is better, and the columns come along."""
    assert len(prompts) == len(completions) == len(answer) == len(id)
    return [len(c[0]["content"]) / 10 if i != "skip" else None for c, i in zip(completions, id)]
'''


def test_user_reward_from_a_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_REWARD)
    fn = load_reward(f"{path}:length_reward")
    assert fn.__name__ == "length_reward" and "Longer is better" in fn.__doc__
    out = fn(prompts(3), msgs("abcd", "ab", "x"), answer=["1", "2", "3"], id=["p", "q", "skip"])
    assert out == [0.4, 0.2, None]


def test_user_reward_from_a_module(tmp_path, monkeypatch):
    (tmp_path / "catcli_test_user_rewards.py").write_text(USER_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = load_reward("catcli_test_user_rewards:length_reward")
    assert fn.__name__ == "length_reward"
    assert fn(prompts(1), msgs("abc"), answer=["1"], id=["p"]) == [pytest.approx(0.3)]


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("closenes", "not a built-in reward (correct, closeness)"),
        ("{tmp}/missing.py:f", "no such file"),
        ("{tmp}/broken.py:f", "cannot import"),
        ("{tmp}/ok.py:nope", "has no function 'nope' (it defines: f)"),
        ("{tmp}/ok.py:VALUE", "is not callable: VALUE = 3"),
        ("catcli_no_such_module_xyz:f", "cannot import catcli_no_such_module_xyz: ModuleNotFoundError"),
        ("rm:{tmp}/no_model_here", "no such directory"),
    ],
)
def test_specs_that_cannot_load_are_one_line_errors(tmp_path, spec, fragment):
    (tmp_path / "broken.py").write_text("import catcli_no_such_dependency_xyz\n")
    (tmp_path / "ok.py").write_text("VALUE = 3\n\ndef f(completions, **kw):\n    return [0.0] * len(completions)\n")
    spec = spec.format(tmp=tmp_path)
    with pytest.raises(RewardError) as info:
        load_reward(spec)
    message = str(info.value)
    assert info.value.exit_code == 2 and not isinstance(info.value, RewardFailure)
    assert message.startswith(f"reward {spec!r}") and fragment in message and "\n" not in message


# ---------------------------------------------------------------- checking results


def _reward_returning(value):
    def bad(prompts, completions, **kwargs):
        return value(completions) if callable(value) else value

    return bad


@pytest.mark.parametrize(
    "value, fragment",
    [
        (lambda cs: [0.0] * (len(cs) - 1), "returned 2 rewards for 3 completions on problem p7"),
        (lambda cs: [0.0, float("nan"), 0.0], "gave nan for completion 1 of problem p7"),
        (lambda cs: [0.0, 0.0, float("inf")], "gave inf for completion 2 of problem p7"),
        (lambda cs: ["high"] * len(cs), "gave 'high' for completion 0 of problem p7"),
        (lambda cs: 0.5, "returned a float on problem p7"),
        (lambda cs: "0.5,0.5,0.5", "returned a str on problem p7"),
        (lambda cs: 1 / 0, "raised ZeroDivisionError on problem p7: division by zero"),
    ],
)
def test_checked_names_the_reward_and_the_problem(value, fragment):
    fn = checked(_reward_returning(value), "user.py:bad")
    with pytest.raises(RewardFailure) as info:
        fn(prompts(3), msgs("a", "b", "c"), answer=["1"] * 3, id=["p7"] * 3)
    assert info.value.exit_code == 1
    assert str(info.value).startswith("reward 'user.py:bad' ") and fragment in str(info.value)


def test_checked_locates_an_item_in_a_batch_of_problems():
    fn = checked(_reward_returning(lambda cs: [1.0, 2.0, None, float("nan")]), "r")
    with pytest.raises(RewardFailure, match="gave nan for completion 1 of problem q:"):
        fn(prompts(4), msgs("a", "b", "c", "d"), id=["p", "p", "q", "q"])
    with pytest.raises(RewardFailure, match="raised KeyError: 'x'$"):  # several problems: none named
        checked(lambda **kw: {}["x"], "r")(prompts(2), msgs("a", "b"), id=["p", "q"])


def test_checked_accepts_none_and_any_real_and_keeps_the_name():
    import numpy as np

    def graded(prompts, completions, **kwargs):
        return [np.float64(0.5), None]

    fn = checked(graded, "spec:graded")
    assert fn.__name__ == "graded"
    assert fn(prompts(2), msgs("a", "b")) == [0.5, None]
    as_numpy = checked(lambda **kw: np.array([1, 2], dtype=np.float32), "np")
    assert as_numpy(prompts(2), msgs("a", "b")) == [1.0, 2.0]


# ---------------------------------------------------------------- weights and combining


def test_reward_weights_are_parsed_once_into_floats_and_counted_against_the_rewards():
    from catcli.config import EvalConfig, RLRunConfig, resolve

    cfg = resolve(EvalConfig, "eval", {}, {"reward": ["closeness", "correct"], "reward_weights": "1, 0.5"})
    assert cfg.reward_weights == (1.0, 0.5) and cfg.weights == [1.0, 0.5]
    assert EvalConfig(reward=("closeness", "correct")).weights == [1.0, 1.0]  # none given: all 1
    recipe = {"rl": {"reward": ["closeness"], "reward_weights": [2]}}  # a recipe may give a list
    assert resolve(RLRunConfig, "rl", recipe, {}).weights == [2.0]
    for flags, fragment in [
        ({"reward": ["closeness"], "reward_weights": "1,0.5"}, "has 2 weights for 1 --reward"),
        ({"reward": ["closeness", "correct"], "reward_weights": "1,x"}, "one number per --reward"),
        ({"reward": ["closeness"], "reward_weights": "nan"}, "finite"),
        ({"reward_weights": "1"}, "give at least one --reward"),
    ]:
        with pytest.raises(UsageError, match=fragment) as info:
            resolve(EvalConfig, "eval", {}, flags)
        assert info.value.exit_code == 2


def test_combine_is_a_weighted_nansum():
    columns = [[1.0, None, 0.5, None], [0.25, 2.0, None, None]]
    assert combine(columns, [1.0, 2.0]) == [1.5, 4.0, 0.5, 0.0]  # none applies: 0, as nansum
    assert combine(columns, [0.0, 1.0]) == [0.25, 2.0, 0.0, 0.0]


def test_problem_rewards_passes_trl_inputs_and_combines():
    seen = {}

    def spy(prompts, completions, **columns):
        seen.update(prompts=prompts, completions=completions, **columns)
        return [0.5] * len(completions)

    problems = [Problem(f"p{i}", f"{i} + 1 = ?", "", str(i + 1), 1, "Arithmetic") for i in range(2)]
    completions = [["\\boxed{1}", "\\boxed{7}", "no"], ["\\boxed{2}", "\\boxed{2.5}", "\\boxed{2}"]]
    out = problem_rewards([checked(spy, "spy"), load_reward("closeness")], [2.0, 1.0], problems, completions, "Box it.")
    assert out == [[2.0, 1.0 + math.exp(-6), 1.0], [2.0, 1.0 + math.exp(-0.25), 2.0]]
    assert seen["prompts"][0] == [{"role": "user", "content": "Problem:\n0 + 1 = ?\n\nBox it."}]
    assert seen["completions"][4] == [{"role": "assistant", "content": "\\boxed{2.5}"}]
    assert seen["id"] == ["p0"] * 3 + ["p1"] * 3 and seen["answer"][3] == "2" and seen["level"] == [1] * 6


# ---------------------------------------------------------------- a reward model


def _save_reward_model(path, num_labels: int = 1):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from catcli.builtin_models import embedded_checkpoint

    tok = AutoTokenizer.from_pretrained(embedded_checkpoint())
    tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        num_labels=num_labels,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForSequenceClassification(cfg).float().save_pretrained(path)
    tok.save_pretrained(path)


def test_reward_model_scores_each_completion_as_alone(tmp_path):
    _save_reward_model(tmp_path / "tiny-rm")
    fn = load_reward(f"rm:{tmp_path / 'tiny-rm'}")
    assert fn.__name__ == "tiny-rm"
    texts = ["\\boxed{4}", "Let me think step by step about this for a while. " * 6 + "\\boxed{5}", "4"]
    batch = fn(prompts(3), msgs(*texts), answer=["4"] * 3, id=["p"] * 3)
    assert len(batch) == 3 and all(isinstance(x, float) and math.isfinite(x) for x in batch)
    assert len(set(batch)) == 3  # a random head still tells the texts apart
    # right padding in a batch with a long text does not change a short text's score
    alone = fn(prompts(1), msgs(texts[0]), answer=["4"], id=["p"])
    assert alone[0] == pytest.approx(batch[0], abs=1e-5)


def test_reward_model_needs_one_label(tmp_path):
    _save_reward_model(tmp_path / "two", num_labels=2)
    with pytest.raises(RewardError, match="has 2 labels; a reward model has one") as info:
        load_reward(f"rm:{tmp_path / 'two'}")
    assert info.value.exit_code == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(RewardError, match="cannot load a reward model"):
        load_reward(f"rm:{tmp_path / 'empty'}")
