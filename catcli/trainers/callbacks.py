"""What runs beside training, every so many optimizer steps, on the policy as it is then.

  PEstimates   `sft --p-estimate success`: sample answers to every training problem, grade them,
               and give the trainer each problem's p = (c + 1)/(m + 2) (cat-spec §2.1); the
               estimates are saved with each checkpoint, so a resumed run continues with them
  Evaluation   `--eval-data`: sample held-apart problems as `catcli eval` would, score pass@k /
               maj@k with CIs, and append a row to OUT/eval_log.jsonl (and to --report-to)

Imported after Unsloth (trainers/lifecycle.py builds the trainer first). Both sample with eval's
sampler (samples.sample_completions) and chunking: chunk i of the problems is sampled with seed
(seed, i), so a refresh or an evaluation is a function of the policy and the seed, the same on a
resumed run, and the same as `catcli eval` of that step's adapter. Under several processes each
samples the chunks eval would give it (i mod world size) and the results are gathered.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

from transformers import Trainer, TrainerCallback

from catcli import objectives
from catcli.curves import summarise
from catcli.grading import grade_completions
from catcli.prompts import build_prompt
from catcli.rundir import EVAL_LOG, P_ESTIMATES, append_jsonl, read_jsonl, write_json
from catcli.samples import SamplingSettings, chunk_seed, chunks, make_record, sample_completions


@contextlib.contextmanager
def inference(model, tokenizer):
    """The policy switched to sampling (eval mode, Unsloth's inference path) and back to training."""
    from unsloth import FastLanguageModel

    from catcli.backend import quiet

    training, side = model.training, tokenizer.padding_side
    with quiet():
        FastLanguageModel.for_inference(model)
    try:
        yield
    finally:
        tokenizer.padding_side = side  # the sampler pads left; the trainer's collator may rely on the side
        if training:
            with quiet():
                FastLanguageModel.for_training(model)
            model.train()


def sample_problems(model, tokenizer, problems, settings: SamplingSettings, seed: int, instruction: str, say=None):
    """{problem id: [Completion]} for every problem, chunked and seeded as `catcli eval` does, sampled
    by this process's share of the chunks and gathered from all. `say(done, total)` after each chunk."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    mine = [(i, c) for i, c in chunks(problems, settings.batch_size) if i % state.num_processes == state.process_index]
    out: dict[str, list] = {}
    with inference(model, tokenizer):
        for i, chunk in mine:
            prompts = [build_prompt(tokenizer, p, instruction) for p in chunk]
            sampled = sample_completions(model, tokenizer, prompts, settings, chunk_seed(seed, i))
            out.update((p.id, completions) for p, completions in zip(chunk, sampled))
            if say:
                say(len(out), len(problems))
    if state.num_processes > 1:
        merged: dict[str, list] = {}
        for part in gather_object([out]):
            merged.update(part)
        out = merged
    return out


def _say(progress: bool, what: str):
    def say(done: int, total: int) -> None:
        if progress:
            print(f"catcli: {what}: {done}/{total} problems sampled", file=sys.stderr, flush=True)

    return say


class PEstimates(TrainerCallback):
    """The success-rate estimate of each training problem's p, refreshed during training (cat-spec §2.1).

    Before training (unless a resumed checkpoint holds estimates) and every `every` optimizer
    steps, m answers to every training problem are sampled from the current policy (as the p_*
    sampling settings say) and graded, and
    the trainer weights each example by w_SFT(p) of its problem, p = (c + 1)/(m + 2). The trainer
    finds a batch row's problem by its token ids (`trainer.success_log_p`, keyed by them).
    """

    def __init__(self, trainer, cfg, problems, out: Path, resume_from: Path | None, progress: bool):
        self.trainer, self.cfg, self.problems, self.out, self.progress = trainer, cfg, problems, out, progress
        self.settings = SamplingSettings(
            cfg.p_samples, cfg.p_temperature, cfg.p_top_p, cfg.p_max_new_tokens, cfg.p_batch_size
        )
        rows = trainer.train_dataset["input_ids"]
        if len(rows) != len(problems):
            raise RuntimeError(
                f"{len(rows)} tokenized training examples for {len(problems)} problems: TRL drops an example whose "
                "target starts past --max-length, and --p-estimate success needs every problem's; raise --max-length"
            )
        self.keys = [tuple(r) for r in rows]  # the trainer keeps the problems' order
        self.p: dict[str, float] | None = None
        self.saved: dict | None = None
        path = resume_from / P_ESTIMATES if resume_from else None
        if path is not None and path.exists():
            self.saved = json.loads(path.read_text())
            self._use(self.saved["p"])
        self.every = cfg.p_every

    def _use(self, p: dict[str, float]) -> None:
        self.p = p
        log_p = [math.log(p[problem.id]) for problem in self.problems]
        self.trainer.success_log_p = dict(zip(self.keys, log_p))

    def refresh(self, step: int) -> None:
        start = time.monotonic()
        seed = chunk_seed(self.cfg.seed, step)  # one seed per refresh step: a resumed run redraws the same
        model, tok = self.trainer.model, self.trainer.processing_class
        say = _say(self.progress, f"p estimates at step {step}")
        sampled = sample_problems(model, tok, self.problems, self.settings, seed, self.cfg.instruction, say)
        correct = {
            p.id: sum(grade_completions(p.answer, [c.text for c in sampled[p.id]]).correct) for p in self.problems
        }
        m = self.cfg.p_samples
        self._use({pid: float(objectives.laplace_p(c, m)) for pid, c in correct.items()})
        self.saved = {"step": step, "m": m, "correct": correct, "p": self.p}
        ps = sorted(self.p.values())
        self.trainer.p_refresh = {
            "p_refresh_step": step,
            "p_refresh_seconds": time.monotonic() - start,
            "p_refresh_samples": m * len(self.problems),
            "p_refresh_quantiles": [ps[int(q * (len(ps) - 1))] for q in (0.0, 0.1, 0.5, 0.9, 1.0)],
        }
        if self.trainer.is_world_process_zero():
            write_json(self.out / P_ESTIMATES, self.saved)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.every is None:  # once an epoch
            per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            self.every = max(1, math.ceil(len(self.problems) / per_step))
        if self.p is None:
            self.refresh(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self.refresh(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir() and self.saved is not None:
            write_json(checkpoint / P_ESTIMATES, self.saved)  # the estimates it trained with


class Evaluation(TrainerCallback):
    """pass@k / maj@k of the policy on held-apart problems, every `eval_every` steps and at the end.

    Each evaluation appends one row to OUT/eval_log.jsonl (step, metrics overall and per level,
    lengths, seconds) after writing its samples to OUT/eval/step-N.jsonl, so `catcli compare` can pair
    two runs at a step; rows a resumed run already has are not evaluated again.
    """

    def __init__(self, trainer, cfg, problems, out: Path, progress: bool):
        self.trainer, self.cfg, self.problems, self.out, self.progress = trainer, cfg, problems, out, progress
        self.settings = SamplingSettings(
            cfg.eval_n_samples, cfg.eval_temperature, cfg.eval_top_p, cfg.eval_max_new_tokens, cfg.eval_batch_size
        )
        log = out / EVAL_LOG
        self.done = {row["step"] for row in read_jsonl(log)} if log.exists() else set()
        self.seconds = 0.0

    def evaluate(self, step: int) -> None:
        if step in self.done:
            return
        start = time.monotonic()
        trainer = self.trainer
        say = _say(self.progress, f"evaluating at step {step}")
        sampled = sample_problems(
            trainer.model, trainer.processing_class, self.problems, self.settings, self.cfg.eval_seed,
            self.cfg.instruction, say,
        )  # fmt: skip
        records = [make_record(p, sampled[p.id]) for p in self.problems]
        summary = summarise(records, list(self.cfg.eval_k), self.cfg.eval_seed)
        seconds = time.monotonic() - start
        self.seconds += seconds
        self.done.add(step)
        if not trainer.is_world_process_zero():
            return
        samples = self.out / "eval" / f"step-{step}.jsonl"
        samples.parent.mkdir(parents=True, exist_ok=True)
        samples.write_text("".join(json.dumps(r) + "\n" for r in records))
        row = {"step": step, **summary, "samples": len(records) * self.settings.n, "seconds": seconds}
        append_jsonl(self.out / EVAL_LOG, [row])
        # transformers' own log: TRL's GRPOTrainer.log would fold in and clear the step's training
        # metrics (reward, ...) before the step's own log line reads them. Its on_log also clears
        # should_log, which would drop the step's own line (loss, reward): keep the flag as it was.
        should_log = trainer.control.should_log
        Trainer.log(trainer, {f"eval_{m}": e["mean"] for m, e in summary["metrics"].items()})
        trainer.control.should_log = should_log

    def on_step_end(self, args, state, control, **kwargs):
        if self.cfg.eval_every and state.global_step % self.cfg.eval_every == 0:
            self.evaluate(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:  # not when Ctrl-C stopped it early
            self.evaluate(state.global_step)
