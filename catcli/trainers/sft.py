"""`catcli sft`: CAT-weighted SFT (arXiv 2604.24957, cat-spec §1-3, §7) on TRL's SFTTrainer.

The only change to SFTTrainer is `compute_loss`: from one forward pass through TRL's fused LM
head (per-token log-probs of the completion, prompt tokens masked, no full logits), each
sequence's summed log-prob log p is passed to `objectives.sft_loss`, giving -log S(p) per
sequence, whose gradient is w_SFT(p) * grad(-log p). With `ce` this is plain summed-token NLL.

Reduction over the whole accumulated batch, so gradient accumulation stays exact:
  sequence   sum_i -log S(p_i) / #sequences     (answer targets; the paper's pass@N runs)
  token      sum_i -log S(p_i) / #target tokens  (solution targets; the paper's maj runs)

`--p-estimate success` (cat-spec §2.1) takes p from answers sampled from the current policy
instead: before training and every --p-every steps (default: each epoch) every training problem
gets p = (c + 1)/(m + 2) from m graded answers (callbacks.PEstimates), and each example's loss is
w_SFT(p) * NLL(target), w detached, with the same reductions. The gradient of -log S(p) is
w_SFT(p) * grad(-log p), and grad log p is the expected grad log pi(y) over the correct answers
y; SFT cannot take that expectation, so the gold target stands in for the set of correct
answers. The sequence estimate is the special case where the gold string is the only one.

`--hybrid` (cat-spec §5) swaps each sequence's -log p for its summed hybrid token loss
0.5 CE_t + 0.5 pairwise_t (K = 4 rivals per position) and scales it by the detached w_SFT(p_i),
so with `ce` it is exactly the paper's hybrid and with a strategy it is CAT-weighted the same
way CE is. It needs the full logits, so it skips the fused LM head.
"""

from __future__ import annotations

from catcli import objectives
from catcli.backend import import_unsloth
from catcli.config import SFTRunConfig
from catcli.data import load_selection
from catcli.prompts import build_target, user_message
from catcli.trainers import lifecycle

HYBRID_RIVALS = 4


def sample_rivals(logits, gold, k: int = HYBRID_RIVALS):
    """K rival tokens per position from softmax(logits) with the gold token masked, detached.

    logits (N, V), gold (N,) -> (N, K) token ids, drawn with replacement. The gold logit is set
    to -inf before the softmax (cat-spec §5): zeroing its probability afterwards leaves an
    all-zero row, which multinomial refuses, once the model puts all its mass on the gold token.
    """
    import torch

    z = logits.detach().float().scatter(-1, gold.unsqueeze(-1), float("-inf"))
    return torch.multinomial(torch.softmax(z, -1), k, replacement=True)


def hybrid_sequence_losses(logits, labels):
    """Per-sequence sums of 0.5 CE_t + 0.5 pairwise_t over target tokens, and log p; float64.

    logits (B, T, V), labels (B, T) with -100 on prompt and padding (unshifted, as HF passes).
    """
    import torch

    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != -100
    z = logits[mask].float()  # (N, V) target positions only
    gold = labels[mask]
    log_probs = torch.log_softmax(z, -1).gather(-1, gold.unsqueeze(-1)).squeeze(-1)
    rivals = sample_rivals(z, gold)
    pair = objectives.pairwise_token_loss(z.gather(-1, gold.unsqueeze(-1)).squeeze(-1), z.gather(-1, rivals))
    per_token = 0.5 * -log_probs + 0.5 * pair
    seq_of = torch.arange(labels.shape[0], device=labels.device).unsqueeze(-1).expand_as(labels)[mask]
    zeros = torch.zeros(labels.shape[0], dtype=torch.float64, device=labels.device)
    hybrid = zeros.index_add(0, seq_of, per_token.double())
    seq_log_p = zeros.index_add(0, seq_of, log_probs.double())
    return hybrid, seq_log_p


