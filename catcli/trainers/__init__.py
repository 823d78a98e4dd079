"""The two trainers, named after their commands (sft.py, rl.py), and the run lifecycle they share.

A training run: resolve the model and prepare OUT (before anything loads), find the checkpoint
to resume, seed; build the TRL trainer; write run.json; train, saving a checkpoint on Ctrl-C;
save the adapter (rank 0 only) and record the final step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from catcli.errors import UsageError
from catcli.models import (
    ResolvedModel,
    adapter_lora,
    base_spec,
    resolve_model,
    save_adapter,
    save_merged,
    seed_everything,
)
from catcli.rundir import prepare_out, resume_checkpoint, write_json


@dataclass(frozen=True)
class TrainingRun:
    out: Path
    model_spec: str  # --init-adapter when given, else --model
    resume_from: Path | None
    seed: int

    @property
    def log_path(self) -> Path:
        return self.out / "train_log.jsonl"


def start_run(cfg) -> TrainingRun:
    """Everything that can fail on bad input happens here, before a model loads."""
    model_spec = cfg.init_adapter or cfg.model
    resolved = resolve_model(model_spec)  # an unknown model fails here, before --out is touched
    if cfg.init_adapter:
        check_adapter_lora(cfg, resolved)
    out = prepare_out(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite)
    resume_from = resume_checkpoint(out) if cfg.resume else None
    seed = seed_everything(cfg.seed)
    os.environ.setdefault("UNSLOTH_RETURN_LOGITS", "1")  # Unsloth on GPU returns no logits in training otherwise
    return TrainingRun(out, model_spec, resume_from, seed)


def check_adapter_lora(cfg, resolved: ResolvedModel) -> None:
    """--lora-* beside --init-adapter must agree with the adapter: it is trained as it was saved."""
    if resolved.adapter is None:
        raise UsageError(f"--init-adapter {cfg.init_adapter} is not an adapter (no adapter_config.json)")
    have = adapter_lora(resolved.adapter)
    asked = {"--lora-r": (cfg.lora_r, have.r), "--lora-alpha": (cfg.lora_alpha, have.alpha)}
    asked["--lora-targets"] = (tuple(sorted(cfg.lora_targets)) if cfg.lora_targets else None, have.targets)
    differ = [
        f"{flag} {want if not isinstance(want, tuple) else ','.join(want)}"
        for flag, (want, got) in asked.items()
        if want is not None and want != got
    ]
    if differ:
        raise UsageError(
            f"{', '.join(differ)} cannot apply beside --init-adapter: the adapter has r={have.r}, "
            f"alpha={have.alpha}, targets={','.join(have.targets)}; drop the LoRA flags or start a fresh LoRA"
        )


def common_args(cfg, run: TrainingRun, progress: bool) -> dict:
    """TrainingArguments both trainers set the same way: log every step, keep two checkpoints.

    Optimiser, scheduler and warm-up are always explicit: on a GPU Unsloth fills unset ones with
    its own defaults (adamw_8bit, 10 % warm-up), so leaving them unset would train a different
    recipe on each backend.
    """
    import torch

    return dict(
        use_cpu=not torch.cuda.is_available(),  # also what makes torchrun on CPU data-parallel (gloo)
        output_dir=str(run.out / "checkpoints"),
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optim,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        logging_steps=1,
        save_steps=cfg.save_steps,
        save_total_limit=2,
        seed=run.seed,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        disable_tqdm=not progress,
    )


# Settings that Unsloth's GPU configs may override even when given (scale_rewards under dr_grpo),
# and the trainer attribute TRL copies each into at construction, if any.
_PINNED = {
    "scale_rewards": "scale_rewards",
    "loss_type": "loss_type",
    "beta": "beta",
    "temperature": "temperature",
    "top_p": "top_p",
    "epsilon": "epsilon_low",
    "mask_truncated_completions": "mask_truncated_completions",
    "optim": None,
    "lr_scheduler_type": None,
    "warmup_steps": None,
    "learning_rate": None,
    "weight_decay": None,
    "max_grad_norm": None,
}
_UNCHECKED = {"use_cpu", "output_dir", "report_to", "disable_tqdm"}  # normalised by TrainingArguments itself


def _plain(value):
    value = getattr(value, "value", value)  # TrainingArguments turns some strings into enums
    return list(value) if isinstance(value, tuple) else value


def pin_settings(trainer, settings: dict) -> dict:
    """Make the trainer hold exactly `settings`; return its resolved arguments for run.json.

    Unsloth's GPU config classes rewrite some explicit values at construction, and TRL copies some
    into trainer attributes there too, so the pinned ones are set again on both, before training
    reads them. Every other explicit setting must already hold, or this raises: the run would not
    be the one asked for.
    """
    for key, attr in _PINNED.items():
        if key not in settings or _plain(getattr(trainer.args, key, None)) == _plain(settings[key]):
            continue
        setattr(trainer.args, key, settings[key])
        if attr and hasattr(trainer, attr):
            setattr(trainer, attr, settings[key])
    wrong = {
        key: (_plain(getattr(trainer.args, key, None)), value)
        for key, value in settings.items()
        if key not in _UNCHECKED and _plain(getattr(trainer.args, key, None)) != _plain(value)
    }
    for key, attr in _PINNED.items():
        if (
            key in settings
            and attr
            and hasattr(trainer, attr)
            and _plain(getattr(trainer, attr)) != _plain(settings[key])
        ):
            wrong[f"trainer.{attr}"] = (_plain(getattr(trainer, attr)), settings[key])
    if wrong:
        raise RuntimeError(f"the trainer does not hold the settings catcli gave it (held, asked): {wrong}")
    resolved = json.loads(json.dumps(trainer.args.to_dict(), default=str))
    for attr in {a for a in _PINNED.values() if a and hasattr(trainer, a)}:
        resolved[f"trainer.{attr}"] = _plain(getattr(trainer, attr))
    return dict(sorted(resolved.items()))


def train_log_callback(path: Path, trainer_ref: list, row: Callable[[dict, list], dict]):
    """Appends one JSON line per logged step: row(logs, window) with `step`, `loss` and `time`.

    `window` is what the trainer gathered in `cat_window` since the last line (the CAT weights);
    it is emptied on every rank, and only rank 0 writes.
    """
    from transformers import TrainerCallback

    class TrainLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            trainer = trainer_ref[0]
            if not logs or "loss" not in logs:
                return
            window, trainer.cat_window = trainer.cat_window, []
            if not state.is_world_process_zero:
                return
            line = {"step": state.global_step, "loss": logs["loss"], **row(logs, window), "time": time.time()}
            with path.open("a") as f:
                f.write(json.dumps(line) + "\n")

    return TrainLog()


def train_interruptibly(trainer, resume_from: Path | None) -> None:
    """trainer.train(); a first Ctrl-C finishes the step, saves a checkpoint, then raises KeyboardInterrupt.

    A second Ctrl-C stops at once. The checkpoint is what `--resume` continues from.
    """
    import signal

    from transformers import TrainerCallback

    interrupted = []

    class SaveAndStop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if interrupted:
                control.should_save = True
                control.should_training_stop = True

    def on_sigint(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)
        print("catcli: interrupted: saving a checkpoint after this step (Ctrl-C again to stop now)", file=sys.stderr)

    trainer.add_callback(SaveAndStop())
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt


def train_and_save(trainer, tokenizer, run: TrainingRun, record: dict, merged: bool = False) -> dict:
    """Write run.json, train, then save OUT/adapter (and OUT/merged) and the final step; rank 0 writes."""
    main = trainer.is_world_process_zero()
    if main:
        write_json(run.out / "run.json", record)
    train_interruptibly(trainer, run.resume_from)
    record = {**record, "global_step": trainer.state.global_step}
    if main:
        save_adapter(trainer.model, tokenizer, run.out / "adapter", base_spec(run.model_spec))
        if merged:
            save_merged(run.out / "adapter", run.out / "merged")
        write_json(run.out / "run.json", record)
    return record
