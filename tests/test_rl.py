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


def _trainer(
    tmp_path,
    strategy: str,
    pattern: list[float],
    form: str = "raw",
    max_tokens: int = 6,
    method="cat",
    extra: list[float] | None = None,
    p_estimate: str | None = None,
    penalty: float | None = None,
):
    """The trainer `catcli rl` builds, on a tiny random Llama, with correctness stubbed as `pattern`."""
    from datasets import Dataset

    from catcli.config import RLRunConfig
    from catcli.trainers.rl import build_trainer

    model, tok = tiny_llama()
    tok.pad_token = tok.pad_token or tok.eos_token

    def stub_correctness(completions, **kwargs):  # column 0: the pattern, whatever was generated
        return list(pattern)

    def stub_closeness(completions, **kwargs):  # an extra graded reward, whatever was generated
        return list(extra)

    rows = [  # prompts of different lengths, so left padding is exercised
        {"prompt": [{"role": "user", "content": f"Problem:\nWhat is {i} + {i}?" + " Think." * i}], "answer": str(2 * i)}
        for i in range(len(pattern) // M)
    ]
    cfg = RLRunConfig(
        strategy=parse_strategy(strategy),
        form=form,
        method=method,
        p_estimate=p_estimate,
        all_wrong_penalty=penalty,
        num_generations=M,
        prompts_per_step=len(pattern) // M,
        max_new_tokens=max_tokens,
        temperature=0.8,
        reward=("closeness",) if extra else (),
        out=tmp_path / "run",
    )
    reward_funcs = [stub_correctness] + ([stub_closeness] if extra else [])
    trainer = build_trainer(cfg, model=model, tokenizer=tok, dataset=Dataset.from_list(rows), reward_funcs=reward_funcs)
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
    from catcli.trainers.rl import wrong_mode_count

    pattern = [1, 0, 0, 0, 1, 1, 0, 0]  # success rates 1/4 and 2/4
    trainer, _, inputs = _trainer(tmp_path, "maj@4", pattern)
    out = trainer._generate_and_score_completions(inputs)
    texts = trainer.processing_class.batch_decode(out["completion_ids"], skip_special_tokens=True)
    c_max = [wrong_mode_count(inputs[i * M]["answer"], texts[i * M : (i + 1) * M]) for i in range(2)]
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


def test_maj_all_wrong_penalty_comes_before_the_weight(tmp_path):
    pattern = [0, 0, 0, 0, 1, 0, 1, 0]
    trainer, _, inputs = _trainer(tmp_path, "maj@4:k=2", pattern)
    out = trainer._generate_and_score_completions(inputs)
    w = trainer.cat_window[-1]["w"]
    assert w[0].item() != pytest.approx(1.0)  # batch-mean normalised: the all-wrong group's weight is not 1
    torch.testing.assert_close(out["advantages"][:M].double(), -0.5 * w[:M], rtol=1e-5, atol=1e-6)
    assert (out["advantages"][M:] != 0).all()


def test_grpo_with_the_all_wrong_penalty_lowers_only_all_wrong_groups(tmp_path):
    # the authors' majority baseline: vanilla GRPO with maj@N's -0.5, and no weight
    pattern = [0, 0, 0, 0, 1, 0, 1, 0]
    trainer, _, inputs = _trainer(tmp_path, "grpo", pattern, penalty=0.5)
    out = trainer._generate_and_score_completions(inputs)
    want = _vanilla(pattern)
    want[:M] -= 0.5
    torch.testing.assert_close(out["advantages"].double(), want, rtol=1e-5, atol=1e-6)


def test_pass_weights_from_the_success_rate_are_one_per_prompt(tmp_path):
    pattern = [1, 0, 0, 0, 1, 1, 1, 0]  # success rates 1/4 and 3/4: p = 2/6 and 4/6
    trainer, _, inputs = _trainer(tmp_path, "pass@4", pattern, form="log", p_estimate="success")
    out = trainer._generate_and_score_completions(inputs)
    s = parse_strategy("pass@4")
    w = objectives.w_rl(s, torch.log(torch.tensor([2 / 6, 4 / 6], dtype=torch.float64)), "log")
    torch.testing.assert_close(trainer.cat_window[-1]["w"], w.repeat_interleave(M))
    torch.testing.assert_close(
        out["advantages"].double(), _vanilla(pattern) * w.repeat_interleave(M), rtol=1e-5, atol=1e-6
    )


def test_c_max_counts_wrong_answers_by_evals_vote_classes():
    from catcli.grading import vote_key
    from catcli.trainers.rl import wrong_mode_count

    half = [r"so \boxed{\frac{\sqrt{2}}{2}}", r"\boxed{\frac{1}{\sqrt{2}}}", r"\boxed{\frac{\sqrt 2}{2}}"]
    assert len({vote_key(r"\frac{\sqrt{2}}{2}"), vote_key(r"\frac{1}{\sqrt{2}}")}) == 2  # keys alone split them
    assert wrong_mode_count("7", half + [r"\boxed{3}", r"\boxed{3}", r"\boxed{7}"]) == 3
    assert wrong_mode_count("7", ["no answer", "none either", r"\boxed{3}", r"\boxed{7}"]) == 2
    assert wrong_mode_count("7", [r"\boxed{7}", r"\boxed{7.0}"]) == 0


def _reference_seq_log_p(model, out, temperature: float = 0.8):
    """Each rollout scored alone, unpadded: what the sampling policy gave it."""
    seqs = []
    for i in range(out["prompt_ids"].shape[0]):
        prompt = out["prompt_ids"][i][out["prompt_mask"][i].bool()]
        completion = out["completion_ids"][i][out["completion_mask"][i].bool()]
        ids = torch.cat([prompt, completion]).unsqueeze(0)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].double() / temperature
        logp = torch.log_softmax(logits, -1)[-len(completion) :].gather(-1, completion.unsqueeze(-1))
        seqs.append(logp.sum())
    return torch.stack(seqs)


