"""The path users train on: the real CLI on a CUDA GPU, where Unsloth rewrites TRL's trainers.

Skipped without a GPU (conftest). `make gpu-check` runs these and the GPU benchmarks in parts
that fit one GPU lease (bench/gpu_check.py). The model
is a random-init Qwen2 built from a config with the tokenizer in tests/fixtures, so a GPU
machine needs neither the embedded GGUF nor a download. Each test asserts what its CPU twin
does, plus the arguments the trainer resolved (read back after Unsloth's rewrite).
"""

from __future__ import annotations

import json
import math
import sys

import pytest

from conftest import ROOT, run_cli

sys.path.insert(0, str(ROOT / "bench"))

pytestmark = pytest.mark.gpu

ARITH = ("--data", "arith", "--levels", "1-3", "--limit", "16")


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    from random_model import random_checkpoint

    return str(random_checkpoint("qwen2-tiny", home=tmp_path_factory.mktemp("home")))


def _log(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _sft(model, out, *args):
    r = run_cli("sft", "--model", model, *ARITH, "--max-steps", "2", "--batch-size", "2", "--grad-accum", "1",
                "--lr", "1e-4", "--out", str(out), *args)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return _log(out), json.loads((out / "run.json").read_text())


@pytest.mark.parametrize(
    "strategy, extra",
    [("ce", ()), ("pass@16", ()), ("maj@16:k=4", ("--target", "solution")), ("pass@4", ("--hybrid",))],
    ids=["ce", "pass@16", "maj@16:k=4-solution", "pass@4-hybrid"],
)
def test_sft_on_gpu(qwen2, tmp_path, strategy, extra):
    log, run = _sft(qwen2, tmp_path / "sft", "--strategy", strategy, *extra)
    assert [row["step"] for row in log] == [1, 2]
    assert all(math.isfinite(row["loss"]) for row in log)
    upper = {"ce": 1.0, "pass@16": 1.0, "maj@16:k=4": 4.0, "pass@4": 1.0}[strategy]
    assert all(0 <= row["weight_min"] <= row["weight_max"] <= upper + 1e-9 for row in log)
    held = run["trainer_args"]
    assert held["optim"] == "adamw_torch" and held["lr_scheduler_type"] == "linear" and held["warmup_steps"] == 0
    assert (tmp_path / "sft" / "adapter" / "adapter_model.safetensors").exists()


def test_sft_from_an_adapter_and_merged_on_gpu(qwen2, tmp_path):
    _sft(qwen2, tmp_path / "warmup", "--strategy", "ce")
    warmup = ("--init-adapter", str(tmp_path / "warmup"))
    log, run = _sft(qwen2, tmp_path / "branch", *warmup, "--strategy", "pass@4", "--save-merged")
    assert all(math.isfinite(row["loss"]) for row in log)
    assert run["trainer_args"]["optim"] == "adamw_torch"
    assert (tmp_path / "branch" / "merged" / "config.json").exists()
    r = run_cli("sft", "--model", qwen2, *ARITH, *warmup, "--lora-r", "4", "--out", str(tmp_path / "refused"))
    assert r.returncode == 2 and "cannot apply beside --init-adapter" in r.stderr


@pytest.mark.parametrize("strategy", ["grpo", "pass@4", "maj@4", "bon@4"])
def test_rl_on_gpu_with_prompts_of_different_lengths(qwen2, tmp_path, strategy):
    out = tmp_path / "rl"
    r = run_cli("rl", "--model", qwen2, *ARITH, "--strategy", strategy, "--num-generations", "4",
                "--prompts-per-step", "2", "--max-steps", "2", "--max-new-tokens", "16", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    log = _log(out)
    assert [row["step"] for row in log] == [1, 2]
    assert all(math.isfinite(row["loss"]) for row in log)
    if strategy == "pass@4":
        assert all(0 < row["weight_min"] <= row["weight_max"] <= 50.0 for row in log)
    held = json.loads((out / "run.json").read_text())["trainer_args"]
    # what Unsloth's GPU GRPOConfig would change unless catcli pins it
    assert held["scale_rewards"] == "group" and held["trainer.scale_rewards"] == "group"
    assert held["optim"] == "adamw_torch" and held["lr_scheduler_type"] == "constant" and held["warmup_steps"] == 0
    assert held["trainer.loss_type"] == "dr_grpo" and held["trainer.beta"] == 0.0


def test_rollout_log_probs_on_gpu_match_each_rollout_scored_alone(qwen2):
    """Unsloth replaces TRL's log-prob method on CUDA; catcli's own forward must still line up,
    on a LoRA model switched to training as GRPO leaves it (Unsloth's fast paths differ by mode)."""
    import torch
    from unsloth import FastLanguageModel

    from catcli.config import RLRunConfig
    from catcli.models import load_model
    from catcli.trainers.rl import completion_log_probs

    model, tok = load_model(qwen2, load_in_4bit=False, lora=RLRunConfig.LORA_DEFAULT)
    FastLanguageModel.for_training(model)
    tok.padding_side = "left"
    prompts = tok(["1 + 1 =", "What is 12 + 30? Answer in one line, please."], return_tensors="pt", padding=True)
    completion = torch.tensor([[16, 17, 2, 2], [18, 19, 20, 21]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    dev = model.device
    got = completion_log_probs(model, prompts["input_ids"].to(dev), prompts["attention_mask"].to(dev),
                               completion.to(dev), mask.to(dev), temperature=0.8, batch_size=2)  # fmt: skip
    for i in range(2):
        p = prompts["input_ids"][i][prompts["attention_mask"][i].bool()]
        c = completion[i][mask[i].bool()]
        with torch.no_grad():
            logits = model(input_ids=torch.cat([p, c]).unsqueeze(0).to(dev)).logits[0, :-1].float() / 0.8
        want = torch.log_softmax(logits, -1)[-len(c) :].gather(-1, c.to(dev).unsqueeze(-1)).sum().double().cpu()
        torch.testing.assert_close(got[i], want, rtol=2e-2, atol=2e-2)  # bf16 forward


def test_eval_sampler_on_gpu_equals_plain_generate(qwen2):
    """catcli's decoding loop on Unsloth's inference path against `generate` on each prompt alone:
    greedy, on a head sharpened so each argmax wins by a wide margin (a tie broken differently by
    another kernel would not be a bug), for prompts of different lengths (left padding)."""
    import torch
    from unsloth import FastLanguageModel

    from catcli.models import load_model
    from catcli.samples import SamplingSettings, sample_completions

    model, tok = load_model(qwen2, load_in_4bit=False)
    FastLanguageModel.for_inference(model)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8)
    prompts = ["Problem:\nWhat is $12 + 7$?", "Problem:\nWhat is $3 \\times 41$? Think step by step, then answer."]
    ours = sample_completions(model, tok, prompts, SamplingSettings(n=2, temperature=0.0, max_new_tokens=12), seed=0)
    for prompt, completions in zip(prompts, ours):
        enc = tok([prompt], return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id)
        want = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        assert [c.text for c in completions] == [want, want]


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_eval_on_gpu(qwen2, tmp_path, backend):
    if backend == "vllm":
        pytest.importorskip("vllm")
    out = tmp_path / "eval"
    r = run_cli("eval", "--model", qwen2, *ARITH, "--n", "4", "--k", "1,2,4", "--max-new-tokens", "16",
                "--backend", backend, "--out", str(out), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert result["n_problems"] == 16 and {"pass@4", "maj@4"} <= set(result["metrics"])


def test_four_bit_training_step_holds_less_gpu_memory(tmp_path):
    """bench/memory.py on a Qwen2.5-0.5B-shaped model: 4-bit base weights against 16-bit."""
    r = run_cli_bench("memory.py", "--steps", "1", "--batch-size", "2")
    shapes = r["shapes"]["0.5b"]["arms"]
    assert shapes["4bit_bf16"]["peak_cuda_allocated_mib"] < shapes["16bit_bf16"]["peak_cuda_allocated_mib"]


def run_cli_bench(script: str, *args: str) -> dict:
    import subprocess

    r = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                       cwd=ROOT, timeout=1800)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_rl_with_vllm_rollouts_reads_the_samplers_log_probs(qwen2, tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "rl"
    r = run_cli("rl", "--model", qwen2, *ARITH, "--strategy", "pass@4", "--vllm", "--num-generations", "4",
                "--prompts-per-step", "2", "--max-steps", "2", "--max-new-tokens", "16", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    held = json.loads((out / "run.json").read_text())["trainer_args"]
    assert held["use_vllm"] is True and held["trainer.scale_rewards"] == "group"
    assert all(0 < row["weight_min"] <= row["weight_max"] <= 50.0 for row in _log(out))
