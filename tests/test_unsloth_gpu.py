"""catcli on Unsloth's GPU trainers, emulated on a CPU: the same experiment as on stock TRL.

tests/emulated_unsloth.py generates Unsloth's CUDA-path UnslothSFTTrainer / UnslothGRPOTrainer
here and builds catcli's trainers on them through catcli's own builder; every case also runs on
stock TRL, in a subprocess of its own per (backend, command), so this suite's process keeps stock
TRL. With the same seed, model, data and batch the two must train the same thing: equal
per-sequence SFT weights and losses, equal GRPO advantages and CAT weights, and resolved
arguments that differ only in lifecycle.BACKEND_CHOSEN.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from emulated_unsloth import CLOSENESS, PATTERN, RL_CASES, SFT_CASES, M

pytestmark = [pytest.mark.unsloth_gpu, pytest.mark.slow]

SFT_SEQUENCES = 2 * 2 * 2  # 2 optimizer steps x grad-accum 2 x batch 2: one weight per sequence
TOL = dict(rtol=1e-5, atol=1e-6)  # the same float32 CPU kernels on both sides; only summation order may differ


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{(backend, command): figures}, from four subprocesses; each must print nothing on stdout."""
    out = tmp_path_factory.mktemp("emulated")
    figures = {}
    for backend in ("stock", "unsloth"):
        for command in ("sft", "rl"):
            path = out / f"{backend}-{command}.json"
            # the variable blocks Unsloth's padding-free batching by itself: catcli must not need it
            env = {"UNSLOTH_RETURN_LOGITS": "0"} if command == "sft" else {}
            r = subprocess.run(
                [sys.executable, str(ROOT / "tests" / "emulated_unsloth.py"), backend, command, str(path)],
                capture_output=True, text=True, cwd=ROOT, timeout=1800, env={**os.environ, **env},
            )  # fmt: skip
            assert r.returncode == 0, r.stderr[-3000:]
            # Unsloth prints while building configs and trainers; stdout belongs to --json
            assert r.stdout == "", r.stdout[-2000:]
            figures[backend, command] = json.loads(path.read_text())
    return figures


def _ok(runs, command: str, case: str) -> tuple[dict, dict]:
    stock, unsloth = runs["stock", command][case], runs["unsloth", command][case]
    for name, fig in (("stock TRL", stock), ("Unsloth's trainer", unsloth)):
        assert "error" not in fig, f"{case} on {name}: {fig.get('error')}\n{fig.get('traceback', '')}"
    assert stock["trainer"] != unsloth["trainer"] and unsloth["trainer"].startswith("Unsloth")
    return stock, unsloth


def _differing_arguments(stock: dict, unsloth: dict) -> dict:
    from catcli.trainers.lifecycle import BACKEND_CHOSEN

    skip = set(BACKEND_CHOSEN) | {"output_dir"}  # output_dir: each run writes its own
    return {
        k: (stock.get(k), unsloth.get(k))
        for k in sorted((set(stock) | set(unsloth)) - skip)
        if stock.get(k) != unsloth.get(k)
    }