def test_pass_weights_come_from_rollout_log_probs(tmp_path):
    pattern = [1, 0, 1, 0, 0, 1, 0, 0]
    trainer, model, inputs = _trainer(tmp_path, "pass@4", pattern, max_tokens=3)
    out = trainer._generate_and_score_completions(inputs)
    assert (out["prompt_mask"] == 0).any()  # left padding is exercised
    seq = _reference_seq_log_p(model, out)
    torch.testing.assert_close(trainer._rollout_seq_log_p(out), seq, rtol=1e-4, atol=1e-4)
    w = objectives.w_rl(parse_strategy("pass@4"), objectives.rollout_log_p(seq)).clamp(max=50.0)
    torch.testing.assert_close(out["advantages"].double(), _vanilla(pattern) * w, rtol=1e-4, atol=1e-5)


def test_rollout_log_probs_ignore_per_token_logps_that_do_not_line_up(tmp_path):
    # Unsloth's GPU log-prob method moves left padding right and returns logits_to_keep + max_left_pad
    # columns: such per-token log-probs must not be multiplied by the completion mask
    pattern = [1, 0, 1, 0, 0, 1, 0, 0]
    trainer, model, inputs = _trainer(tmp_path, "pass@4", pattern, max_tokens=3)
    out = trainer._generate_and_score_completions(inputs)
    pad = int((out["prompt_mask"] == 0).sum(-1).max())
    assert pad > 0
    mask = out["completion_mask"]
    wider = torch.full((mask.shape[0], mask.shape[1] + pad), -7.0)
    out["old_per_token_logps"] = wider
    torch.testing.assert_close(trainer._rollout_seq_log_p(out), _reference_seq_log_p(model, out), rtol=1e-4, atol=1e-4)
    aligned = torch.full(mask.shape, -0.25)
    out["old_per_token_logps"] = aligned  # kept by TRL and lined up: the rollout policy's own, used as is
    torch.testing.assert_close(trainer._rollout_seq_log_p(out), (aligned * mask).sum(-1).double())


