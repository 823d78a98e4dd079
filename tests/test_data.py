"""Data sources, filters and prompts."""

from __future__ import annotations

import json

import pytest

from catcli.data import Problem, fingerprint, generate_arith, load_file, load_problems, parse_levels, select
from catcli.errors import DataError, UsageError
from catcli.grading import grade_completion
from catcli.prompts import build_prompt, build_target, user_message
from conftest import MATH_TRAIN


@pytest.mark.skipif(not MATH_TRAIN.exists(), reason="needs ../shared/data/math/train.jsonl beside the checkout")
def test_local_math_file_loads_all_records_with_int_levels():
    probs = load_file(MATH_TRAIN)
    assert len(probs) == 7496
    assert {p.level for p in probs} == {1, 2, 3, 4, 5}
    assert probs[0].id == "train/algebra/0.json" and probs[0].answer == "0"


def test_answer_derived_from_last_box_and_level_strings(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(
        json.dumps(
            {
                "problem": "p",
                "solution": "x \\boxed{1} then \\boxed{\\frac{2}{3}}",
                "level": "Level 2",
                "type": "Algebra",
            }
        )
        + "\n"
    )
    (p,) = load_file(path)
    assert p.answer == "\\frac{2}{3}" and p.level == 2 and p.subject == "Algebra"


def test_json_and_parquet_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"problem": "1+1", "answer": "2", "level": 1, "subject": "A", "unique_id": "u1"}]
    (tmp_path / "m.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    for name in ("m.json", "m.parquet"):
        (p,) = load_problems(str(tmp_path / name))
        assert (p.id, p.answer, p.level) == ("u1", "2", 1)


@pytest.mark.parametrize(
    "content,fragment",
    [
        ('{"problem": "p", "level": 1}\n', "missing column(s) answer or solution"),
        ('{"answer": "1", "level": 1}\n', "missing column(s) problem"),
        ('{"problem": "p", "answer": "1", "level": "hard"}\n', "level must be"),
        ('{"problem": 3, "answer": "1", "level": 1}\n', "'problem' must be a string"),
        ('{"problem": "p", "solution": "no box", "level": 1}\n', "no \\boxed{}"),
        ('{"problem": "p", "solution": "so $\\\\boxed{}$", "level": 1}\n', "\\boxed{} is empty"),
        ('{"problem": "p", "solution": "$\\\\boxed{1}$", "level": "Level ?"}\n', "got 'Level ?'"),
        ("", "holds no records"),
        ("[1, 2]\n", "expected a JSON object"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, content, fragment):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_file(path)
    assert fragment in str(info.value)


def _hub_rows(subject: str, bad: bool) -> list[dict]:
    """Rows as EleutherAI/hendrycks_math has them; `bad` adds the kinds its train split holds."""
    rows = [{"problem": f"{subject} {i}", "level": "Level 2", "type": subject, "solution": f"$\\boxed{{{i}}}$"}
            for i in range(3)]  # fmt: skip
    if bad:
        rows[1:1] = [
            {"problem": "q", "level": "Level ?", "type": subject, "solution": "$\\boxed{5}$"},
            {"problem": "r", "level": "Level ?", "type": subject, "solution": "$\\boxed{6}$"},
            {"problem": "s", "level": "Level 5", "type": subject, "solution": "so $\\boxed{}$."},
        ]
    return rows


def _fake_hub(monkeypatch, rows_for):
    """datasets.load_dataset answering with rows_for(subject) as a local Dataset (no network)."""
    import datasets

    def load_dataset(name, config, split):
        assert (name, split) == ("EleutherAI/hendrycks_math", "train")
        return datasets.Dataset.from_list(rows_for(config))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_hub_math_skips_malformed_rows_and_says_how_many(monkeypatch, capsys):
    _fake_hub(monkeypatch, lambda subject: _hub_rows(subject, bad=subject in ("geometry", "number_theory")))
    probs = load_problems("math", "train")
    assert len(probs) == 7 * 3 and {p.problem for p in probs}.isdisjoint({"q", "r", "s"})
    assert probs[4] == Problem("math/train/4", "counting_and_probability 1", "$\\boxed{1}$", "1", 2,
                               "counting_and_probability")  # fmt: skip
    assert probs[7].id == "math/train/10"  # ids number every row: a skip renames no problem
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "catcli: skipped 6 malformed MATH train rows (4 with level 'Level ?', 2 with an empty \\boxed{} answer)"
    ]


def test_hub_math_with_only_malformed_rows_is_an_error(monkeypatch):
    _fake_hub(monkeypatch, lambda subject: _hub_rows(subject, bad=True)[1:4])
    with pytest.raises(DataError, match="all 21 MATH train rows from the hub are malformed"):
        load_problems("math", "train")


def test_non_utf8_and_wrong_suffix(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match="not UTF-8"):
        load_file(bad)
    readme = tmp_path / "README.md"
    readme.write_text("# not data\n")
    with pytest.raises(DataError, match="use a .jsonl"):
        load_file(readme)


def test_parse_levels():
    assert parse_levels("1-3") == {1, 2, 3}
    assert parse_levels("1,4-5") == {1, 4, 5}
    for bad in ("", "a", "3-1", "1-"):
        with pytest.raises(UsageError):
            parse_levels(bad)


@pytest.mark.skipif(not MATH_TRAIN.exists(), reason="needs ../shared/data/math/train.jsonl beside the checkout")
def test_select_filters_limit_is_seeded_and_empty_is_an_error():
    probs = load_file(MATH_TRAIN)
    a = select(probs, levels=frozenset({1}), subjects=["algebra"], limit=10, seed=3)
    b = select(probs, levels=frozenset({1}), subjects=["algebra"], limit=10, seed=3)
    c = select(probs, levels=frozenset({1}), subjects=["algebra"], limit=10, seed=4)
    assert a == b and a != c and len(a) == 10
    assert all(p.level == 1 and p.subject == "Algebra" for p in a)
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    with pytest.raises(DataError, match="no problems"):
        select(probs, levels=frozenset({9}))


def test_arith_is_seeded_graded_and_splits_are_disjoint():
    train, test = generate_arith("train"), generate_arith("test")
    assert generate_arith("train") == train
    assert generate_arith("train", seed=1) != train
    assert {p.problem for p in train}.isdisjoint({p.problem for p in test})
    assert len(test) == 1500 and {p.level for p in test} == {1, 2, 3}
    for p in train[::97]:
        assert grade_completion(p.answer, p.solution)
        assert eval(p.problem.split("$")[1].replace("\\times", "*")) == int(p.answer)


class _Tok:
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt and len(messages) == 1
        return f"<user>{messages[0]['content']}</user><assistant>"


def test_prompt_is_one_user_turn_in_the_papers_format():
    p = generate_arith("test")[0]
    assert user_message(p).startswith(f"Problem:\n{p.problem}\n\n")
    assert user_message(p, "") == f"Problem:\n{p.problem}"
    assert build_prompt(_Tok(), p) == f"<user>{user_message(p)}</user><assistant>"
    assert build_target(p, "answer") == f"\\boxed{{{p.answer}}}"
    assert build_target(p, "solution") == p.solution
