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


def test_sft_on_two_processes_writes_once(tmp_path):
    out = tmp_path / "sft"
    r = launch2(
        "sft",
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
