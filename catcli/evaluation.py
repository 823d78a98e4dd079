"""`catcli eval`: sample n completions per problem, grade them, and write pass@k / maj@k curves.

With `--reward SPEC` (repeatable; rewards.py) each completion also gets `reward`, the weighted
sum sum_j w_j r_j of the given rewards only (`--reward-weights`, default all 1; correctness is
not added: it is always graded and reported apart), and the metrics gain bon@k (the expected
best reward of k samples) and bon_correct@k (the correctness of that best sample).

data -> prompts -> model -> samples -> grades -> estimators -> curves, with every stage in its
own module; this file only sequences them and owns the output directory:
  OUT/run.json        resolved config + provenance, written before sampling (resume checks it)
  OUT/samples.jsonl   one line per finished problem (see samples.py)
  OUT/eval.json       config, model, data fingerprint, metrics with mean / se / ci, per level, and
                      model_dtype (models.dtype_name) of this invocation's sampling; null when a
                      resumed run found nothing left to sample
  OUT/curves.csv, OUT/curves.png
"""

from __future__ import annotations

import sys
import time
from functools import partial

from catcli import config as cfgmod
from catcli.backend import vllm_available
from catcli.config import EvalConfig
from catcli.curves import console, curves_csv, plot_curves, summarise, truncation_warning
from catcli.data import fingerprint, load_selection
from catcli.errors import UsageError
from catcli.models import resolve_model
from catcli.prompts import build_prompt
from catcli.rewards import RewardFn, load_reward, problem_rewards
from catcli.rundir import (
    append_jsonl,
    check_resume,
    merge_parts,
    prepare_out,
    provenance,
    read_jsonl,
    write_atomic,
    write_json,
)
from catcli.samples import (
    SamplingSettings,
    chunk_seed,
    chunks,
    eos_ids,
    load_samples,
    make_record,
    sample_completions,
)

# settings that change what is sampled or scored: a resumed run must agree on all of them
SAMPLING_KEYS = (
    "model",
    "data",
    "split",
    "levels",
    "subjects",
    "limit",
    "seed",
    "n",
    "temperature",
    "top_p",
    "max_new_tokens",
    "batch_size",
    "instruction",
    "load_in_4bit",
    "reward",
    "reward_weights",
)


def run_eval(cfg: EvalConfig, progress: bool = True) -> dict | None:
    """Run the whole evaluation; returns the eval.json object (None on ranks other than 0).

    Interrupted runs resume. Under `accelerate launch` / `torchrun` each process samples the chunks whose
    index it owns (i mod world size) into its own part file, and rank 0 merges them: chunk seeds
    do not depend on the number of processes, so the result equals a one-process run.
    """
    from accelerate import PartialState

    source = cfg.data
    problems = load_selection(
        source, cfg.split, levels=cfg.levels, subjects=cfg.subjects, limit=cfg.limit, seed=cfg.seed
    )
    backend = resolve_backend(cfg.backend)
    resolve_model(cfg.model)  # an unknown model fails here, before --out is touched
    rewards = [load_reward(spec) for spec in cfg.reward]  # so does a reward that cannot be loaded
    import torch

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: torchrun on CPU is MULTI_CPU
    samples_path = cfg.out / "samples.jsonl"
    if state.is_main_process:
        out = prepare_out(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite)
        if cfg.resume:
            check_resume(out, cfgmod.to_dict(cfg), cfgmod.to_dict(EvalConfig()), SAMPLING_KEYS)
        merge_parts(out)  # left by a killed multi-process run
        if not (out / "run.json").exists():
            decoding = "greedy" if cfg.temperature == 0 else "sampled"
            record = {"config": cfgmod.to_dict(cfg), "decoding": decoding, "provenance": provenance()}
            write_json(out / "run.json", record)
    state.wait_for_everyone()
    done = {str(r["id"]) for r in read_jsonl(samples_path)} if samples_path.exists() else set()

    settings = SamplingSettings(cfg.n_samples, cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.batch_size)
    todo = [
        (i, c)
        for i, c in chunks(problems, cfg.batch_size)
        if i % state.num_processes == state.process_index and any(p.id not in done for p in c)
    ]
    part = samples_path if state.num_processes == 1 else cfg.out / f"samples.part{state.process_index}.jsonl"
    dtype = _sample(cfg, backend, settings, rewards, todo, done, part, progress) if todo else None
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    merge_parts(cfg.out)

    by_id = {str(r["id"]): r for r in load_samples(samples_path)}
    records = [by_id[p.id] for p in problems if p.id in by_id]  # selection order, however sampled
    summary = summarise(records, list(cfg.k), cfg.seed)
    result = {
        "config": cfgmod.to_dict(cfg),
        "model": cfg.model,
        "data": {
            "source": source,
            "split": cfg.split,
            "n_problems": len(problems),
            "fingerprint": fingerprint(problems),
        },
        **summary,
        "model_dtype": dtype,
        "provenance": provenance(),
    }
    write_json(cfg.out / "eval.json", result)
    write_atomic(cfg.out / "curves.csv", curves_csv(summary))
    plot_curves(
        [(cfg.model, summary)], cfg.out / "curves.png", title=f"{cfg.model} on {source} ({len(records)} problems)"
    )
    warning = truncation_warning(summary, cfg.max_new_tokens)
    if warning:
        print(f"catcli: {warning}", file=sys.stderr)
    return result


