"""CATSFTTrainer on a tiny random Llama against independent oracles, and `catcli sft` end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from catcli import objectives
from catcli.objectives import parse_strategy
from conftest import ROOT, run_cli, start_cli, tiny_llama, wait_for

pytestmark = pytest.mark.slow


def _tiny_trainer(tmp_path, strategy: str, reduction: str, rows: list[tuple[str, str]], hybrid: bool = False):
    """The trainer `catcli sft` builds, on a tiny random Llama and these (prompt, target) rows; one batch of all."""
    from datasets import Dataset

    from catcli.config import SFTRunConfig
    from catcli.trainers.sft import build_trainer

    model, tok = tiny_llama()
    data = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": c}]}
            for p, c in rows
        ]
    )
    cfg = SFTRunConfig(
        strategy=parse_strategy(strategy),
        reduction=reduction,
        hybrid=hybrid,
        batch_size=len(rows),
        grad_accum=1,
        max_steps=1,
        out=tmp_path / "run",
    )
    trainer = build_trainer(cfg, model=model, tokenizer=tok, dataset=data)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    return trainer, model, batch


def _reference_seq_log_p(model, batch):
    """Summed completion log-prob per sequence from full logits (no fused head), float64."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logp = torch.log_softmax(out.logits.double(), -1)[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    tok = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (tok * mask).sum(-1), mask.sum()


ROWS = [("What is 2+2?", "\\boxed{4}"), ("Name a prime.", "The prime \\boxed{7} is a prime number.")]


@pytest.mark.parametrize("strategy", ["ce", "pass@4", "maj@8:k=3", "pass@1000000"])
def test_trainer_loss_equals_objectives_on_the_same_batch(tmp_path, strategy):
    trainer, model, batch = _tiny_trainer(tmp_path, strategy, "sequence", ROWS)
    loss = trainer.compute_loss(model, dict(batch))
    seq_log_p, _ = _reference_seq_log_p(model, batch)
    want = objectives.sft_loss(parse_strategy(strategy), seq_log_p).mean()
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-5)


def test_ce_gradient_is_summed_token_nll(tmp_path):
    trainer, model, batch = _tiny_trainer(tmp_path, "ce", "token", ROWS)
    n_tokens = (batch["labels"][:, 1:] != -100).sum()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_tokens)
    grads = torch.autograd.grad(loss, [p for p in model.parameters()])
    hf_loss = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss  # HF's own token-mean CE
    hf_grads = torch.autograd.grad(hf_loss, [p for p in model.parameters()])
    torch.testing.assert_close(loss, hf_loss, rtol=1e-5, atol=1e-6)
    for g, h in zip(grads, hf_grads):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-7)


def test_pass_n_scales_each_sample_gradient_by_its_w_sft(tmp_path):
    # choose N so that N p is O(1) for these sequences: then w_SFT is far from 1 and differs between them
    rows = [("What is 2+2?", "\\boxed{4}"), ("What is 1234+1?", "\\boxed{1235} is the sum")]
    _, model0, batch0 = _tiny_trainer(tmp_path, "ce", "sequence", rows)
    lp, _ = _reference_seq_log_p(model0, batch0)
    n = int(torch.exp(-lp.max()).item())  # N p = 1 for the likelier sequence: w ~ 0.58 there, ~ 1 for the other
    strategy = f"pass@{n}"
    ws = []
    for row in rows:
        trainer, model, batch = _tiny_trainer(tmp_path, strategy, "sequence", [row])
        params = [p for p in model.parameters()]
        loss = trainer.compute_loss(model, dict(batch))
        g_cat = torch.autograd.grad(loss, params)
        seq_log_p, _ = _reference_seq_log_p(model, batch)
        w = objectives.w_sft(parse_strategy(strategy), seq_log_p)
        g_nll = torch.autograd.grad(-seq_log_p.sum(), params)
        for a, b in zip(g_cat, g_nll):
            torch.testing.assert_close(a.double(), w.item() * b.double(), rtol=1e-3, atol=1e-7)
        ws.append(w.item())
    assert 0 < min(ws) < 0.9 * max(ws) <= 1.0  # different p, visibly different weights


def test_pairwise_token_loss_formula():
    import math

    gold = torch.tensor([2.0, -1.0], dtype=torch.float64)
    rivals = torch.tensor([[1.0, 3.0], [0.0, -4.0]], dtype=torch.float64)
    got = objectives.pairwise_token_loss(gold, rivals)
    want = [sum(math.log1p(math.exp(-(g - r))) for r in row) / 2 for g, row in zip(gold.tolist(), rivals.tolist())]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


def test_rivals_never_pick_the_gold_token():
    from catcli.trainers.sft import sample_rivals

    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 9.0, 0.0]])
    rivals = sample_rivals(logits.repeat(200, 1), torch.tensor([0, 1]).repeat(200), k=4)
    assert (rivals[0::2] != 0).all() and (rivals[1::2] != 1).all()


