"""One training run, in order, for both commands; sft.py and rl.py supply only what differs.

`run_training` owns the order: load the data, resolve the model and prepare OUT (so bad input
fails before anything is written), find the checkpoint to resume, then `build_trainer` (seed,
load the model, construct the TRL trainer, pin its settings), write run.json, train with Ctrl-C
checkpointing, and save the adapter (rank 0) with the final step. `build_trainer` is public:
tests and benches build the very trainer the CLI trains.

The TRL contract: catcli extends TRL's trainers (and Unsloth's generated rewrites of them on a
GPU) by overriding the methods listed in `TRL_CONTRACT` and reading the outputs listed beside
them; tests/test_unsloth_gpu.py checks that both kinds of class still have them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from catcli import config
from catcli.backend import import_unsloth, quiet
from catcli.config import RLRunConfig, TrainOptions
from catcli.errors import UsageError
from catcli.models import (
    adapter_lora,
    base_spec,
    dtype_name,
    load_model,
    resolve_model,
    save_adapter,
    save_merged,
    seed_everything,
)
from catcli.rundir import (
    EVAL_LOG,
    check_resume,
    prepare_out,
    provenance,
    read_jsonl,
    resume_checkpoint,
    write_json,
)

PAPER = {"title": "Compute Aligned Training: Optimizing for Test Time Inference", "id": "arXiv:2604.24957"}

# Every private TRL hook catcli overrides, with its signature, and what catcli reads from it.
TRL_CONTRACT = {
    "SFTTrainer": {
        # its forward through TRL's fused LM head (fused_lm_head=True) gives log_probs and label_mask
        "compute_loss": ("self", "model", "inputs", "return_outputs", "num_items_in_batch"),
    },
    "GRPOTrainer": {
        # returns the rewards gathered from every process, (B_all, n_funcs), in group order
        "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),
        # returns this process's batch; catcli rescales its "advantages" in place
        "_generate_and_score_completions": ("self", "inputs"),
    },
}
# keys of _generate_and_score_completions' output catcli reads, and old_per_token_logps when TRL kept it
GRPO_OUTPUT_KEYS = ("advantages", "prompt_ids", "prompt_mask", "completion_ids", "completion_mask")


@dataclass(frozen=True)
class TrainingSpec:
    """What a training command supplies to the shared lifecycle; everything else is common."""

    trainer_class: Callable[[], type]  # its CAT trainer, defined after `import unsloth`
    trl_config: str  # "SFTConfig" or "GRPOConfig": the class trl holds once Unsloth is imported
    dataset: Callable[[Any], tuple[Any, list]]  # cfg -> (datasets.Dataset, problems)
    settings: Callable[[Any], dict]  # cfg -> its own TRL arguments
    trainer_kwargs: Callable[[Any], dict]  # cfg -> its trainer's own constructor arguments
    load_kwargs: Callable[[Any], dict]  # cfg -> its own load_model arguments
    log_row: Callable[[Any, Any, dict, list], dict]  # (cfg, trainer, TRL's logs, CAT window) -> train_log columns
    record: Callable[[Any, Any], dict]  # (cfg, trainer) -> run.json fields of its own
    callbacks: Callable[..., list]  # (cfg, trainer, problems, out, resume_from, progress) -> its own callbacks
    summary: Callable[[Any], str]  # cfg -> the line said before the run (its effective batch)


def common_settings(cfg: TrainOptions, seed: int, progress: bool) -> dict:
    """TrainingArguments both trainers set the same way: log every step, keep two checkpoints.

    Optimiser, scheduler and warm-up are always explicit: on a GPU Unsloth fills unset ones with
    its own defaults (adamw_8bit, 10 % warm-up), so leaving them unset would train a different
    recipe on each backend.
    """
    import torch

    return dict(
        use_cpu=not torch.cuda.is_available(),  # also what makes torchrun on CPU data-parallel (gloo)
        output_dir=str(cfg.out / "checkpoints"),
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optim,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        logging_steps=1,
        save_steps=cfg.save_steps,
        save_total_limit=2,
        seed=seed,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        disable_tqdm=not progress,
    )


# Settings that Unsloth's GPU configs may override even when given (scale_rewards under dr_grpo),
# and the trainer attribute TRL copies each into at construction, if any.
PINNED = {
    "scale_rewards": "scale_rewards",
    "loss_type": "loss_type",
    "beta": "beta",
    "temperature": "temperature",
    "top_p": "top_p",
    "epsilon": "epsilon_low",
    "mask_truncated_completions": "mask_truncated_completions",
    "vllm_importance_sampling_correction": "vllm_importance_sampling_correction",
    "optim": None,
    "lr_scheduler_type": None,
    "warmup_steps": None,
    "learning_rate": None,
    "weight_decay": None,
    "max_grad_norm": None,
}
# Normalised by TrainingArguments itself, so not compared with what was given.
UNCHECKED = {"use_cpu", "output_dir", "report_to", "disable_tqdm"}
# The resolved arguments (run.json's trainer_args) that Unsloth's generated GPU configs and trainers
# set otherwise than stock TRL, for the same catcli run; every other field agrees
# (tests/test_unsloth_gpu.py). None of them changes the loss, the CAT weights or the advantages.
BACKEND_CHOSEN = {
    "fp16": "Unsloth turns on mixed precision to suit the model's dtype and the device (bf16 where the GPU has it, "
    "else fp16); stock TRL trains in the model's own dtype",
    "bf16": "as fp16",
    "fp16_full_eval": "as fp16, for evaluation",
    "bf16_full_eval": "as fp16, for evaluation",
    "dataset_num_proc": "tokenisation workers: Unsloth sizes them to the machine (TRL: in-process); the same tokens",
    "gradient_checkpointing_kwargs": "Unsloth's reentrant checkpointing: the same gradients",
    "logging_nan_inf_filter": "Unsloth logs a nan/inf loss as it is, where TRL leaves it out of the running mean",
    "torch_empty_cache_steps": "Unsloth frees the CUDA cache every 250 steps",
    "per_device_eval_batch_size": "evaluation only: catcli does not run TRL's evaluation loop",
    "eval_accumulation_steps": "evaluation only",
    "context_parallel_backend": "fields Unsloth's configs add or fill, at values that change nothing for one "
    "process without context parallelism, chunked losses or experts",
    "context_parallel_size": "as context_parallel_backend",
    "context_parallel_rotate_method": "as context_parallel_backend",
    "unsloth_num_chunks": "as context_parallel_backend",
    "router_aux_loss_coef": "as context_parallel_backend",
    "generation_kwargs": "Unsloth fills {} for TRL's None: no extra generation arguments either way",
}


def _plain(value):
    value = getattr(value, "value", value)  # TrainingArguments turns some strings into enums
    return list(value) if isinstance(value, tuple) else value


def pin_settings(trainer, settings: dict) -> None:
    """Make the trainer hold exactly `settings`, or raise.

    Unsloth's GPU config classes rewrite some explicit values at construction, and TRL copies some
    into trainer attributes there too, so the pinned ones are set again on both, before training
    reads them. Every other explicit setting must already hold: else the run would not be the one
    asked for.
    """
    for key, attr in PINNED.items():
        if key not in settings or _plain(getattr(trainer.args, key, None)) == _plain(settings[key]):
            continue
        setattr(trainer.args, key, settings[key])
        if attr and hasattr(trainer, attr):
            setattr(trainer, attr, settings[key])
        # TRL's GRPO builds its sampling config from these at construction: it must sample as pinned
        for sampling in (getattr(trainer, "generation_config", None), getattr(trainer, "generation_kwargs", None)):
            if key in ("temperature", "top_p") and sampling is not None:
                if isinstance(sampling, dict):
                    sampling[key] = settings[key]
                else:
                    setattr(sampling, key, settings[key])
    wrong = {
        key: (_plain(getattr(trainer.args, key, None)), value)
        for key, value in settings.items()
        if key not in UNCHECKED and _plain(getattr(trainer.args, key, None)) != _plain(value)
    }
    for key, attr in PINNED.items():
        if (
            key in settings
            and attr
            and hasattr(trainer, attr)
            and _plain(getattr(trainer, attr)) != _plain(settings[key])
        ):
            wrong[f"trainer.{attr}"] = (_plain(getattr(trainer, attr)), settings[key])
    if wrong:
        raise RuntimeError(f"the trainer does not hold the settings catcli gave it (held, asked): {wrong}")


def resolved_arguments(trainer) -> dict:
    """Every training argument as the trainer holds it, and the pinned trainer attributes: run.json's
    `trainer_args`, so runs on different hardware compare field by field."""
    resolved = json.loads(json.dumps(trainer.args.to_dict(), default=str))
    for attr in {a for a in PINNED.values() if a and hasattr(trainer, a)}:
        resolved[f"trainer.{attr}"] = _plain(getattr(trainer, attr))
    return dict(sorted(resolved.items()))


def build_trainer(
    spec: TrainingSpec,
    cfg: TrainOptions,
    *,
    model=None,
    tokenizer=None,
    dataset=None,
    progress: bool = False,
    **trainer_kwargs,
):
    """Seed, load the model (unless given), build the command's trainer on it and pin its settings.

    `model`/`tokenizer` and `dataset` replace what `cfg` would load (tests pass tiny models);
    `trainer_kwargs` add to or replace the command's own constructor arguments. Unsloth prints
    while building configs and trainers: that goes to stderr, stdout being --json's.
    """
    import_unsloth()
    os.environ.setdefault("UNSLOTH_RETURN_LOGITS", "1")  # Unsloth on GPU returns no logits in training otherwise
    seed = seed_everything(cfg.seed)  # before the model: a fresh LoRA's initial weights are random
    settings = {**common_settings(cfg, seed, progress), **spec.settings(cfg)}
    if model is None:
        model, tokenizer = load_model(
            cfg.init_adapter or cfg.model,
            load_in_4bit=cfg.load_in_4bit,
            lora=cfg.lora,
            trust_remote_code=cfg.trust_remote_code,
            **spec.load_kwargs(cfg),
        )
    if dataset is None:
        dataset, _ = spec.dataset(cfg)
    trainer_cls = spec.trainer_class()
    import trl

    with quiet():
        args = getattr(trl, spec.trl_config)(**settings)
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            **{**spec.trainer_kwargs(cfg), **trainer_kwargs},
        )
    if not progress:  # without its bar, Trainer prints every log dict on stdout, which is --json's
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    pin_settings(trainer, settings)
    return trainer


def check_adapter_lora(cfg: TrainOptions) -> None:
    """--lora-* beside --init-adapter must agree with the adapter: it is trained as it was saved."""
    resolved = resolve_model(cfg.init_adapter)
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


def _train_log(path: Path, trainer, row: Callable[[dict, list], dict]):
    """Appends one JSON line per logged step: row(logs, window) with `step`, `loss` and `time`.

    `window` is what the trainer gathered in `cat_window` since the last line (the CAT weights);
    it is emptied on every rank, and only rank 0 writes.
    """
    from transformers import TrainerCallback

    class TrainLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
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


# what a resumed training run may set otherwise than it started with
RESUMABLE = (
    "out",
    "resume",
    "overwrite",
    "max_steps",
    "epochs",
    "save_steps",
    "report_to",
    "save_merged",
    "eval_every",
)


def run_training(spec: TrainingSpec, cfg: TrainOptions, progress: bool = True) -> dict:
    """The whole run; writes OUT/adapter (OUT/merged with save_merged), train_log.jsonl and run.json
    (and eval_log.jsonl with --eval-data). Ends with a line on stderr when the CAT weights were the
    same for every sequence of the run: then it trained as CE (or GRPO) with a rescaled step."""
    from catcli.data import load_selection

    dataset, problems = spec.dataset(cfg)
    held_apart = None
    if cfg.eval_data:  # bad evaluation settings fail here too, before anything is written
        held_apart = load_selection(
            cfg.eval_data, cfg.eval_split, levels=cfg.eval_levels, limit=cfg.eval_limit, seed=cfg.eval_seed
        )
    resolve_model(cfg.model)  # an unknown model fails here, before --out is touched
    if cfg.init_adapter:
        check_adapter_lora(cfg)
    out = prepare_out(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite)
    if cfg.resume:  # the same run, continued: only how long and how often may change
        names = [f.name for f in dataclasses.fields(cfg) if f.name not in RESUMABLE]
        check_resume(out, config.to_dict(cfg), config.to_dict(type(cfg)()), tuple(names))
    resume_from = resume_checkpoint(out, logs=("train_log.jsonl", EVAL_LOG)) if cfg.resume else None
    print(spec.summary(cfg), file=sys.stderr)
    trainer = build_trainer(spec, cfg, dataset=dataset, progress=progress)
    from catcli.trainers.callbacks import Evaluation  # after Unsloth, which build_trainer imports

    row = partial(spec.log_row, cfg, trainer)
    trainer.add_callback(_train_log(out / "train_log.jsonl", trainer, row))
    for callback in spec.callbacks(cfg, trainer, problems, out, resume_from, progress):
        trainer.add_callback(callback)
    evaluation = Evaluation(trainer, cfg, held_apart, out, progress) if held_apart else None
    if evaluation:
        trainer.add_callback(evaluation)
    model_spec = cfg.init_adapter or cfg.model
    record = {
        "config": config.to_dict(cfg),
        "trainer_args": resolved_arguments(trainer),
        "strategy": str(cfg.strategy),
        "n_problems": len(problems),
        "model_dtype": dtype_name(trainer.model),
        **spec.record(cfg, trainer),
        "provenance": provenance(),
    }
    main = trainer.is_world_process_zero()
    if main:
        write_json(out / "run.json", record)
    start = time.monotonic()
    train_interruptibly(trainer, resume_from)
    record["global_step"] = trainer.state.global_step
    if evaluation:
        record["eval_seconds"] = evaluation.seconds
        record["train_seconds"] = time.monotonic() - start - evaluation.seconds
    if main:
        save_adapter(trainer.model, trainer.processing_class, out / "adapter", base_spec(model_spec))
        if cfg.save_merged:
            save_merged(out / "adapter", out / "merged")
        record.update(_weights_report(cfg, out / "train_log.jsonl"))
        write_json(out / "run.json", record)
        for line in record.get("notes", []):
            print(f"catcli: {line}", file=sys.stderr)
    return record


def _weights_report(cfg: TrainOptions, log: Path) -> dict:
    """What the run's CAT weights were: whether they were constant over the whole run (then it
    trained as CE or GRPO with a rescaled step), and for pass@N RL with sequence p the share of
    rollouts whose p sat at its 1e-10 floor. The same facts as lines for stderr, in "notes"."""
    from catcli.reweighting import constant_weight

    if cfg.strategy.kind == "ce" or cfg.strategy.n == 1 or getattr(cfg, "method", "cat") != "cat":
        return {}
    rows = [r for r in read_jsonl(log) if r.get("weight_min") is not None] if log.exists() else []
    if not rows:
        return {}
    w = constant_weight([r["weight_min"] for r in rows], [r["weight_max"] for r in rows])
    report: dict = {"constant_weight": w, "notes": []}
    floors = [r["p_floor_share"] for r in rows if r.get("p_floor_share") is not None]
    if floors:
        report["p_floor_share"] = sum(floors) / len(floors)
        report["notes"].append(
            f"{100 * report['p_floor_share']:.0f} % of the rollouts' sequence p sat at its 1e-10 floor, "
            "where their weight no longer depends on p"
        )
    if w is not None:
        baseline = "GRPO" if isinstance(cfg, RLRunConfig) else "CE"
        hint = "; --p-estimate success estimates p from sampled answers" if cfg.p_estimate == "sequence" else ""
        report["notes"].append(
            f"CAT weights were constant (w = {w:.3g} at every step): this run trained as {baseline} with a "
            f"{w:.3g}x step{hint}"
        )
    return report
