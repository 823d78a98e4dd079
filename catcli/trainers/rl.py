"""`catcli rl`: GRPO with CAT advantage weights (arXiv 2604.24957, cat-spec §2, §4, §7).

On TRL's GRPOTrainer as Unsloth patches it. Everything TRL does is kept; the changes:
  `_calculate_rewards`              calls super, and keeps what CAT needs from every process:
                                    the gathered rewards and each completion's wrong-answer key
  `_generate_and_score_completions` calls super, then multiplies the group-standardised
                                    advantages by the CAT weight of each completion (and, for
                                    maj@N, lowers all-wrong groups by 0.5), in place
The weight is applied after standardisation: maj@N's weight is constant within a prompt, so
folding it into the reward would be cancelled by the group normalisation.

Weights (objectives.rl_weights): pass@N from each rollout's own sequence log-prob (clip 50, not
normalised); maj@N from the Laplace success rate with a dynamic k per prompt unless `:k=` is
given (clip 10, batch-mean 1, all-wrong penalty); bon@N from the within-group reward rank.
`grpo` (or `ce`) is vanilla GRPO. The reward is graded correctness (1/0).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from catcli import config as cfgmod
from catcli import objectives
from catcli.data import load_selection
from catcli.errors import UsageError
from catcli.grading import extract_boxed, grade_completion, vote_key
from catcli.models import LoraSettings, import_unsloth, load_model
from catcli.prompts import DEFAULT_INSTRUCTION, user_message
from catcli.rundir import provenance
from catcli.trainers import common_args, start_run, train_and_save, train_log_callback

_PAPER = {"title": "Compute Aligned Training: Optimizing for Test Time Inference", "id": "arXiv:2604.24957"}
_NO_ANSWER = "\x00no-answer"  # failed extractions share one wrong key (cat-spec §2)


@dataclass(frozen=True)
class RLRunConfig:
    model: str = "smollm2-135m"
    data: str = "math"
    split: str = "train"
    levels: str = "1-3"
    subjects: tuple[str, ...] = ()
    limit: int | None = None
    seed: int = 0
    strategy: str = "grpo"
    form: Literal["raw", "log"] = "raw"
    num_generations: int = 8  # M, rollouts per prompt; separate from the strategy's test-time N
    prompts_per_step: int = 4
    max_steps: int = 100
    max_new_tokens: int = 512
    temperature: float = 0.8
    top_p: float = 0.95
    beta: float = 0.0
    lr: float = 1e-6
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    # dr_grpo is the paper's summed-log-prob REINFORCE up to 1/max_new_tokens (cat-spec §4)
    loss_type: Literal["dr_grpo", "dapo", "grpo", "bnpo"] = "dr_grpo"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    load_in_4bit: bool = True
    max_seq_length: int = 2048
    init_adapter: str | None = None
    instruction: str = DEFAULT_INSTRUCTION
    save_steps: int = 50
    report_to: Literal["none", "tensorboard", "wandb"] = "none"
    trust_remote_code: bool = False
    out: Path = field(default=Path("runs/rl"))
    resume: bool = False
    overwrite: bool = False

    def validate(self) -> objectives.Strategy:
        try:
            strategy = objectives.parse_strategy(self.strategy)
        except objectives.StrategyError as e:
            raise UsageError(str(e)) from None
        if strategy.kind == "bon" and self.form == "log":
            raise UsageError("bon@N has only the raw rank weight N q^(N-1): use --form raw")
        for name in ("prompts_per_step", "max_steps", "max_new_tokens", "save_steps", "lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise UsageError(
                f"--num-generations must be at least 2 (GRPO compares rollouts), got {self.num_generations}"
            )
        if not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise UsageError("--temperature must be positive and --top-p in (0, 1]")
        if self.beta < 0 or not self.lr > 0:
            raise UsageError("--beta must be >= 0 and --lr positive")
        return strategy


def _text(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def correctness_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 when the last \\boxed{} answer is math-verify-equal to the gold answer, else 0.0.

    >>> correctness_reward([[{"role": "assistant", "content": "so \\\\boxed{4}"}]], answer=["4"])
    [1.0]
    """
    return [1.0 if grade_completion(str(a), _text(c)) else 0.0 for c, a in zip(completions, answer)]