def test_pinned_settings_undo_unsloths_overrides(tmp_path):
    # what Unsloth's GPU GRPOConfig leaves behind for dr_grpo: no group std, its optimiser, a warm-up
    from catcli.trainers.lifecycle import pin_settings, resolved_arguments

    pattern = [1, 0, 0, 0, 1, 1, 1, 0]
    trainer, _, inputs = _trainer(tmp_path, "grpo", pattern)
    asked = dict(
        scale_rewards="group", optim="adamw_torch", warmup_steps=0, lr_scheduler_type="constant", loss_type="dr_grpo"
    )
    for key, value in dict(scale_rewards="none", optim="adamw_torch_fused", warmup_steps=0.1).items():
        setattr(trainer.args, key, value)
    trainer.scale_rewards = "none"
    pin_settings(trainer, asked)
    resolved = resolved_arguments(trainer)
    assert trainer.scale_rewards == "group" and trainer.args.scale_rewards == "group"
    assert resolved["scale_rewards"] == "group" and resolved["trainer.scale_rewards"] == "group"
    assert resolved["optim"] == "adamw_torch" and resolved["warmup_steps"] == 0
    assert resolved["lr_scheduler_type"] == "constant" and resolved["trainer.loss_type"] == "dr_grpo"
    out = trainer._generate_and_score_completions(inputs)
    torch.testing.assert_close(out["advantages"].double(), _vanilla(pattern), rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="per_device_train_batch_size"):
        pin_settings(trainer, {"per_device_train_batch_size": 3})  # not pinnable: refused, never silently kept
    # a temperature rewritten after construction: the sampling config TRL built from it follows the pin
    trainer.args.temperature = trainer.temperature = 0.3
    pin_settings(trainer, {"temperature": 0.8})
    assert trainer.temperature == trainer.generation_config.temperature == 0.8
    assert trainer.generation_kwargs["temperature"] == 0.8


def test_bon_ranks_correctness_plus_the_extra_reward_so_wrong_rollouts_are_spread(tmp_path):
    pattern = [0, 0, 0, 0, 1, 0, 0, 0]  # all wrong, then one right
    closeness = [0.1, 0.9, 0.5, 0.0, 1.0, 0.3, 0.3, 0.8]  # ties share a rank
    trainer, _, inputs = _trainer(tmp_path, "bon@4", pattern, extra=closeness)
    out = trainer._generate_and_score_completions(inputs)
    combined = torch.tensor(pattern, dtype=torch.float64) + torch.tensor(closeness, dtype=torch.float64)
    q = objectives.bon_quantile(combined.view(-1, M))
    raw = (4 * q**3).view(-1)
    w = raw / raw.mean()
    torch.testing.assert_close(trainer.cat_window[-1]["w"], w)
    wrong = w[:M]  # the all-wrong group: weights spread by closeness, not all near 0
    assert wrong.max() > 5 * wrong.min() and wrong.max() > 1.0
    assert w[5] == w[6]  # tied combined reward, tied weight
    torch.testing.assert_close(out["advantages"].double(), _vanilla(combined.tolist()) * w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["pkpo", "passk", "passk-best"])