def _trainer_class():
    """Defined after `import unsloth`, which rewrites TRL's trainer classes on import."""
    import_unsloth()
    import torch
    from trl import SFTTrainer

    class CATSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss is the CAT objective -log S(p); only `compute_loss` differs."""

        _tag_names = ["trl", "sft", "catcli", "compute-aligned-training"]
        _paper = lifecycle.PAPER

        def __init__(self, *args, strategy: objectives.Strategy, reduction: str, hybrid: bool = False, **kwargs):
            super().__init__(*args, **kwargs)
            self.strategy = strategy
            self.reduction = reduction
            self.hybrid = hybrid
            self.cat_window: list[tuple[torch.Tensor, torch.Tensor]] = []  # (w_SFT, log p) per micro-batch
            # --p-estimate success: log p of each example's problem, keyed by the example's token ids
            # (callbacks.PEstimates fills it); None: p is the target's own probability
            self.success_log_p: dict[tuple[int, ...], float] | None = None
            self.p_refresh: dict | None = None  # the last refresh, for the next train_log line

        def _success_log_p(self, inputs):
            """(B,) log p of each row's problem from the sampled estimates."""
            ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
            try:
                values = [self.success_log_p[tuple(row[m].tolist())] for row, m in zip(ids, mask)]
            except KeyError:
                raise RuntimeError("a training batch row matches no training problem's tokens") from None
            return torch.tensor(values, dtype=torch.float64, device=ids.device)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # with sampled estimates p is the problem's, and the loss is w_SFT(p) NLL(target), w detached
            success = self.success_log_p is not None
            if self.hybrid:
                labels = inputs["labels"]
                outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
                hybrid, seq_log_p = hybrid_sequence_losses(outputs.logits, labels)
                log_p = self._success_log_p(inputs) if success else seq_log_p
                per_seq = objectives.w_sft(self.strategy, log_p) * hybrid
                label_count = (labels[:, 1:] != -100).sum()
            else:
                outputs = model(**inputs, use_cache=False, fused_lm_head=True)
                # float64 sum: a long solution's log p can reach -1e3 and must not lose its tail
                seq_log_p = outputs.log_probs.to(torch.float64).sum(-1)
                log_p = self._success_log_p(inputs) if success else seq_log_p
                if success:
                    per_seq = objectives.w_sft(self.strategy, log_p) * -seq_log_p
                else:
                    per_seq = objectives.sft_loss(self.strategy, seq_log_p)
                label_count = outputs.label_mask.sum()
            if self.reduction == "token":
                n_tokens = label_count if num_items_in_batch is None else num_items_in_batch
                loss = per_seq.sum() / torch.as_tensor(n_tokens, dtype=torch.float64).clamp(min=1)
                if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                    loss = loss * self.accelerator.num_processes  # DDP averages; the count spans all ranks
            else:
                # Trainer leaves accumulation to the loss when it passes num_items_in_batch
                steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
                loss = per_seq.sum() / (per_seq.numel() * steps)
            if model.training:
                self.cat_window.append((objectives.w_sft(self.strategy, log_p), log_p.detach()))
            loss = loss.to(torch.float32)
            return (loss, outputs) if return_outputs else loss

    return CATSFTTrainer


def _log_row(cfg: SFTRunConfig, trainer, logs: dict, window: list) -> dict:
    """loss is in the line already; add the CAT weights (their spread within the step's batch) and
    the mean p since the last line, and the last refresh of sampled estimates, if one came since."""
    import torch

    refresh, trainer.p_refresh = trainer.p_refresh, None
    if not window:
        return refresh or {}
    w = torch.cat([w for w, _ in window])
    p = torch.cat([lp for _, lp in window]).exp()
    q10, q90 = torch.quantile(w, torch.tensor([0.1, 0.9], dtype=w.dtype)).tolist()
    return {
        "weight_mean": w.mean().item(),
        "weight_min": w.min().item(),
        "weight_max": w.max().item(),
        "weight_p10": q10,
        "weight_p90": q90,
        "p_mean": p.mean().item(),
        "lr": logs.get("learning_rate"),
        **(refresh or {}),
    }


def _dataset(cfg: SFTRunConfig):
    """Prompt-completion conversations: TRL applies the chat template and masks the prompt."""
    from datasets import Dataset

    problems = load_selection(
        cfg.data, cfg.split, levels=cfg.levels, subjects=cfg.subjects, limit=cfg.limit, seed=cfg.seed
    )
    rows = [
        {
            "prompt": [{"role": "user", "content": user_message(p, cfg.instruction)}],
            "completion": [{"role": "assistant", "content": build_target(p, cfg.target)}],
        }
        for p in problems
    ]
    return Dataset.from_list(rows), problems


def _callbacks(cfg: SFTRunConfig, trainer, problems, out, resume_from, progress: bool) -> list:
    if cfg.p_estimate != "success":
        return []
    from catcli.trainers.callbacks import PEstimates

    return [PEstimates(trainer, cfg, problems, out, resume_from, progress)]


def _settings(cfg: SFTRunConfig) -> dict:
    return dict(
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        max_length=cfg.max_length,
        completion_only_loss=True,
        # one row per sequence, so each gets its own weight: Unsloth's GPU SFTTrainer switches
        # padding-free batching on unless told (one packed row per micro-batch, one weight for all)
        packing=False,
        padding_free=False,
    )


SPEC = lifecycle.TrainingSpec(
    trainer_class=_trainer_class,
    trl_config="SFTConfig",
    dataset=_dataset,
    settings=_settings,
    trainer_kwargs=lambda cfg: dict(strategy=cfg.strategy, reduction=cfg.reduction, hybrid=cfg.hybrid),
    load_kwargs=lambda cfg: dict(max_seq_length=cfg.max_length),
    log_row=_log_row,
    record=lambda cfg, trainer: {
        "effective_batch": cfg.batch_size * cfg.grad_accum * trainer.accelerator.num_processes
    },
    callbacks=_callbacks,
    summary=lambda cfg: (
        f"effective batch: {cfg.batch_size} x {cfg.grad_accum} accumulation per process; "
        f"strategy {cfg.strategy}, {cfg.target} targets, {cfg.reduction} reduction, p from {cfg.p_estimate}"
    ),
)


def build_trainer(cfg: SFTRunConfig, **kwargs):
    """The CATSFTTrainer `catcli sft` trains for `cfg`, ready (lifecycle.build_trainer's keywords)."""
    return lifecycle.build_trainer(SPEC, cfg, **kwargs)


def run_sft(cfg: SFTRunConfig, progress: bool = True) -> dict:
    """Train, checkpointing every save_steps; writes OUT/adapter, train_log.jsonl, run.json."""
    return lifecycle.run_training(SPEC, cfg, progress)
