"""Samples: batched generation and the samples.jsonl file (one line per finished problem).

Stage: model -> samples. Problems are cut into fixed chunks of `batch_size` over the whole
selection, and chunk i is sampled with seed (seed, i): one `generate` call samples n
completions for every problem of the chunk. Because chunks and their seeds do not depend on
what was already done, a run resumed after a kill samples exactly what the uninterrupted run
would have (on the same machine and library versions).

samples.jsonl line (the format other tools may produce; only answer and completions needed):
  id, level, subject, answer (gold), completions [str], extracted [str|null],
  correct [bool], keys [str|null] (vote classes), optionally reward [float] (finite; what
  bon@k ranks by: `catcli eval --reward` writes the weighted sum of its rewards, rewards.py)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from catcli.data import Problem
from catcli.errors import DataError
from catcli.grading import grade_completions
from catcli.rundir import read_jsonl


@dataclass(frozen=True)
class SamplingSettings:
    n: int
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 512
    batch_size: int = 8  # problems per generate call; n sequences each


def chunk_seed(seed: int, chunk: int) -> int:
    return (seed * 1_000_003 + chunk) % 2**31


def chunks(problems: Sequence[Problem], batch_size: int) -> Iterator[tuple[int, list[Problem]]]:
    for i in range(0, len(problems), batch_size):
        yield i // batch_size, list(problems[i : i + batch_size])


def sample_completions(
    model,
    tokenizer,
    prompts: list[str],
    settings: SamplingSettings,
    seed: int,
    on_step: Callable[[int, int], None] | None = None,
) -> list[list[str]]:
    """n sampled completions for each prompt, from one batched `generate` call (left padding).

    Each prompt is run through the model once, and its KV cache copied to its n sequences:
    plain `num_return_sequences` would recompute the prompt n times, which on a CPU is most of
    the work when completions are short. The sampled tokens are the same either way (same
    shapes, same random draws); `tests/test_eval.py` checks that against plain `generate`.
    `on_step(new_tokens, finished_sequences)` is called after every generated token, for progress.
    """
    import torch
    from transformers import DynamicCache

    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    ids, mask, n = enc["input_ids"], enc["attention_mask"], settings.n
    torch.manual_seed(seed)
    with torch.inference_mode():
        # all but the last prompt token: generate needs at least one uncached token to start from
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        prefill = model(
            input_ids=ids[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, :-1],
            past_key_values=DynamicCache(),
            use_cache=True,
        )
        cache = as_dynamic_cache(prefill.past_key_values)
        cache.batch_repeat_interleave(n)
        out = model.generate(
            input_ids=ids.repeat_interleave(n, 0),
            attention_mask=mask.repeat_interleave(n, 0),
            past_key_values=cache,
            do_sample=True,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=[_Progress(on_step, _eos_ids(model, tokenizer), ids.shape[1])] if on_step else None,
        )
    texts = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    return sorted({e for e in [*eos, tokenizer.eos_token_id] if e is not None})


class _Progress:
    """A stopping criterion that never stops: generate calls it after every token, so a long
    chunk can report how far it is (tokens so far, sequences that have ended)."""

    def __init__(self, on_step: Callable[[int, int], None], eos: list[int], start: int):
        self.on_step, self.eos, self.start = on_step, eos, start

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids[:, self.start :]
        finished = int(torch.isin(new, torch.tensor(self.eos, device=new.device)).any(-1).sum())
        self.on_step(new.shape[1], finished)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def as_dynamic_cache(cache):
    """The cache a prefill returned, as a DynamicCache.

    Take the returned one, not the one passed in: Unsloth's GPU forward builds a new cache rather
    than filling the DynamicCache it is given, and may return it as per-layer (key, value) pairs.
    """
    from transformers import DynamicCache

    return cache if isinstance(cache, DynamicCache) else DynamicCache(ddp_cache_data=cache)


def sample_completions_vllm(
    model, prompts: list[str], settings: SamplingSettings, seed: int, lora_request=None
) -> list[list[str]]:
    """The same contract as `sample_completions`, through Unsloth's vLLM engine (GPU only)."""
    from vllm import SamplingParams

    params = SamplingParams(
        n=settings.n,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_new_tokens,
        seed=seed,
    )
    outputs = model.fast_generate(prompts, sampling_params=params, lora_request=lora_request, use_tqdm=False)
    return [[c.text for c in o.outputs] for o in outputs]


def make_record(problem: Problem, completions: list[str]) -> dict:
    g = grade_completions(problem.answer, completions)
    return {
        "id": problem.id,
        "level": problem.level,
        "subject": problem.subject,
        "answer": problem.answer,
        "completions": completions,
        "extracted": g.extracted,
        "correct": g.correct,
        "keys": g.keys,
    }


def load_samples(path: Path) -> list[dict]:
    """Read a samples file, grading lines that carry only answer and completions.

    Later lines for the same id replace earlier ones (a resumed chunk rewrites its problems).
    """
    if not path.exists():
        raise DataError(f"samples file {path} does not exist")
    if path.is_dir():
        path = path / "samples.jsonl"
        if not path.exists():
            raise DataError(f"{path.parent} holds no samples.jsonl")
    rows = read_jsonl(path)
    if not rows:
        raise DataError(f"samples file {path} is empty")
    by_id: dict[str, dict] = {}
    for i, row in enumerate(rows):
        where = f"{path} line {i + 1}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object")
        missing = [c for c in ("answer", "completions") if c not in row]
        if missing:
            raise DataError(f"{where}: missing column(s) {', '.join(missing)}")
        comps = row["completions"]
        if not isinstance(comps, list) or not comps or not all(isinstance(c, str) for c in comps):
            raise DataError(f"{where}: completions must be a non-empty list of strings")
        if not isinstance(row["answer"], (str, int, float)) or isinstance(row["answer"], bool):
            raise DataError(f"{where}: answer must be a string")
        if "reward" in row and (
            not isinstance(row["reward"], list)
            or len(row["reward"]) != len(comps)
            or not all(
                isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) for r in row["reward"]
            )
        ):
            raise DataError(f"{where}: reward must be a list of finite numbers, one per completion")
        if not all(c in row for c in ("correct", "keys")) or len(row["correct"]) != len(comps):
            g = grade_completions(str(row["answer"]), comps)
            row = {**row, "extracted": g.extracted, "correct": g.correct, "keys": g.keys}
        row.setdefault("id", f"line-{i + 1}")
        row.setdefault("level", None)
        by_id[str(row["id"])] = row
    return list(by_id.values())
