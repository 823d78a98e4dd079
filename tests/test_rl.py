"""CATGRPOTrainer: CAT weights on TRL's own advantages, checked on a tiny random Llama; `catcli rl` end to end."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch

from catcli import objectives
from catcli.objectives import parse_strategy
from conftest import run_cli, start_cli, tiny_llama, wait_for

pytestmark = pytest.mark.slow

M = 4  # rollouts per prompt


def _trainer(tmp_path, strategy: str, pattern: list[float], form: str = "raw", max_tokens: int = 6):
    from catcli.trainers.rl import _cat_grpo_trainer_class

    trainer_cls = _cat_grpo_trainer_class()
    from datasets import Dataset
    from trl import GRPOConfig

    model, tok = tiny_llama()
    tok.pad_token = tok.pad_token or tok.eos_token

    def stub_correctness(completions, **kwargs):  # column 0: the pattern, whatever was generated
        return list(pattern)

    rows = [
        {"prompt": [{"role": "user", "content": f"Problem:\nWhat is {i} + {i}?"}], "answer": str(2 * i)}
        for i in range(len(pattern) // M)
    ]
    args = GRPOConfig(
        output_dir=str(tmp_path / "ck"),
        per_device_train_batch_size=len(pattern),
        num_generations=M,
        max_completion_length=max_tokens,
        temperature=0.8,
        report_to=[],
        disable_tqdm=True,
        beta=0.0,
    )
    trainer = trainer_cls(
        model=model,
        reward_funcs=[stub_correctness],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        strategy=parse_strategy(strategy),
        form=form,
    )
    model.train()
    inputs = [row for row in rows for _ in range(M)]
    return trainer, model, inputs


def _vanilla(pattern):
    return objectives.group_advantages(torch.tensor(pattern).view(-1, M)).view(-1)


def test_grpo_advantages_are_trls_own_group_standardisation(tmp_path):
    pattern = [1, 0, 0, 0, 1, 1, 1, 0]
    trainer, _, inputs = _trainer(tmp_path, "grpo", pattern)
    out = trainer._generate_and_score_completions(inputs)
    torch.testing.assert_close(out["advantages"].double(), _vanilla(pattern), rtol=1e-5, atol=1e-6)


def test_maj_weights_scale_each_prompt_and_are_not_cancelled(tmp_path):
    pattern = [1, 0, 0, 0, 1, 1, 0, 0]  # success rates 1/4 and 2/4
    trainer, _, inputs = _trainer(tmp_path, "maj@4", pattern)
    out = trainer._generate_and_score_completions(inputs)
    keys = trainer._cat_keys
    correct = torch.tensor(pattern).view(-1, M).bool()
    c_max = torch.tensor(
        [
            max(
                [
                    sum(1 for k, ok in zip(keys[i * M : (i + 1) * M], correct[i]) if not ok and k == key)
                    for key in set(keys[i * M : (i + 1) * M])
                ]
                + [0]
            )
            for i in range(2)
        ]
    )
    ks = tuple(objectives.dynamic_k(4, int(c), M) for c in c_max)
    raw = torch.stack(
        [
            objectives.w_rl(
                parse_strategy("maj@4"), torch.log(torch.tensor((c + 1) / (M + 2), dtype=torch.float64)), k=k
            )
            for c, k in zip([1, 2], ks)
        ]
    ).clamp(max=10.0)
    w = (raw / raw.mean()).repeat_interleave(M)
    want = _vanilla(pattern) * w
    torch.testing.assert_close(out["advantages"].double(), want, rtol=1e-5, atol=1e-6)
    ratio = out["advantages"].double() / _vanilla(pattern)
    assert abs(ratio[0] - ratio[4]) > 0.05  # per-prompt scales differ: the gradient direction changes
    assert trainer.cat_window[-1]["ks"] == ks


def test_maj_all_wrong_penalty(tmp_path):
    pattern = [0, 0, 0, 0, 1, 0, 1, 0]
    trainer, _, inputs = _trainer(tmp_path, "maj@4:k=2", pattern)
    out = trainer._generate_and_score_completions(inputs)
    assert torch.allclose(out["advantages"][:M].double(), torch.full((M,), -0.5, dtype=torch.float64))
    assert (out["advantages"][M:] != 0).all()


def test_pass_weights_come_from_rollout_log_probs(tmp_path):
    pattern = [1, 0, 1, 0, 0, 1, 0, 0]
    trainer, model, inputs = _trainer(tmp_path, "pass@4", pattern, max_tokens=3)
    out = trainer._generate_and_score_completions(inputs)
    # independent sequence log-probs of the rollouts at the sampling temperature
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].double() / 0.8
    n_c = out["completion_ids"].shape[1]
    logp = torch.log_softmax(logits, -1)[:, -n_c:].gather(-1, out["completion_ids"].unsqueeze(-1)).squeeze(-1)
    seq = (logp * out["completion_mask"]).sum(-1)
    torch.testing.assert_close(trainer._rollout_seq_log_p(out), seq, rtol=1e-4, atol=1e-4)
    w = objectives.w_rl(parse_strategy("pass@4"), objectives.rollout_log_p(seq)).clamp(max=50.0)
    torch.testing.assert_close(out["advantages"].double(), _vanilla(pattern) * w, rtol=1e-5, atol=1e-6)


def test_rl_cli_runs_and_writes_outputs(tmp_path):
    out = tmp_path / "rl"
    r = run_cli(
        "rl",
        "--model",
        "smollm2-135m",
        "--data",
        "arith",
        "--strategy",
        "maj@4",
        "--num-generations",
        "4",
        "--max-steps",
        "2",
        "--prompts-per-step",
        "2",
        "--max-new-tokens",
        "24",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2]
    assert {"reward_mean", "frac_reward_zero_std", "weight_mean", "weight_min", "weight_max", "dynamic_k"} <= set(
        log[0]
    )
    run = json.loads((out / "run.json").read_text())
    assert run["global_step"] == 2 and run["strategy"] == "maj@4"
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_rl_killed_after_a_checkpoint_resumes_from_it(tmp_path):
    out = tmp_path / "rl"
    args = [
        "rl",
        "--model",
        "smollm2-135m",
        "--data",
        "arith",
        "--levels",
        "1",
        "--strategy",
        "maj@4",
        "--num-generations",
        "4",
        "--prompts-per-step",
        "1",
        "--max-steps",
        "3",
        "--max-new-tokens",
        "16",
        "--save-steps",
        "1",
        "--out",
        str(out),
    ]
    proc = start_cli(*args)
    wait_for(lambda: (out / "checkpoints" / "checkpoint-1" / "trainer_state.json").exists(), proc)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 3  # continued, never logged a step twice
