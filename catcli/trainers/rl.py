"""`catcli rl`: GRPO with CAT advantage weights (arXiv 2604.24957, cat-spec §2, §4, §7).

On TRL's GRPOTrainer as Unsloth patches it. Everything TRL does is kept; the changes:
  `_calculate_rewards`              calls super, and records for this step what CAT needs from
                                    every process: the gathered rewards and, for maj@N, each
                                    group's most frequent wrong answer count (a `StepRewards`)
  `_generate_and_score_completions` calls super, then multiplies the group-standardised
                                    advantages by the CAT weight of each completion (after
                                    lowering all-wrong groups by the penalty: 0.5 for maj@N), in
                                    place; only while training (TRL's eval calls it too)
The weight is applied after standardisation: maj@N's weight is constant within a prompt, so
folding it into the reward would be cancelled by the group normalisation.

Weights (objectives.rl_weights): pass@N from each rollout's own sequence log-prob (clip 50, not
normalised), or with `--p-estimate success` from its prompt's Laplace success rate; maj@N from
the Laplace success rate with a dynamic k per prompt unless `:k=` is given (clip 10, batch-mean
1, all-wrong penalty); bon@N from the within-group reward rank.
`grpo` (or `ce`) is vanilla GRPO. The reward is graded correctness (1/0) plus the weighted
`--reward` functions (rewards.py); bon@N ranks that sum within each group, ties sharing q.
`--method` other than cat replaces the advantage by a peer's (peers.py) instead of weighting it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from catcli import objectives, peers
from catcli.backend import import_unsloth
from catcli.config import RLRunConfig
from catcli.data import load_selection
from catcli.grading import grade_completions
from catcli.prompts import user_message
from catcli.rewards import completion_text, correct, load_reward
from catcli.trainers import lifecycle

_NO_ANSWER = "\x00no-answer"  # failed extractions share one wrong key (cat-spec §2)


@dataclass(frozen=True)
class StepRewards:
    """What `_calculate_rewards` hands `_generate_and_score_completions` within one step.

    rewards: (B_all, n_funcs), gathered from every process in group order; c_max: per group, the
    count of its most frequent wrong answer (maj@N's dynamic k), every process's groups.
    """

    rewards: object
    c_max: list[int] | None


def _trainer_class():
    """Defined after `import unsloth`, which rewrites TRL's trainer classes on import."""
    import_unsloth()
    import torch
    from accelerate.utils import gather_object
    from trl import GRPOTrainer

    class CATGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose advantages carry the CAT weight of the test-time strategy."""

        _tag_names = ["trl", "grpo", "catcli", "compute-aligned-training"]
        _paper = lifecycle.PAPER

        def __init__(
            self,
            *args,
            strategy: objectives.Strategy,
            form: str = "raw",
            method: str = "cat",
            p_estimate: str | None = None,
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
            self._step_rewards: StepRewards | None = None

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            c_max = None
            if self.strategy.kind == "maj":
                # each process holds whole groups of M rollouts (its batch is prompts x M)
                m = self.num_generations
                c_max = [
                    wrong_mode_count(inputs[i]["answer"], [completion_text(c) for c in completions[i : i + m]])
                    for i in range(0, len(completions), m)
                ]
                c_max = gather_object(c_max) if self.accelerator.num_processes > 1 else c_max
            self._step_rewards = StepRewards(rewards, c_max)
            return rewards

        def _generate_and_score_completions(self, inputs):
            # read before super: Unsloth's generated version switches the model back to training mode
            training = self.model.training
            output = super()._generate_and_score_completions(inputs)
            step, self._step_rewards = self._step_rewards, None
            if not training:
                return output
            vanilla = self.method == "cat" and (self.strategy.kind == "ce" or self.strategy.n == 1) and not self.penalty
            extra = {} if vanilla else self._reweight(output, step)
            self.cat_window.append({**extra, "adv": output["advantages"].detach().reshape(-1).cpu()})
            return output

        def _reweight(self, output, step: StepRewards) -> dict:
            """Replace output["advantages"] (this process's rows, group order) by the method's.

            Returns what train_log reports beside the advantages: CAT's weights and dynamic k.
            """
            m = self.num_generations
            rewards = step.rewards.detach().to("cpu", torch.float64)  # (B_all, n_funcs)
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
                seq_log_p = self._rollout_seq_log_p(output)
                correct = correct[groups]
                result = objectives.rl_weights(self.strategy, correct, form=self.form, seq_log_p=seq_log_p.view(-1, m))
                w = result.weights
                extra = {"p_floor": objectives.at_rollout_floor(seq_log_p).double().mean().item()}
            else:  # group-level weights and batch-mean normalisation over every process's groups
                if self.strategy.kind == "maj":
                    c_max = torch.tensor(step.c_max)
                    result = objectives.rl_weights(self.strategy, correct, form=self.form, wrong_mode_counts=c_max)
                elif self.strategy.kind == "bon":  # ranks the combined reward within each group
                    result = objectives.rl_weights(self.strategy, correct, form=self.form, rewards=combined)
                else:  # grpo (w = 1, the penalty alone) or pass@N from each prompt's success rate
                    result = objectives.rl_weights(self.strategy, correct, form=self.form, p_estimate=self.p_estimate)
                w, correct = result.weights[groups], correct[groups]
                extra = {}
            scaled = objectives.cat_advantages(adv.view(-1, m).to("cpu"), w, correct, self.penalty)
            output["advantages"] = scaled.reshape(-1).to(adv.device, adv.dtype)
            return {"w": w.reshape(-1), "ks": result.ks, **extra}

        def _rollout_seq_log_p(self, output):
            """Summed log-probs of this process's rollouts under the rollout policy, (B_local,).

            The policy's probability at the sampling temperature, without top-p truncation, on
            every backend: TRL's own `old_per_token_logps` (kept off-policy, and with vLLM while
            its importance-sampling correction is on, which catcli pins) when they line up with
            the completion mask, else recomputed here. vLLM's own log-probs are never used: they
            are taken after top-p renormalisation, so the same rollout would weigh differently by
            backend. Unsloth's GPU rewrite of TRL's log-prob method returns them right-aligned and
            wider than the mask when prompts differ in length: those are recomputed too.
            """
            mask = output["completion_mask"]
            per_token = output.get("old_per_token_logps")
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


def _log_row(cfg: RLRunConfig, trainer, logs: dict, window: list) -> dict:
    """Reward, zero-std groups, the advantages, and CAT's weights and dynamic k since the last line;
    where the weight is one per prompt (maj@N, pass@N with success p), each prompt's; with sequence
    p, the share of rollouts whose p sat at the floor."""
    import torch

    row = {
        "method": cfg.method,
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
    floors = [x["p_floor"] for x in weighted if "p_floor" in x]
    per_prompt = cfg.strategy.kind == "maj" or cfg.p_estimate == "success"
    m = cfg.num_generations
    return {
        **row,
        "weight_mean": w.mean().item(),
        "weight_min": w.min().item(),
        "weight_max": w.max().item(),
        "dynamic_k": ks or None,
        **({"prompt_weights": w[::m].tolist()} if per_prompt else {}),
        **({"p_floor_share": sum(floors) / len(floors)} if floors else {}),
    }


def _dataset(cfg: RLRunConfig):
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


def _settings(cfg: RLRunConfig) -> dict:
    return dict(
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
        reward_weights=[1.0, *cfg.weights],
        scale_rewards="group",  # (r - mean) / (std + 1e-4) per group, the baseline's too (cat-spec §4)
        num_iterations=1,  # on-policy: one update per generation batch
        epsilon=0.2,
        mask_truncated_completions=False,
        use_vllm=cfg.vllm,
        # TRL's default, which Unsloth turns off: with it TRL scores vLLM's rollouts with the training
        # model (old_per_token_logps), which is what pass@N's sequence p reads on either backend
        vllm_importance_sampling_correction=True,
        **({"vllm_mode": "colocate"} if cfg.vllm else {}),
    )


def _trainer_kwargs(cfg: RLRunConfig) -> dict:
    extra = [load_reward(spec) for spec in cfg.reward]
    return dict(
        reward_funcs=[correct, *extra],  # correctness always: pass@N and maj@N read column 0
        strategy=cfg.strategy,
        form=cfg.form,
        method=cfg.method,
        p_estimate=cfg.p_estimate,
        penalty=cfg.all_wrong_penalty or 0.0,
    )


SPEC = lifecycle.TrainingSpec(
    trainer_class=_trainer_class,
    trl_config="GRPOConfig",
    dataset=_dataset,
    settings=_settings,
    trainer_kwargs=_trainer_kwargs,
    load_kwargs=lambda cfg: dict(max_seq_length=cfg.max_seq_length, fast_inference=cfg.vllm),
    log_row=_log_row,
    callbacks=lambda cfg, trainer, problems, out, resume_from, progress: [],
    summary=lambda cfg: (
        f"effective batch: {cfg.prompts_per_step} prompts x {cfg.num_generations} rollouts per process; "
        f"strategy {cfg.strategy} ({cfg.form}), method {cfg.method}, loss {cfg.loss_type}"
    ),
    record=lambda cfg, trainer: {
        "method": cfg.method,
        "effective_batch": f"{cfg.prompts_per_step} prompts x {cfg.num_generations} rollouts "
        f"x {trainer.accelerator.num_processes} processes",
    },
)


def build_trainer(cfg: RLRunConfig, **kwargs):
    """The CATGRPOTrainer `catcli rl` trains for `cfg`, ready (lifecycle.build_trainer's keywords)."""
    return lifecycle.build_trainer(SPEC, cfg, **kwargs)


def run_rl(cfg: RLRunConfig, progress: bool = True) -> dict:
    """Train with CAT-weighted GRPO; writes OUT/adapter, train_log.jsonl, run.json. Resumable."""
    for spec in cfg.reward:
        load_reward(spec)  # a spec that cannot load fails before --out is touched
    return lifecycle.run_training(SPEC, cfg, progress)
