"""The CLI as a user meets it: exit codes, one-line errors, --json, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catcli.cli import main
from conftest import MATH_TRAIN, run_cli


def call(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command(capsys):
    code, out, _ = call(capsys, "--help")
    assert code == 0
    for name in ("sft", "rl", "eval", "score", "weights", "data", "compare", "plot"):
        assert f"  {name} " in out


def test_version(capsys):
    code, out, _ = call(capsys, "--version")
    assert code == 0 and out.startswith("catcli ")


@pytest.mark.skipif(not MATH_TRAIN.exists(), reason="needs ../shared/data/math/train.jsonl beside the checkout")
def test_data_show_counts_math_levels(capsys):
    code, out, _ = call(capsys, "data", "show", "--data", str(MATH_TRAIN), "--levels", "1-3", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["levels"] == {"1": 564, "2": 1348, "3": 1592}
    assert result["total"] == 564 + 1348 + 1592
    assert sum(result["subjects"].values()) == result["total"]


def test_weights_json_matches_closed_forms(capsys):
    from math import comb

    code, out, _ = call(capsys, "weights", "--strategy", "maj@8:k=3", "--p", "0.05,0.5,0.95", "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["strategy"], result["n"], result["k"]) == ("maj@8:k=3", 8, 3)
    for pt in result["points"]:
        p = pt["p"]
        tail = sum(comb(8, j) * p**j * (1 - p) ** (8 - j) for j in range(3, 9))
        w_sft = 3 * comb(8, 3) * p**3 * (1 - p) ** 5 / tail
        w_rl = 8 * comb(7, 2) * p**2 * (1 - p) ** 5
        assert pt["sft_weight"] == pytest.approx(w_sft, rel=1e-9)
        assert pt["rl_weight"] == pytest.approx(w_rl, rel=1e-9)


def test_weights_extremes_are_finite(capsys):
    code, out, _ = call(capsys, "weights", "--strategy", "pass@1024", "--p", "1e-300,0.5,0.999999", "--json")
    assert code == 0
    for pt in json.loads(out)["points"]:
        assert all(v == v and abs(v) != float("inf") for v in (pt["sft_weight"], pt["rl_weight"]))


def test_weights_log_form_and_plot(capsys, tmp_path):
    png = tmp_path / "w.png"
    code, out, _ = call(capsys, "weights", "--strategy", "pass@16", "--form", "log", "--json", "--plot", str(png))
    assert code == 0
    pts = json.loads(out)["points"]
    assert all(pt["rl_weight"] == pt["sft_weight"] for pt in pts)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _samples_file(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_grades_ungraded_lines_and_matches_estimators(capsys, tmp_path):
    from catcli.estimators import maj_at_k, pass_at_k

    rows = [
        {"id": "a", "answer": "1/2", "completions": ["\\boxed{0.5}", "\\boxed{3}", "\\boxed{\\frac12}", "none"]},
        {"id": "b", "answer": "7", "completions": ["\\boxed{6}", "\\boxed{6}", "\\boxed{7}", "\\boxed{8}"]},
    ]
    path = _samples_file(tmp_path, rows)
    code, out, _ = call(capsys, "score", str(path), "--k", "1,2,4", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["n_problems"] == 2
    want_pass2 = (pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 2
    want_maj2 = (
        maj_at_k(["h", "3", "h", None], [True, False, True, False], 2)
        + maj_at_k(["6", "6", "7", "8"], [False, False, True, False], 2)
    ) / 2
    assert result["metrics"]["pass@2"]["mean"] == pytest.approx(want_pass2)
    assert result["metrics"]["maj@2"]["mean"] == pytest.approx(want_maj2)
    assert set(result["metrics"]["pass@1"]) >= {"mean", "se", "ci"}


def test_compare_paired_difference(capsys, tmp_path):
    a = [{"id": str(i), "answer": "1", "completions": ["\\boxed{1}", "\\boxed{2}"]} for i in range(5)]
    b = [{"id": str(i), "answer": "1", "completions": ["\\boxed{1}", "\\boxed{1}"]} for i in range(5)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pa = _samples_file(tmp_path / "a", a)
    pb = _samples_file(tmp_path / "b", b)
    code, out, _ = call(capsys, "compare", str(pa), str(pb), "--k", "1,2", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["n_shared"] == 5
    assert result["diff"]["pass@1"]["mean"] == pytest.approx(0.5)
    assert result["diff"]["pass@2"]["mean"] == pytest.approx(0.0)


def _bad_samples(tmp_path: Path) -> dict[str, Path]:
    files = {}
    files["empty"] = tmp_path / "empty.jsonl"
    files["empty"].write_text("")
    files["nonutf8"] = tmp_path / "bin.jsonl"
    files["nonutf8"].write_bytes(b'{"answer": "\xff\xfe"}\n')
    files["nocol"] = _samples_file(tmp_path, [{"id": "x", "answer": "1"}])
    files["badjson"] = tmp_path / "bad.jsonl"
    files["badjson"].write_text(
        '{"answer": "1", "completions": ["a"]}\n{not json\n{"answer": "2", "completions": ["b"]}\n'
    )
    (tmp_path / "t").mkdir()
    files["wrongtype"] = _samples_file(tmp_path / "t", [{"answer": "1", "completions": "not a list"}])
    return files


BAD_DATA = [
    (["data", "show", "--data", "nowhere.jsonl"], 3, "does not exist"),
    (["data", "show", "--data", "nosuchsource"], 3, "unknown data source"),
    (["data", "show", "--data", "arith", "--levels", "7"], 3, "no problems"),
    (["data", "show", "--data", "arith", "--levels", "x-y"], 2, "invalid --levels"),
    (["data", "show", "--data", "arith", "--levels", "3-1"], 2, "is empty"),
    (["data", "show", "--data", "arith", "--limit", "0"], 2, "--limit"),
    (["data", "show", "--data", "arith", "--subjects", "Geometry"], 3, "no problems"),
    (["weights", "--strategy", "pass@0"], 2, "N must be at least 1"),
    (["weights", "--strategy", "maj@4:k=5"], 2, "k must be in 1..4"),
    (["weights", "--strategy", "foo@3"], 2, "invalid strategy"),
    (["weights", "--strategy", "pass@x"], 2, "invalid strategy"),
    (["weights", "--strategy", "bon@4", "--form", "log"], 2, "raw"),
    (["weights", "--strategy", "pass@4", "--form", "sqrt"], 2, "--form"),
    (["weights", "--strategy", "pass@4", "--p", "1.5"], 2, "[0, 1]"),
    (["weights", "--strategy", "pass@4", "--p", "abc"], 2, "invalid --p"),
    (["weights"], 2, "--strategy"),
    (["eval", "--k", "1,x"], 2, "invalid k list"),
    (["eval", "--k", "0,4"], 2, "invalid k list"),
    (["eval", "--k", "1,4", "--n", "2"], 2, "larger than --n"),
    (["eval", "--n", "-3"], 2, "--n must be at least 1"),
    (["eval", "--temperature", "0", "--n", "4", "--data", "arith"], 2, "--temperature 0 decodes greedily"),
    (["eval", "--temperature", "-1", "--data", "arith"], 2, "--temperature must be positive"),
    (["eval", "--frobnicate"], 2, "No such option"),
    (["eval", "--batch-size", "0"], 2, "--batch-size"),
    (["score", "missing.jsonl"], 3, "does not exist"),
    (["nosuchcommand"], 2, "No such command"),
]


def _assert_one_line(r, code: int, fragment: str) -> None:
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert fragment in lines[0] and lines[0].startswith("catcli: error: ")
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("argv,code,fragment", BAD_DATA, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_is_one_line_and_exit_code(tmp_path, argv, code, fragment):
    """Through the real CLI in a subprocess, with --out pointing at a directory that must stay absent."""
    out = tmp_path / "out"
    extra = ["--out", str(out)] if argv[0] == "eval" else []
    _assert_one_line(run_cli(*argv, *extra), code, fragment)
    assert not out.exists()


@pytest.mark.parametrize(
    "name,fragment",
    [
        ("empty", "is empty"),
        ("nonutf8", "not UTF-8"),
        ("nocol", "missing column"),
        ("badjson", "line 2"),
        ("wrongtype", "completions must be"),
    ],
)
def test_bad_samples_files(capsys, tmp_path, name, fragment):
    path = _bad_samples(tmp_path)[name]
    code, out, err = call(capsys, "score", str(path), "--k", "1")
    assert code == 3 and fragment in err and len(err.strip().splitlines()) == 1


def test_k_larger_than_samples_in_score(capsys, tmp_path):
    path = _samples_file(tmp_path, [{"id": "a", "answer": "1", "completions": ["\\boxed{1}", "x"]}])
    code, _, err = call(capsys, "score", str(path), "--k", "1,4")
    assert code == 2 and "larger than the 2 samples" in err


def test_bad_recipe(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[eval]\nlimt = 3\n")
    code, _, err = call(capsys, "eval", "--recipe", str(bad), "--data", "arith")
    assert code == 2 and "unknown recipe key eval.limt; did you mean 'limit'?" in err
    bad.write_text("[eval\n")
    code, _, err = call(capsys, "eval", "--recipe", str(bad))
    assert code == 2 and "not valid TOML" in err
    bad.write_text('[eval]\nn = "many"\n')
    code, _, err = call(capsys, "eval", "--recipe", str(bad))
    assert code == 2 and "eval.n must be int" in err


def test_out_is_a_file_or_non_empty(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = call(capsys, "eval", "--data", "arith", "--limit", "2", "--k", "1", "--out", str(f))
    assert code == 2 and "is a file" in err
    d = tmp_path / "full"
    d.mkdir()
    (d / "eval.json").write_text("{}")
    code, _, err = call(capsys, "eval", "--data", "arith", "--limit", "2", "--k", "1", "--out", str(d))
    assert code == 2 and "not empty" in err
    assert (d / "eval.json").read_text() == "{}"
    code, _, err = call(
        capsys, "eval", "--data", "arith", "--limit", "2", "--k", "1", "--out", str(d), "--resume", "--overwrite"
    )
    assert code == 2 and "contradict" in err


def test_unknown_model_is_one_line_exit_4(tmp_path):
    r = run_cli(
        "eval", "--model", "not-a-model", "--data", "arith", "--limit", "2", "--k", "1", "--out", str(tmp_path / "o")
    )
    assert r.returncode == 4, r.stderr
    assert "unknown model 'not-a-model'" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_backend_and_unknown_model_touch_no_output(capsys, tmp_path):
    out = tmp_path / "o"
    code, _, err = call(capsys, "eval", "--data", "arith", "--backend", "tpu", "--out", str(out))
    assert code == 2 and "--backend must be one of auto, hf, vllm" in err
    code, _, err = call(capsys, "eval", "--data", "arith", "--model", "nope", "--out", str(out))
    assert code == 4 and "unknown model" in err
    code, _, err = call(capsys, "sft", "--data", "arith", "--model", "nope", "--out", str(out))
    assert code == 4 and "unknown model" in err
    assert not out.exists()


def test_vllm_backend_without_gpu_is_a_usage_error(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "o"
    code, _, err = call(capsys, "eval", "--data", "arith", "--backend", "vllm", "--out", str(out))
    assert code == 2 and "--backend vllm needs a CUDA GPU" in err and not out.exists()


TRAIN_BAD = [
    (["sft", "--strategy", "maj@4:k=9", "--data", "arith"], "k must be in 1..4"),
    (["sft", "--target", "essay", "--data", "arith"], "--target must be one of answer, solution"),
    (["sft", "--reduction", "batch", "--data", "arith"], "--reduction must be one of"),
    (["sft", "--max-steps", "0", "--data", "arith"], "--max-steps must be at least 1"),
    (["sft", "--lr", "-1", "--data", "arith"], "--lr must be positive"),
    (["sft", "--report-to", "mlflow", "--data", "arith"], "--report-to must be one of"),
    (["rl", "--strategy", "maj@x", "--data", "arith"], "invalid strategy"),
    (["rl", "--strategy", "bon@4", "--form", "log", "--data", "arith"], "only the raw rank weight"),
    (["rl", "--num-generations", "1", "--data", "arith"], "--num-generations must be at least 2"),
    (["rl", "--form", "sqrt", "--data", "arith"], "--form must be one of raw, log"),
    (["rl", "--loss-type", "ppo", "--data", "arith"], "--loss-type must be one of"),
    (["rl", "--max-steps", "0", "--data", "arith"], "--max-steps must be at least 1"),
    (["rl", "--temperature", "0", "--data", "arith"], "--temperature must be positive"),
    (["rl", "--vllm", "--data", "arith"], "--vllm needs a CUDA GPU and the vllm package"),
    (["rl", "--method", "pkpo", "--strategy", "maj@4", "--data", "arith"], "pkpo does not apply to maj@4"),
    (
        ["rl", "--method", "passk", "--strategy", "pass@16", "--num-generations", "4", "--data", "arith"],
        "k = N = 16 <= M = 4",
    ),
    (["rl", "--method", "ppo", "--data", "arith"], "--method must be one of"),
    (["rl", "--optim", "sgd", "--data", "arith"], "--optim must be one of"),
    (["sft", "--lr-scheduler", "cyclic", "--data", "arith"], "--lr-scheduler must be one of"),
    (["sft", "--warmup-steps", "-1", "--data", "arith"], "--warmup-steps must be >= 0"),
    (["sft", "--eval-every", "2", "--data", "arith"], "--eval-every needs --eval-data"),
    (["sft", "--eval-data", "arith", "--eval-k", "1,8", "--eval-n", "4", "--data", "arith"], "--eval-k 8 is larger"),
    (["rl", "--eval-data", "arith", "--eval-every", "0", "--data", "arith"], "--eval-every must be at least 1"),
    (["sft", "--p-every", "0", "--data", "arith"], "--p-every must be at least 1"),
    (["sft", "--p-temperature", "0", "--data", "arith"], "--p-temperature must be positive"),
    (["sft", "--p-estimate", "often", "--data", "arith"], "--p-estimate must be one of sequence, success"),
]


@pytest.mark.parametrize("argv,fragment", TRAIN_BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_training_bad_flags(tmp_path, argv, fragment):
    out = tmp_path / "out"
    _assert_one_line(run_cli(*argv, "--out", str(out)), 2, fragment)
    assert not out.exists()


def test_evaluation_problems_that_cannot_load_stop_training_before_it_starts(tmp_path):
    out = tmp_path / "out"
    r = run_cli("sft", "--data", "arith", "--eval-data", str(tmp_path / "none.jsonl"), "--out", str(out))
    _assert_one_line(r, 3, "does not exist")
    assert not out.exists()


def test_a_shell_that_sets_hf_transfer_still_gets_one_line(tmp_path):
    """huggingface_hub 1.33 warns on import when HF_HUB_ENABLE_HF_TRANSFER is set, as HF's docs once
    told users to (and Unsloth does, in every process it is imported into): catcli drops that warning."""
    args = ("sft", "--data", "arith", "--eval-data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "out"))
    shown = run_cli(*args, env={"HF_HUB_ENABLE_HF_TRANSFER": "1", "CATCLI_DEBUG": "1"})
    if "HF_HUB_ENABLE_HF_TRANSFER" not in shown.stderr:
        pytest.skip("this huggingface_hub does not warn about HF_HUB_ENABLE_HF_TRANSFER")
    _assert_one_line(run_cli(*args, env={"HF_HUB_ENABLE_HF_TRANSFER": "1"}), 3, "does not exist")


def _help_blocks(capsys, command: str) -> dict[str, str]:
    """--help of COMMAND as {first flag: the option's help text joined onto one line}."""
    assert main([command, "--help"]) == 0
    blocks: dict[str, list[str]] = {}
    key = None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  --"):
            key = line.split()[0]
            blocks[key] = [line]
        elif key and line.startswith("   "):
            blocks[key].append(line)
        else:
            key = None
    return {k: " ".join(part.strip() for part in v) for k, v in blocks.items()}


@pytest.mark.parametrize("command", ["sft", "rl", "eval"])
def test_help_shows_every_option_with_its_dataclass_default(capsys, command):
    import dataclasses
    import re

    from catcli.config import EvalConfig, RLRunConfig, SFTRunConfig
    from catcli.strategy import Strategy

    cls = {"sft": SFTRunConfig, "rl": RLRunConfig, "eval": EvalConfig}[command]
    blocks = _help_blocks(capsys, command)
    squash = lambda text: re.sub(r"\s+", "", text)  # noqa: E731 - help text wraps anywhere
    for f in dataclasses.fields(cls):
        flag = (f.metadata["flag"] or "--" + f.name.replace("_", "-")).split("/")[0]
        assert flag in blocks, f"{command} --help lacks {flag}"
        shown = re.search(r"\[default: (.*)\]$", blocks[flag])
        if f.metadata["shown"]:
            assert shown and squash(shown.group(1)) == squash(f.metadata["shown"]), blocks[flag]
        elif f.default is None or f.default is False or f.default == ():
            assert shown is None, blocks[flag]
        else:
            assert shown, f"{flag} shows no default"
            text, want = squash(shown.group(1)), f.default
            if isinstance(want, tuple):
                got = tuple(type(want[0])(v) for v in text.split(","))
            elif isinstance(want, Strategy):
                got, want = text, str(want)
            else:
                got = type(want)(text) if not isinstance(want, str) else text
                want = squash(want) if isinstance(want, str) else want
            assert got == want, f"{flag}: help says {text}, the field says {f.default}"


def test_a_recipes_true_can_be_turned_off_and_its_k_list_is_checked_as_typed(capsys, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[sft]\nhybrid = true\nsave_merged = true\neval_data = "arith"\neval_k = [4, 1]\n')
    assert main(["sft", "--recipe", str(recipe), "--no-hybrid", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)["sft"]
    assert cfg["hybrid"] is False and cfg["save_merged"] is True and cfg["eval_k"] == [1, 4]
    recipe.write_text("[eval]\nk = [1, 4, 4]\n")
    code, _, err = call(capsys, "eval", "--recipe", str(recipe))
    assert code == 2 and "a k is repeated" in err


def test_a_resumed_training_run_must_keep_its_settings(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    config = {"strategy": "pass@4", "data": "arith", "max_steps": 2}
    (out / "run.json").write_text(json.dumps({"config": config}))
    args = ("sft", "--data", "arith", "--out", str(out), "--resume")
    r = run_cli(*args, "--strategy", "maj@4")
    _assert_one_line(r, 2, "--resume of")
    assert "different strategy" in r.stderr and json.loads((out / "run.json").read_text()) == {"config": config}
