"""Two CPU processes under torchrun: eval shards problems and matches one process; sft trains data-parallel.

`accelerate launch --cpu --num_processes 2` starts a single process unless given an MPI hostfile,
so the tests launch with torchrun, which accelerate's state (cpu=True) reads as MULTI_CPU.
torchrun's own parser claims abbreviations such as --n, so eval's sample count goes in a recipe.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow


def launch2(*args: str, port: int) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        "-m",
        "catcli",
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)


def test_eval_on_two_processes_equals_one(tmp_path):
    recipe = tmp_path / "eval.toml"
    recipe.write_text("[eval]\nn = 2\nk = [1, 2]\n")
    args = [
        "eval",
        "--recipe",
        str(recipe),
        "--model",
        "smollm2-135m",
        "--data",
        "arith",
        "--limit",
        "4",
        "--max-new-tokens",
        "12",
        "--batch-size",
        "1",
        "--seed",
        "3",
    ]
    one = run_cli(*args, "--out", str(tmp_path / "one"), "--json")
    assert one.returncode == 0, one.stderr[-2000:]
    two = launch2(*args, "--out", str(tmp_path / "two"), "--json", port=29611)
    assert two.returncode == 0, two.stderr[-3000:]
    (line,) = two.stdout.strip().splitlines()  # rank 0 alone reports
    assert json.loads(line)["metrics"] == json.loads(one.stdout)["metrics"]
    rows = {json.loads(x)["id"]: json.loads(x)["completions"] for x in (tmp_path / "two" / "samples.jsonl").open()}
    ref = {json.loads(x)["id"]: json.loads(x)["completions"] for x in (tmp_path / "one" / "samples.jsonl").open()}
    assert rows == ref
    assert not list((tmp_path / "two").glob("samples.part*"))


def test_sft_on_two_processes_writes_once_and_evaluates_as_eval_shards(tmp_path):
    recipe = tmp_path / "eval.toml"  # torchrun would take --eval-n for one of its own flags
    recipe.write_text('[sft]\neval_data = "arith"\neval_limit = 6\neval_n = 2\neval_k = [1, 2]\n'
                      "eval_max_new_tokens = 8\neval_batch_size = 2\n")  # fmt: skip
    out = tmp_path / "sft"
    r = launch2(
        "sft",
        "--recipe",
        str(recipe),
        "--model",
        "smollm2-135m",
        "--data",
        "arith",
        "--max-steps",
        "2",
        "--batch-size",
        "1",
        "--grad-accum",
        "1",
        "--out",
        str(out),
        port=29612,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # one writer
    run = json.loads((out / "run.json").read_text())
    assert run["global_step"] == 2 and run["effective_batch"] == 2  # 1 sequence x 1 accumulation x 2 processes
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    # the final evaluation, its 3 chunks sampled by two processes and gathered, is one process's eval
    (row,) = [json.loads(line) for line in (out / "eval_log.jsonl").read_text().splitlines()]
    ev = run_cli("eval", "--model", str(out), "--data", "arith", "--limit", "6", "--n", "2", "--k", "1,2",
                 "--max-new-tokens", "8", "--batch-size", "2", "--out", str(tmp_path / "eval"), "--json")  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert row["step"] == 2 and row["metrics"] == json.loads(ev.stdout)["metrics"]