def resolve_backend(backend: str) -> str:
    """auto -> vllm when the vllm package and a CUDA GPU are both present, else hf."""
    has_vllm = vllm_available()
    if backend == "vllm" and not has_vllm:
        raise UsageError("--backend vllm needs a CUDA GPU and the vllm package; use --backend hf")
    if backend == "auto":
        return "vllm" if has_vllm else "hf"
    return backend


def _load_sampler(cfg, backend: str):
    """A function (prompts, settings, seed) -> completions for the chosen backend, its tokenizer
    and the model's dtype."""
    from catcli.backend import quiet
    from catcli.models import dtype_name, load_for_vllm, load_model

    if backend == "vllm":
        from catcli.samples import sample_completions_vllm

        model, tokenizer, lora = load_for_vllm(
            cfg.model, load_in_4bit=cfg.load_in_4bit, max_seq_length=cfg.max_seq_length
        )
        eos = eos_ids(model, tokenizer)
        return (
            (lambda prompts, s, seed, on_step=None: sample_completions_vllm(model, prompts, s, seed, eos, lora)),
            tokenizer,
            dtype_name(model),
        )
    model, tokenizer = load_model(
        cfg.model,
        load_in_4bit=cfg.load_in_4bit,
        max_seq_length=cfg.max_seq_length,
        trust_remote_code=cfg.trust_remote_code,
    )
    from unsloth import FastLanguageModel

    with quiet():
        FastLanguageModel.for_inference(model)
    return (
        (lambda prompts, s, seed, on_step=None: sample_completions(model, tokenizer, prompts, s, seed, on_step)),
        tokenizer,
        dtype_name(model),
    )


def _sample(cfg, backend, settings, rewards: list[RewardFn], todo, done, samples_path, progress) -> str:
    """Sample the chunks TODO into SAMPLES_PATH; returns the model's dtype."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    sample, tokenizer, dtype = _load_sampler(cfg, backend)
    columns = (
        TextColumn("sampling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
    )
    start, n_samples, finished_problems = time.monotonic(), 0, 0
    with Progress(*columns, disable=not progress, transient=False, console=console(stderr=True)) as bar:
        total = sum(1 for _, chunk in todo for p in chunk if p.id not in done)
        task = bar.add_task("sampling", total=total, rate="", detail="")

        # piped to a log (a script's `2> log`) the bar draws nothing until it ends: write plain
        # lines instead, per chunk and at each quarter of the tokens inside one
        plain = progress and not bar.console.is_terminal
        quarter = max(1, settings.max_new_tokens // 4)

        def within_chunk(tokens: int, ended: int, sequences: int) -> None:
            # a chunk of long completions takes minutes: move the bar (and its ETA) as sequences end
            detail = f"chunk: {ended}/{sequences} sequences ended, {tokens}/{settings.max_new_tokens} tokens"
            bar.update(task, completed=finished_problems + ended / settings.n, detail=detail)
            if plain and tokens % quarter == 0:
                bar.console.print(f"sampling: {finished_problems}/{total} problems done, {detail}", highlight=False)

        for index, chunk in todo:
            prompts = [build_prompt(tokenizer, p, cfg.instruction) for p in chunk]
            on_step = partial(within_chunk, sequences=len(chunk) * settings.n) if progress else None
            completions = sample(prompts, settings, chunk_seed(cfg.seed, index), on_step=on_step)
            new = [(p, c) for p, c in zip(chunk, completions) if p.id not in done]
            rows = [make_record(p, c) for p, c in new]
            # scored before the append: a failing reward leaves only whole problems, and --resume redoes this chunk
            if rewards:
                texts = [[c.text for c in cs] for _, cs in new]
                scores = problem_rewards(rewards, cfg.weights, [p for p, _ in new], texts, cfg.instruction)
                rows = [{**row, "reward": r} for row, r in zip(rows, scores)]
            append_jsonl(samples_path, rows)
            done.update(p.id for p in chunk)
            n_samples += len(rows) * settings.n
            finished_problems += len(rows)
            rate = n_samples / (time.monotonic() - start)
            bar.update(task, completed=finished_problems, rate=f"{rate:.1f} samples/s", detail="")
            if plain:
                eta_min = (total - finished_problems) * settings.n / rate / 60
                done_line = f"sampling: {finished_problems}/{total} problems done, {rate:.2f} samples/s"
                bar.console.print(f"{done_line}, ETA {eta_min:.1f} min", highlight=False)
    return dtype
