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
`grpo` (or `ce`) is vanilla GRPO. The reward is graded correctness (1/0) plus the weighted
`--reward` functions (rewards.py); bon@N ranks that sum within each group, ties sharing q.
`--method` other than cat replaces the advantage by a peer's (peers.py) instead of weighting it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from catcli import config as cfgmod
from catcli import objectives, peers
from catcli.data import load_selection
from catcli.errors import UsageError
from catcli.grading import grade_completions
from catcli.models import LoraSettings, import_unsloth, load_model
from catcli.prompts import DEFAULT_INSTRUCTION, user_message
from catcli.rewards import completion_text, correct, load_reward, reward_weights
from catcli.rundir import provenance
from catcli.trainers import common_args, pin_settings, start_run, train_and_save, train_log_callback

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
    method: Literal["cat", "pkpo", "passk", "passk-best"] = "cat"  # peers replace the advantage (peers.py)
    # None: the paper's, sequence for pass@N and success for maj@N (cat-spec §2, §2.1)
    p_estimate: Literal["sequence", "success"] | None = None
    # subtracted from every advantage of an all-wrong group before the weight; None: 0.5 for maj@N, else 0
    all_wrong_penalty: float | None = None
    reward: tuple[str, ...] = ()  # extra rewards (rewards.load_reward) added to correctness
    reward_weights: str | None = None  # "1,0.5", one per reward, as typed; None: all 1
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
    optim: Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit"] = "adamw_torch"
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"  # the paper's RL: constant, no warm-up
    warmup_steps: int = 0
    # dr_grpo is the paper's summed-log-prob REINFORCE up to 1/max_new_tokens (cat-spec §4)
    loss_type: Literal["dr_grpo", "dapo", "grpo", "bnpo"] = "dr_grpo"
    # None: the default below for a fresh LoRA, the adapter's own with init_adapter
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_targets: tuple[str, ...] | None = None
    load_in_4bit: bool | None = None  # None: 4-bit on a CUDA GPU, 16-bit on a CPU (models.py)
    max_seq_length: int = 2048
    init_adapter: str | None = None
    vllm: bool = False  # rollouts from Unsloth's vLLM engine (fast_inference), CUDA only
    instruction: str = DEFAULT_INSTRUCTION
    save_steps: int = 50
    report_to: Literal["none", "tensorboard", "wandb"] = "none"
    trust_remote_code: bool = False
    out: Path = field(default=Path("runs/rl"))
    resume: bool = False
    overwrite: bool = False

    LORA_DEFAULT = LoraSettings(16, 32, ("q_proj", "v_proj"))

    @property
    def resolved_p_estimate(self) -> str:
        return self.p_estimate or ("success" if self.strategy.strip().lower().startswith("maj") else "sequence")

    @property
    def resolved_penalty(self) -> float:
        if self.all_wrong_penalty is not None:
            return self.all_wrong_penalty
        return objectives.ALL_WRONG_PENALTY if self.strategy.strip().lower().startswith("maj") else 0.0

    @property
    def lora(self) -> LoraSettings:
        """The LoRA a fresh run attaches: the given fields over LORA_DEFAULT."""
        d = self.LORA_DEFAULT
        return LoraSettings(self.lora_r or d.r, self.lora_alpha or d.alpha, self.lora_targets or d.targets)

    def validate(self) -> objectives.Strategy:
        try:
            strategy = objectives.parse_strategy(self.strategy)
        except objectives.StrategyError as e:
            raise UsageError(str(e)) from None
        if strategy.kind == "bon" and self.form == "log":
            raise UsageError("bon@N has only the raw rank weight N q^(N-1): use --form raw")
        if self.p_estimate is not None:
            if self.method != "cat" or strategy.kind not in ("pass", "maj"):
                raise UsageError(
                    f"--p-estimate applies to CAT pass@N and maj@N, not to {strategy} with --method {self.method}"
                )
            if strategy.kind == "maj" and self.p_estimate == "sequence":
                raise UsageError("maj@N RL estimates p from the prompt's graded rollouts: use --p-estimate success")
        if self.all_wrong_penalty is not None:
            if self.method != "cat":
                raise UsageError(f"--all-wrong-penalty applies to GRPO and CAT, not to --method {self.method}")
            if not self.all_wrong_penalty >= 0:
                raise UsageError(f"--all-wrong-penalty must be >= 0, got {self.all_wrong_penalty}")
        reward_weights(self.reward, self.reward_weights)  # bad weights fail before anything runs
        try:
            peers.check_method(self.method, strategy, self.num_generations)
        except peers.MethodError as e:
            raise UsageError(f"--method {self.method}: {e}") from None
        for name in ("prompts_per_step", "max_steps", "max_new_tokens", "save_steps"):
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
        if self.vllm and not _vllm_available():
            raise UsageError("--vllm needs a CUDA GPU and the vllm package; leave it out to generate with transformers")
        for name in ("lora_r", "lora_alpha"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise UsageError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        return strategy


def _vllm_available() -> bool:
    import importlib.util

    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


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

        def __init__(
            self,
            *args,
            strategy: objectives.Strategy,
            form: str = "raw",
            method: str = "cat",
            p_estimate: str = "sequence",
            penalty: float = 0.0,
            **kwargs,
        ):
            super().__init__(*args, **kwargs)
            self.strategy = strategy
            self.form = form
            self.method = method
            self.p_estimate = p_estimate
            self.penalty = penalty
            self.cat_window: list[dict] = []  # per generation batch: advantages, weights, dynamic k; for train_log

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._cat_rewards = rewards  # gathered from every process, in group order
            if self.strategy.kind == "maj":
                # each process holds whole groups of M rollouts (its batch is prompts x M)
                m = self.num_generations
                c_max = [
                    wrong_mode_count(inputs[i]["answer"], [completion_text(c) for c in completions[i : i + m]])
                    for i in range(0, len(completions), m)
                ]
                self._cat_c_max = gather_object(c_max) if self.accelerator.num_processes > 1 else c_max
            return rewards

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            if not self.model.training:
                return output
            vanilla = self.method == "cat" and (self.strategy.kind == "ce" or self.strategy.n == 1) and not self.penalty
            extra = {} if vanilla else self._reweight(output)
            self.cat_window.append({**extra, "adv": output["advantages"].detach().reshape(-1).cpu()})
            return output

        def _reweight(self, output) -> dict:
            """Replace output["advantages"] (this process's rows, group order) by the method's.

            Returns what train_log reports beside the advantages: CAT's weights and dynamic k.
            """
            m = self.num_generations
            rewards = self._cat_rewards.detach().to("cpu", torch.float64)  # (B_all, n_funcs)
            correct = (rewards[:, 0] > 0.5).view(-1, m)  # column 0 is rewards.correct
            adv = output["advantages"]
            n_local = adv.shape[0] // m  # prompts on this process; whole groups
            groups = slice(self.accelerator.process_index * n_local, (self.accelerator.process_index + 1) * n_local)
            combined = torch.nan_to_num(rewards * self.reward_weights.to("cpu", torch.float64)).sum(-1).view(-1, m)
            if self.method != "cat":  # a peer's advantage from the whole batch's rewards, then this process's rows
                peer = peers.method_advantages(self.method, self.strategy, combined, correct)[groups]
                output["advantages"] = peer.reshape(-1).to(adv.device, adv.dtype)
                return {}
            if self.strategy.kind == "pass" and self.p_estimate == "sequence":
                # from each rollout's own log-prob: this process's rows only
                correct = correct[groups]
                result = objectives.rl_weights(
                    self.strategy, correct, form=self.form, seq_log_p=self._rollout_seq_log_p(output).view(-1, m)
                )
                w = result.weights
            else:  # group-level weights and batch-mean normalisation over every process's groups
                if self.strategy.kind == "maj":
                    result = objectives.rl_weights(
                        self.strategy, correct, form=self.form, wrong_mode_counts=torch.tensor(self._cat_c_max)
                    )
                elif self.strategy.kind == "bon":  # ranks the combined reward within each group
                    result = objectives.rl_weights(self.strategy, correct, form=self.form, rewards=combined)
                else:  # grpo (w = 1, the penalty alone) or pass@N from each prompt's success rate
                    result = objectives.rl_weights(self.strategy, correct, form=self.form, p_estimate=self.p_estimate)
                w, correct = result.weights[groups], correct[groups]
            scaled = objectives.cat_advantages(adv.view(-1, m).to("cpu"), w, correct, self.penalty)
            output["advantages"] = scaled.reshape(-1).to(adv.device, adv.dtype)
            return {"w": w.reshape(-1), "ks": result.ks}

        def _rollout_seq_log_p(self, output):
            """Summed log-probs of this process's rollouts under the rollout policy, (B_local,).

            TRL keeps the sampling policy's per-token log-probs only off-policy or with vLLM, and
            Unsloth's GPU rewrite of TRL's log-prob method returns them right-aligned and wider than
            the completion mask when prompts differ in length; so they are used only when they line
            up with the mask, and otherwise recomputed here, independent of either library.
            """
            mask = output["completion_mask"]
            for key in ("sampling_per_token_logps", "old_per_token_logps"):
                per_token = output.get(key)
                if per_token is not None and per_token.shape == mask.shape:
                    return (torch.nan_to_num(per_token.detach()).to(torch.float64) * mask).sum(-1).cpu()
            return completion_log_probs(
                self.model,
                output["prompt_ids"],
                output["prompt_mask"],
                output["completion_ids"],
                mask,
                temperature=self.temperature,
            )

    return CATGRPOTrainer


def completion_log_probs(
    model, prompt_ids, prompt_mask, completion_ids, completion_mask, *, temperature: float, batch_size: int = 4
):
    """Each completion's summed log-prob under `model` at the sampling temperature, float64 (B,), no grad.

    Position ids follow the attention mask, as in generation, so a left-padded prompt scores its
    rollout as it was sampled. Only the completion's logits are kept (`logits_to_keep`), a few
    rows at a time: 4 rows x 512 tokens x a 152k vocabulary is already 1.2 GB in float32.
    """
    import torch

    ids = torch.cat([prompt_ids, completion_ids], 1)
    attention = torch.cat([prompt_mask, completion_mask], 1)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    n = completion_ids.shape[1]
    out = []
    with torch.no_grad():
        for i in range(0, ids.shape[0], batch_size):
            rows = slice(i, i + batch_size)
            logits = model(
                input_ids=ids[rows], attention_mask=attention[rows], position_ids=positions[rows], logits_to_keep=n + 1
            ).logits
            logits = logits[:, -(n + 1) : -1].float() / temperature  # some forwards ignore logits_to_keep
            token = torch.log_softmax(logits, -1).gather(-1, completion_ids[rows].unsqueeze(-1)).squeeze(-1)
            out.append((token.to(torch.float64) * completion_mask[rows]).sum(-1))
    return torch.cat(out).cpu()


def wrong_mode_count(gold: str, completions: list[str]) -> int:
    """c_max: rollouts giving the most frequent wrong answer (cat-spec §2).

    Votes are eval's (grading.grade_completions): math-verify-equivalent answers are one class,
    and every completion without an answer falls in one more.
    """
    g = grade_completions(gold, completions)
    wrong = Counter(_NO_ANSWER if key is None else key for key, ok in zip(g.keys, g.correct) if not ok)
    return max(wrong.values(), default=0)


def _log_row(method: str, logs: dict, window: list) -> dict:
    """Reward, zero-std groups, the advantages, and CAT's weights and dynamic k since the last line."""
    import torch

    row = {
        "method": method,
        "reward_mean": logs.get("reward"),
        "frac_reward_zero_std": logs.get("frac_reward_zero_std"),
    }
    if window:
        adv = torch.cat([x["adv"] for x in window]).double()
        row.update(
            adv_mean=adv.mean().item(),
            adv_abs_mean=adv.abs().mean().item(),
            adv_min=adv.min().item(),
            adv_max=adv.max().item(),
            adv_frac_zero=(adv == 0).double().mean().item(),
        )
    weighted = [x for x in window if "w" in x]
    if not weighted:  # vanilla GRPO or a peer method: no CAT weight (1 where it multiplies at all)
        return {**row, "weight_mean": 1.0, "weight_min": 1.0, "weight_max": 1.0, "dynamic_k": None}
    w = torch.cat([x["w"] for x in weighted])
    ks = [k for x in weighted for k in (x["ks"] or ())]
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
    rows = [  # the columns a reward function receives, as in eval (rewards.problem_rewards)
        {
            "prompt": [{"role": "user", "content": user_message(p, cfg.instruction)}],
            "answer": p.answer,
            "id": p.id,
            "level": p.level,
            "subject": p.subject,
        }
        for p in problems
    ]
    return Dataset.from_list(rows), problems


def run_rl(cfg: RLRunConfig, progress: bool = True) -> dict:
    """Train with CAT-weighted GRPO; writes OUT/adapter, train_log.jsonl, run.json. Resumable."""
    strategy = cfg.validate()
    dataset, problems = build_dataset(cfg)
    extra = [load_reward(spec) for spec in cfg.reward]  # a spec that cannot load fails before --out is touched
    run = start_run(cfg)
    trainer_cls = _cat_grpo_trainer_class()
    from trl import GRPOConfig

    model, tokenizer = load_model(
        run.model_spec,
        load_in_4bit=cfg.load_in_4bit,
        max_seq_length=cfg.max_seq_length,
        lora=cfg.lora,
        trust_remote_code=cfg.trust_remote_code,
        fast_inference=cfg.vllm,
    )
    settings = dict(
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
        # correctness (pass@N and maj@N need it) plus the extra rewards: the scalar GRPO standardises
        reward_weights=[1.0, *reward_weights(cfg.reward, cfg.reward_weights)],
        scale_rewards="group",  # (r - mean) / (std + 1e-4) per group, the baseline's too (cat-spec §4)
        num_iterations=1,  # on-policy: one update per generation batch
        epsilon=0.2,
        mask_truncated_completions=False,
        # with vLLM, TRL keeps the sampler's own per-token log-probs: pass@N weights read those
        use_vllm=cfg.vllm,
        **({"vllm_mode": "colocate"} if cfg.vllm else {}),
    )
    args = GRPOConfig(**settings)
    trainer_ref: list = []
    trainer = trainer_cls(
        model=model,
        reward_funcs=[correct, *extra],  # correctness always: pass@N and maj@N read column 0
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        strategy=strategy,
        form=cfg.form,
        method=cfg.method,
        p_estimate=cfg.resolved_p_estimate,
        penalty=cfg.resolved_penalty,
        callbacks=[train_log_callback(run.log_path, trainer_ref, partial(_log_row, cfg.method))],
    )
    trainer_ref.append(trainer)
    record = {
        "config": cfgmod.to_dict(cfg),
        "trainer_args": pin_settings(trainer, settings),
        "strategy": str(strategy),
        "method": cfg.method,
        "n_problems": len(problems),
        "effective_batch": f"{cfg.prompts_per_step} prompts x {cfg.num_generations} rollouts "
        f"x {trainer.accelerator.num_processes} processes",
        "provenance": provenance(),
    }
    return train_and_save(trainer, tokenizer, run, record)
