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

from catcli.models import base_spec, resolve_model, save_adapter, save_merged, seed_everything
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
    resolve_model(model_spec)  # an unknown model fails here, before --out is touched
    out = prepare_out(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite)
    resume_from = resume_checkpoint(out) if cfg.resume else None
    seed = seed_everything(cfg.seed)
    os.environ.setdefault("UNSLOTH_RETURN_LOGITS", "1")  # Unsloth on GPU returns no logits in training otherwise
    return TrainingRun(out, model_spec, resume_from, seed)


def common_args(cfg, run: TrainingRun, progress: bool) -> dict:
    """TrainingArguments both trainers set the same way: log every step, keep two checkpoints."""
    import torch

    return dict(
        use_cpu=not torch.cuda.is_available(),  # also what makes torchrun on CPU data-parallel (gloo)
        output_dir=str(run.out / "checkpoints"),
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=1,
        save_steps=cfg.save_steps,
        save_total_limit=2,
        seed=run.seed,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        disable_tqdm=not progress,
    )


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