def _cat_grpo_trainer_class():
    """Defined after `import unsloth`, which rewrites TRL's trainer classes on import."""
    import_unsloth()
    import torch
    from accelerate.utils import gather_object
    from trl import GRPOTrainer

    class CATGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose advantages carry the CAT weight of the test-time strategy."""

        _tag_names = ["trl", "grpo", "catcli", "compute-aligned-training"]
        _paper = _PAPER

        def __init__(self, *args, strategy: objectives.Strategy, form: str = "raw", **kwargs):
            super().__init__(*args, **kwargs)
            self.strategy = strategy
            self.form = form
            self.cat_window: list[dict] = []  # per generation batch: weights and dynamic k, for train_log

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            # rewards are gathered from every process; gather the answer keys in the same order
            keys = [vote_key(e) if (e := extract_boxed(_text(c))) else _NO_ANSWER for c in completions]
            self._cat_keys = gather_object(keys) if self.accelerator.num_processes > 1 else keys
            self._cat_rewards = rewards
            return rewards

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            if self.strategy.kind == "ce" or self.strategy.n == 1 or not self.model.training:
                return output
            m = self.num_generations
            rewards = self._cat_rewards.detach().to("cpu", torch.float64)  # (B_all, n_funcs)
            correct = (rewards[:, 0] > 0.5).view(-1, m)  # column 0 is correctness_reward
            n_local = output["advantages"].shape[0]
            local = slice(self.accelerator.process_index * n_local, (self.accelerator.process_index + 1) * n_local)
            seq_log_p, c_max, ranked = None, None, None
            if self.strategy.kind == "pass":
                seq_log_p = self._rollout_seq_log_p(output).view(1, -1)  # own completions only
            elif self.strategy.kind == "maj":
                c_max = torch.tensor(
                    [_wrong_mode(keys, ok) for keys, ok in zip(_groups(self._cat_keys, m), correct.tolist())]
                )
            else:
                weights = self.reward_weights.to("cpu", torch.float64)
                ranked = torch.nan_to_num(rewards * weights).sum(-1).view(-1, m)
            result = objectives.rl_weights(
                self.strategy,
                correct if seq_log_p is None else correct.view(-1)[local].view(1, -1),
                form=self.form,
                seq_log_p=seq_log_p,
                wrong_mode_counts=c_max,
                rewards=ranked,
            )
            w = result.weights.reshape(-1)
            w_local = w if self.strategy.kind == "pass" else w[local]
            penalty = torch.zeros_like(w_local)
            if self.strategy.kind == "maj":
                all_wrong = (correct.sum(-1) == 0).to(torch.float64).repeat_interleave(m)
                penalty = objectives.ALL_WRONG_PENALTY * all_wrong[local]
            adv = output["advantages"]
            output["advantages"] = (adv.to(torch.float64) * w_local.to(adv.device) - penalty.to(adv.device)).to(
                adv.dtype
            )
            self.cat_window.append({"w": w_local, "ks": result.ks})
            return output

        def _rollout_seq_log_p(self, output):
            """Summed log-probs of this process's rollouts under the rollout policy, (B_local,)."""
            mask = output["completion_mask"]
            per_token = output.get("old_per_token_logps")
            if per_token is None:
                per_token = output.get("sampling_per_token_logps")
            if per_token is None:  # on-policy HF generation keeps none: one extra no-grad forward
                ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
                attention = torch.cat([output["prompt_mask"], mask], dim=1)
                with torch.no_grad():
                    per_token, _, _ = self._get_per_token_logps_and_entropies(
                        self.model,
                        ids,
                        attention,
                        output["completion_ids"].size(1),
                        batch_size=self.args.per_device_train_batch_size,
                    )
            return (torch.nan_to_num(per_token.detach()).to(torch.float64) * mask).sum(-1).cpu()

    return CATGRPOTrainer


def _groups(items: list, m: int) -> list[list]:
    return [items[i : i + m] for i in range(0, len(items), m)]


def _wrong_mode(keys: list[str], correct: list[bool]) -> int:
    """c_max: how many rollouts give the most frequent wrong answer (no answer counts as one)."""
    wrong = Counter(k for k, ok in zip(keys, correct) if not ok)
    return max(wrong.values(), default=0)


def _log_row(logs: dict, window: list) -> dict:
    """Reward, zero-std groups, and the CAT weights and dynamic k since the last line."""
    import torch

    row = {"reward_mean": logs.get("reward"), "frac_reward_zero_std": logs.get("frac_reward_zero_std")}
    if not window:  # vanilla GRPO: every weight is 1
        return {**row, "weight_mean": 1.0, "weight_min": 1.0, "weight_max": 1.0, "dynamic_k": None}
    w = torch.cat([x["w"] for x in window])
    ks = [k for x in window for k in (x["ks"] or ())]
    return {
        **row,
        "weight_mean": w.mean().item(),
        "weight_min": w.min().item(),
        "weight_max": w.max().item(),
        "dynamic_k": ks or None,
    }


def build_dataset(cfg: RLRunConfig):
    from datasets import Dataset

    problems = load_selection(
        cfg.data, cfg.split, levels=cfg.levels, subjects=cfg.subjects, limit=cfg.limit, seed=cfg.seed
    )
    rows = [
        {"prompt": [{"role": "user", "content": user_message(p, cfg.instruction)}], "answer": p.answer}
        for p in problems
    ]
    return Dataset.from_list(rows), problems


def run_rl(cfg: RLRunConfig, progress: bool = True) -> dict:
    """Train with CAT-weighted GRPO; writes OUT/adapter, train_log.jsonl, run.json. Resumable."""
    strategy = cfg.validate()
    dataset, problems = build_dataset(cfg)
    run = start_run(cfg)
    trainer_cls = _cat_grpo_trainer_class()
    from trl import GRPOConfig

    model, tokenizer = load_model(
        run.model_spec,
        load_in_4bit=cfg.load_in_4bit,
        max_seq_length=cfg.max_seq_length,
        lora=LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_targets),
        trust_remote_code=cfg.trust_remote_code,
    )
    args = GRPOConfig(
        **common_args(cfg, run, progress),
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        gradient_accumulation_steps=1,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        max_steps=cfg.max_steps,
    )
    trainer_ref: list = []
    trainer = trainer_cls(
        model=model,
        reward_funcs=[correctness_reward],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        strategy=strategy,
        form=cfg.form,
        callbacks=[train_log_callback(run.log_path, trainer_ref, _log_row)],
    )
    trainer_ref.append(trainer)
    record = {
        "config": cfgmod.to_dict(cfg),
        "strategy": str(strategy),
        "n_problems": len(problems),
        "effective_batch": f"{cfg.prompts_per_step} prompts x {cfg.num_generations} rollouts "
        f"x {trainer.accelerator.num_processes} processes",
        "provenance": provenance(),
    }
    return train_and_save(trainer, tokenizer, run, record)