def test_peer_methods_replace_the_advantage(tmp_path, method):
    from catcli import peers

    pattern = [1, 0, 0, 0, 1, 1, 0, 1]
    trainer, _, inputs = _trainer(tmp_path, "pass@4", pattern, method=method)
    out = trainer._generate_and_score_completions(inputs)
    correct = torch.tensor(pattern).view(-1, M).bool()
    want = peers.method_advantages(method, parse_strategy("pass@4"), correct.double(), correct).view(-1)
    torch.testing.assert_close(out["advantages"].double(), want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(want, _vanilla(pattern).to(want.dtype), atol=1e-3)  # not GRPO's advantage
    assert "w" not in trainer.cat_window[-1] and trainer.cat_window[-1]["adv"].shape == (8,)


@pytest.mark.parametrize("strategy, method", [("maj@4", "cat"), ("pass@4", "cat"), ("pass@4", "pkpo")])
def test_rl_cli_runs_and_writes_outputs(tmp_path, strategy, method):
    out = tmp_path / "rl"
    r = run_cli(
        "rl",
        "--model",
        "smollm2-135m",
        "--data",
        "arith",
        "--strategy",
        strategy,
        "--num-generations",
        "4",
        "--max-steps",
        "2",
        "--prompts-per-step",
        "2",
        "--max-new-tokens",
        "24",
        "--method",
        method,
        "--out",
        str(out),
        "--json",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["global_step"] == 2  # stdout is one JSON object
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2]
    want = {"method", "reward_mean", "frac_reward_zero_std", "weight_mean", "weight_min", "weight_max", "dynamic_k"}
    assert want | {"adv_mean", "adv_abs_mean", "adv_min", "adv_max", "adv_frac_zero"} <= set(log[0])
    assert log[0]["method"] == method and json.loads((out / "run.json").read_text())["method"] == method
    run = json.loads((out / "run.json").read_text())
    assert run["global_step"] == 2 and run["strategy"] == strategy
    held = run["trainer_args"]  # read back from the trainer after construction
    assert held["scale_rewards"] == "group" and held["trainer.scale_rewards"] == "group"
    assert held["optim"] == "adamw_torch" and held["lr_scheduler_type"] == "constant" and held["warmup_steps"] == 0
    assert held["loss_type"] == "dr_grpo" and held["num_iterations"] == 1
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_rl_bon_with_closeness_reward_on_the_embedded_model(tmp_path, boxing_adapter):
    out = tmp_path / "rl"
    r = run_cli("rl", "--model", "smollm2-135m", "--init-adapter", str(boxing_adapter), "--no-load-in-4bit",
                "--data", "arith", "--levels", "1", "--strategy", "bon@4", "--reward", "closeness",
                "--num-generations", "4", "--prompts-per-step", "2", "--max-steps", "2", "--max-new-tokens", "16",
                "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2]
    assert all(row["weight_min"] < row["weight_max"] for row in log)  # spread, not all wrong answers at ~0
    assert json.loads((out / "run.json").read_text())["trainer_args"]["reward_weights"] == [1.0, 1.0]


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
        "4",  # the kill lands after step 1, with 3 steps left: the run cannot finish first
        "--max-new-tokens",
        "16",
        "--save-steps",
        "1",
        "--out",
        str(out),
    ]
    proc = start_cli(*args)
    wait_for(lambda: (out / "checkpoints" / "checkpoint-1" / "trainer_state.json").exists(), proc)
    time.sleep(0.5)  # trainer_state.json is written in place: let the write end before the kill
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter").exists()  # killed mid-run, or the resume below would test nothing
    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 4  # continued, never logged a step twice


WARM_RL = ["rl", "--model", "smollm2-135m", "--no-load-in-4bit", "--data", "arith", "--levels", "1",
           "--num-generations", "8", "--prompts-per-step", "4", "--max-steps", "2"]  # fmt: skip


def test_rl_success_p_gives_one_weight_per_prompt_that_differs_between_prompts(tmp_path, boxing_adapter):
    out = tmp_path / "rl"
    r = run_cli(*WARM_RL, "--init-adapter", str(boxing_adapter), "--strategy", "pass@8", "--form", "log",
                "--p-estimate", "success", "--max-new-tokens", "16", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(len(row["prompt_weights"]) == 4 for row in log)  # one per prompt of the step
    assert any(len({round(w, 9) for w in row["prompt_weights"]}) > 1 for row in log)  # they differ
    assert "p_floor_share" not in log[0] and "CAT weights were constant" not in r.stderr
    assert json.loads((out / "run.json").read_text())["constant_weight"] is None


def test_rl_sequence_p_on_long_rollouts_reports_the_floor(tmp_path, boxing_adapter):
    out = tmp_path / "rl"
    r = run_cli(*WARM_RL, "--init-adapter", str(boxing_adapter), "--strategy", "pass@8",
                "--instruction", "Show your work, then put the answer within \\boxed{}.",
                "--max-new-tokens", "64", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(0 <= row["p_floor_share"] <= 1 for row in log)
    assert run["p_floor_share"] == pytest.approx(sum(row["p_floor_share"] for row in log) / len(log))
    assert f"{100 * run['p_floor_share']:.0f} % of the rollouts' sequence p sat at its 1e-10 floor" in r.stderr
    if run["constant_weight"] is not None:  # every rollout at the floor: weight N, a rescaled GRPO
        assert "this run trained as GRPO with a" in r.stderr
