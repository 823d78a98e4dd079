from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

# Before anything loads torch's OpenMP: its threads spin ~300k times at each barrier before they
# sleep, so beside another CPU-heavy job on 2 cores every parallel op waits on a descheduled
# spinner: two such processes ran a loop of small matmuls 17x slower each than alone. With 10k
# spins it costs nothing alone and 4x side by side (2x is a fair share). CLI subprocesses inherit it.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# One OpenMP thread per process: the suite is mostly short processes on a tiny model, and beside a
# one-thread job on 2 cores a fresh clone's make test took 1,982 s against 3,239 s at two (2026-12-06).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Unsloth loads a CPU model in bfloat16 where the CPU computes it (AVX512-BF16 / AMX), else in
# float32: pinned, so a test's outcome does not depend on which CPU runs it. The bf16 path has
# its own test (test_bench.py's eval_throughput case).
os.environ["UNSLOTH_CPU_BF16"] = "0"

ROOT = Path(__file__).resolve().parents[1]
MATH_TRAIN = ROOT.parent / "shared" / "data" / "math" / "train.jsonl"


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def run_cli(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real `catcli` in a subprocess, as a user's shell script would call it."""
    return subprocess.run(
        [sys.executable, "-m", "catcli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def start_cli(*args: str):
    """`catcli` as a background process in its own session (so a test can signal or kill it).

    SIGINT is reset to its default in the child, as a shell does for a foreground command: a
    suite started as a background job (`make test &` in a script, some CI launchers) inherits
    SIGINT ignored, Python keeps it ignored, and Ctrl-C tests would then wait on a run that
    never sees the signal.
    """
    import signal

    return subprocess.Popen(
        [sys.executable, "-m", "catcli", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(predicate, proc, timeout: float = 900) -> None:
    """Poll until predicate() holds; fail if the process ends first or time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"process ended (rc {proc.returncode}) before the awaited state: {proc.stderr.read()[-2000:]}"
            )
        time.sleep(0.3)
    raise AssertionError("timed out waiting")


@pytest.fixture(scope="session")
def boxing_adapter(tmp_path_factory):
    """A few answer-only CE steps: enough for the embedded model to box its answers (it rarely does
    untrained) and be right now and then, so that graded rewards and success rates have something
    to grade. One per session: RL and SFT tests start from it."""
    out = tmp_path_factory.mktemp("warmup") / "sft"
    r = run_cli("sft", "--model", "smollm2-135m", "--data", "arith", "--levels", "1", "--limit", "64",
                "--max-steps", "12", "--batch-size", "8", "--grad-accum", "1", "--lr", "3e-4", "--no-load-in-4bit",
                "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def tiny_llama():
    """A 2-layer random Llama with the embedded model's tokenizer: (model, tokenizer), seeded."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from catcli.builtin_models import embedded_checkpoint

    tok = AutoTokenizer.from_pretrained(embedded_checkpoint())
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(cfg).float(), tok