def test_rivals_are_drawn_when_every_other_probability_underflows():
    # exp(-200) underflows in float32: zeroing the gold probability after the softmax leaves an
    # all-zero row and multinomial raises; masking the gold logit first keeps the rivals' shape
    from catcli.trainers.sft import sample_rivals

    logits = torch.tensor([[200.0, 0.0, 1.0], [0.0, 0.0, 300.0]])
    rivals = sample_rivals(logits.repeat(100, 1), torch.tensor([0, 2]).repeat(100), k=4)
    assert (rivals[0::2] != 0).all() and (rivals[1::2] != 2).all()
    assert (rivals[0::2] == 2).float().mean() > 0.6  # logit 1 vs 0 among the rivals: e / (1 + e) = 0.73


@pytest.mark.parametrize("strategy", ["ce", "pass@4"])
def test_hybrid_loss_is_w_sft_times_half_ce_half_pairwise_token_mean(tmp_path, strategy):
    from catcli.trainers.sft import sample_rivals

    trainer, model, batch = _tiny_trainer(tmp_path, strategy, "token", ROWS, hybrid=True)
    n_tokens = (batch["labels"][:, 1:] != -100).sum()
    torch.manual_seed(1)
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_tokens)
    torch.manual_seed(1)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    rivals = sample_rivals(logits[mask], labels[mask])  # the same draws as the trainer's
    total, r = 0.0, 0
    for b in range(labels.shape[0]):
        seq_log_p, seq_hybrid = 0.0, 0.0
        for t in range(labels.shape[1]):
            if not mask[b, t]:
                continue
            z, g = logits[b, t].double(), labels[b, t]
            logp = torch.log_softmax(z, -1)[g]
            pair = torch.nn.functional.softplus(-(z[g] - z[rivals[r]])).mean()
            seq_hybrid += 0.5 * -logp + 0.5 * pair
            seq_log_p += logp
            r += 1
        total += objectives.w_sft(parse_strategy(strategy), torch.tensor(seq_log_p.item())) * seq_hybrid
    torch.testing.assert_close(loss.double(), (total / n_tokens).double().reshape(()), rtol=1e-4, atol=1e-5)


def test_sft_runs_resumes_after_kill_and_eval_uses_the_adapter(tmp_path):
    out = tmp_path / "sft"
    args = [
        "sft",
        "--model",
        "smollm2-135m",
        "--data",
        "arith",
        "--strategy",
        "pass@4",
        "--max-steps",
        "12",  # the kill lands after step 2, with 10 steps left: the run cannot finish first
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--save-steps",
        "2",
        "--lr",
        "1e-4",
        "--out",
        str(out),
        "--save-merged",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "catcli", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists():
            break
        time.sleep(0.5)
    time.sleep(1.0)  # trainer_state.json is written in place: let the write end before the kill
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter").exists()

    r = run_cli(*args, "--resume", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["global_step"] == 12  # stdout is one JSON object: no log lines, no banners
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 13))  # continued from the checkpoint, no step twice
    assert {"loss", "weight_mean", "weight_min", "weight_max", "p_mean"} <= set(log[0])
    assert all(row["weight_min"] <= row["weight_mean"] <= row["weight_max"] for row in log)
    run = json.loads((out / "run.json").read_text())
    assert run["global_step"] == 12 and run["strategy"] == "pass@4"
    assert run["model_dtype"] == "float32"  # conftest turns Unsloth's CPU bf16 off
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((out / "adapter" / "catcli_base.json").read_text())["model"] == "smollm2-135m"

    from catcli.models import resolve_model

    merged = out / "merged"
    assert (merged / "model.safetensors").exists() and resolve_model(str(merged)).base == str(merged)
    assert resolve_model(str(merged)).adapter is None  # a plain checkpoint, usable without catcli

    ev = run_cli(
        "eval",
        "--model",
        str(out),
        "--data",
        "arith",
        "--limit",
        "2",
        "--n",
        "2",
        "--k",
        "1,2",
        "--max-new-tokens",
        "8",
        "--out",
        str(tmp_path / "ev"),
        "--json",
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert json.loads(ev.stdout)["model"] == str(out)


def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path):
    out = tmp_path / "sft"
    proc = start_cli(
        "sft",
        "--model",
        "smollm2-135m",
        "--data",
        "arith",
        "--max-steps",
        "200",
        "--batch-size",
        "1",
        "--grad-accum",
        "1",
        "--save-steps",
        "1000",
        "--out",
        str(out),
    )
    wait_for(lambda: (out / "train_log.jsonl").exists(), proc)  # training is under way
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "rerun with --resume" in err
    ckpts = list((out / "checkpoints").glob("checkpoint-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "trainer_state.json").exists()  # saved on Ctrl-C, not by save_steps
    assert not (out / "adapter").exists()