@pytest.mark.parametrize("case", SFT_CASES)
def test_sft_trains_the_same_experiment_on_unsloths_trainer(runs, case):
    stock, unsloth = _ok(runs, "sft", case)
    for fig in (stock, unsloth):
        weights = [w for batch in fig["weights"] for w in batch]
        assert len(weights) == SFT_SEQUENCES, f"{len(weights)} weights for {SFT_SEQUENCES} sequences"
    torch.testing.assert_close(torch.tensor(unsloth["weights"]), torch.tensor(stock["weights"]), **TOL)
    torch.testing.assert_close(torch.tensor(unsloth["log_p"]), torch.tensor(stock["log_p"]), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(torch.tensor(unsloth["losses"]), torch.tensor(stock["losses"]), **TOL)
    assert len({round(lp, 6) for batch in stock["log_p"] for lp in batch}) == SFT_SEQUENCES  # each its own p


@pytest.mark.parametrize("case", SFT_CASES)
def test_sft_arguments_differ_only_where_documented(runs, case):
    stock, unsloth = _ok(runs, "sft", case)
    assert _differing_arguments(stock["args"], unsloth["args"]) == {}
    assert unsloth["args"]["padding_free"] is False and unsloth["args"]["packing"] is False
    assert unsloth["args"]["max_length"] == stock["args"]["max_length"] == 1024


def _vanilla(case: str) -> torch.Tensor:
    from catcli.objectives import group_advantages

    rewards = torch.tensor(PATTERN, dtype=torch.float64)
    if RL_CASES[case][2]:
        rewards = rewards + torch.tensor(CLOSENESS, dtype=torch.float64)
    return group_advantages(rewards.view(-1, M)).view(-1)


@pytest.mark.parametrize("case", RL_CASES)
def test_grpo_computes_the_same_advantages_on_unsloths_trainer(runs, case):
    stock, unsloth = _ok(runs, "rl", case)
    s, u = stock["train"], unsloth["train"]
    assert any(0 in row for row in u["prompt_mask"])  # prompts of different lengths: left padding

    assert u["completion_ids"] == s["completion_ids"]  # the same rollouts from the same seed
    torch.testing.assert_close(torch.tensor(u["advantages"]), torch.tensor(s["advantages"]), **TOL)
    if s["weights"] is None:  # vanilla GRPO and the peers carry no CAT weight
        assert u["weights"] is None
    else:
        assert len(s["weights"]) == len(PATTERN) and u["weights"] == pytest.approx(s["weights"], rel=1e-9)
    if "seq_log_p" in s:  # pass@N: each rollout's own sequence log-prob under the rollout policy
        torch.testing.assert_close(torch.tensor(u["seq_log_p"]), torch.tensor(s["seq_log_p"]), rtol=1e-6, atol=1e-4)
    strategy, method, _ = RL_CASES[case]
    if strategy != "grpo":  # CAT's weight or the peer's advantage changed GRPO's
        assert not torch.allclose(torch.tensor(s["advantages"], dtype=torch.float64), _vanilla(case), atol=1e-3)


@pytest.mark.parametrize("case", RL_CASES)
def test_trls_evaluation_keeps_grpos_advantages(runs, case):
    """In eval mode TRL scores completions too; CAT must leave them alone even though Unsloth's
    generated code puts the model back in training mode inside the call."""
    for backend in ("stock", "unsloth"):
        fig = runs[backend, "rl"][case]
        assert fig["eval"]["window"] == fig["train"]["window"] == 1  # nothing logged for the eval call
        torch.testing.assert_close(torch.tensor(fig["eval"]["advantages"], dtype=torch.float64), _vanilla(case), **TOL)


@pytest.mark.parametrize("case", RL_CASES)
def test_grpo_arguments_differ_only_where_documented(runs, case):
    stock, unsloth = _ok(runs, "rl", case)
    assert _differing_arguments(stock["args"], unsloth["args"]) == {}
    for args in (stock["args"], unsloth["args"]):  # what Unsloth's GPU config would change unless pinned
        assert args["scale_rewards"] == args["trainer.scale_rewards"] == "group"
        assert args["vllm_importance_sampling_correction"] is True
        assert (args["optim"], args["lr_scheduler_type"], args["warmup_steps"]) == ("adamw_torch", "constant", 0)


def test_the_trl_contract_holds_on_both_kinds_of_trainer(runs):
    from catcli.trainers.lifecycle import GRPO_OUTPUT_KEYS, TRL_CONTRACT

    want = {cls: {m: list(params) for m, params in methods.items()} for cls, methods in TRL_CONTRACT.items()}
    for backend in ("stock", "unsloth"):
        for command in ("sft", "rl"):
            assert runs[backend, command]["contract"] == want, (backend, command)
        for case in RL_CASES:
            assert set(GRPO_OUTPUT_KEYS) <= set(runs[backend, "rl"][case]["train"]["output_keys"])


def test_unsloths_generated_code_is_ignored_by_git():
    r = subprocess.run(["git", "check-ignore", "-q", "unsloth_compiled_cache/UnslothSFTTrainer.py"], cwd=ROOT)
    assert r.returncode == 0
