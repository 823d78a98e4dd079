"""Samples: batched decoding and the samples.jsonl file (one line per finished problem).

Stage: model -> samples. Problems are cut into fixed chunks of `batch_size` over the whole
selection, and chunk i is sampled with seed (seed, i). Because chunks and their seeds do not
depend on what was already done, a run resumed after a kill, or split over processes, samples
exactly what one uninterrupted run would have (on the same machine and library versions).

Decoding is a small loop of catcli's own over the model's forward (`sample_completions`), not
`generate`:
  - each prompt is computed once and its KV cache copied to its n sequences;
  - every step feeds one token per live sequence, and a sequence that ends leaves the batch
    with its cache rows, so a chunk shrinks as its samples end instead of computing every row
    until its longest sample ends;
  - the next token is drawn by `draw_tokens`: temperature, then top-p from a top-k selection of
    the likeliest tokens rather than a sort of the whole vocabulary (a 152k-token sort of 32 rows
    cost as much as the forward on a CPU); greedy at temperature 0;
  - one generator per chunk, seeded with (seed, chunk), draws one uniform per sequence of the
    chunk at every step, live or not, so a sequence's draws do not depend on when others end.
  - on a CPU the attention reads each KV head's cached keys in place (`grouped_kv_attention`)
    where transformers' SDPA path would copy them once per query head at every step.
transformers' continuous batching (`generate_batch`) was the other way to shrink: it is not used
because it samples from the global generator on a thread of its own, in the order its scheduler
picks, so a sequence's tokens would depend on what shared its batch and when; and its paged
cache is read by the model's own attention, which Unsloth's patched forwards on a GPU replace.

samples.jsonl line (the format other tools may produce; only answer and completions needed):
  id, level, subject, answer (gold), completions [str], extracted [str|null],
  correct [bool], keys [str|null] (vote classes), optionally reward [float] (finite; what
  bon@k ranks by: `catcli eval --reward` writes the weighted sum of its rewards, rewards.py),
  tokens [int] (each completion's length in tokens, the end-of-sequence token excluded) and
  stop ["eos"|"length"] (it ended, or it was cut at --max-new-tokens)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from catcli.data import Problem
from catcli.errors import DataError
from catcli.grading import grade_completions
from catcli.rundir import read_jsonl

# The nucleus is looked for among the 64 likeliest tokens first, then among more for the rows whose
# top-p mass lies further out (a flat distribution), and in the whole sorted vocabulary last, so
# the distribution is exact. On a CPU a top-64 of 32 x 152k probabilities costs 12 ms, a top-1024
# 25 ms, a top-16384 97 ms and a full sort 540 ms.
WIDER = (64, 1024, 16384)


@dataclass(frozen=True)
class SamplingSettings:
    n: int
    temperature: float = 0.8  # 0: greedy decoding
    top_p: float = 0.95
    max_new_tokens: int = 512
    batch_size: int = 8  # problems per chunk; n sequences each


@dataclass(frozen=True)
class Completion:
    """One completion: its text, its length in tokens (end-of-sequence excluded), why it stopped."""

    text: str
    tokens: int
    stop: Literal["eos", "length"]


def chunk_seed(seed: int, chunk: int) -> int:
    return (seed * 1_000_003 + chunk) % 2**31


def chunks(problems: Sequence[Problem], batch_size: int) -> Iterator[tuple[int, list[Problem]]]:
    for i in range(0, len(problems), batch_size):
        yield i // batch_size, list(problems[i : i + batch_size])


# ---------------------------------------------------------------- the next token


def nucleus(logits, temperature: float, top_p: float):
    """The distribution temperature + top-p sampling draws from, (B, V), by a full sort.

    As transformers' TopPLogitsWarper: the tokens sorted ascending, those whose cumulative
    probability is at most 1 - top_p removed, the likeliest always kept; the rest renormalised.
    `draw_tokens` samples from this without sorting; tests compare the two.
    """
    import torch

    probs = torch.softmax(logits.double() / temperature, -1)
    ascending, order = probs.sort(-1)
    remove = ascending.cumsum(-1) <= 1 - top_p
    remove[..., -1] = False
    kept = probs.scatter(-1, order, ascending.masked_fill(remove, 0.0))
    return kept / kept.sum(-1, keepdim=True)


def _inverse_cdf(weights, uniforms):
    """Per row, the index whose cumulative weight first passes u x the row's total; (B, m) -> (B,).

    In float64: in float32 a u within 3e-8 of 1 would round the target up to the total and pick
    the last entry, whatever its weight.
    """
    import torch

    cdf = weights.double().cumsum(-1)
    target = (uniforms.double() * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=weights.shape[-1] - 1)


def draw_tokens(logits, temperature: float, top_p: float, uniforms):
    """The next token of each row: logits (B, V), uniforms (B,) in [0, 1) -> token ids (B,).

    Temperature 0 is greedy (argmax). Otherwise the distribution is `nucleus`'s, drawn by inverse
    CDF from the row's uniform: top-p keeps the likeliest tokens while the mass above each is
    below top_p, which `topk` finds among the k likeliest whenever they hold top_p of the mass
    (k widening through WIDER, then the whole vocabulary).
    """
    import torch

    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    if top_p >= 1.0:
        return _inverse_cdf(probs, uniforms)
    out = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    rows = torch.arange(probs.shape[0], device=probs.device)
    for k in (*WIDER, probs.shape[-1]):  # widen only the rows whose nucleus reaches past the top k
        top, index = probs[rows].topk(min(k, probs.shape[-1]), -1)
        inside = top.sum(-1) >= top_p if k < probs.shape[-1] else torch.ones_like(rows, dtype=torch.bool)
        above = top.cumsum(-1) - top  # the mass of the likelier tokens
        kept = torch.where(above < top_p, top, torch.zeros_like(top))[inside]
        picked = _inverse_cdf(kept, uniforms[rows][inside]).unsqueeze(-1)
        out[rows[inside]] = index[inside].gather(-1, picked).squeeze(-1)
        rows = rows[~inside]
        if rows.numel() == 0:
            break
    return out


# ---------------------------------------------------------------- decoding
def eos_ids(model, tokenizer) -> list[int]:
    """Every token that ends a sequence: the generation config's (Qwen has two) and the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    return sorted({e for e in [*eos, tokenizer.eos_token_id] if e is not None})


def growing_cache():
    """An empty DynamicCache whose layers keep their keys and values in buffers with room to grow.

    transformers' DynamicLayer appends each step's keys with torch.cat, copying the whole cache: on
    a CPU, at 32 rows of 1,000 tokens of qwen2.5-coder-1.5b, that copy was more than half of a
    decode step. Here a step writes one position, and a buffer doubles when full.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.buffers, self.length = None, 0
            end = self.length + key_states.shape[-2]
            if self.buffers is None or end > self.buffers[0].shape[-2]:
                room = max(end, 2 * self.length, 64)
                grown = []
                for new in (key_states, value_states):
                    buffer = new.new_empty((*new.shape[:-2], room, new.shape[-1]))
                    grown.append(buffer)
                if self.buffers is not None:
                    for old, buffer in zip(self.buffers, grown):
                        buffer[..., : self.length, :] = old[..., : self.length, :]
                self.buffers = grown
            self.buffers[0][..., self.length : end, :] = key_states
            self.buffers[1][..., self.length : end, :] = value_states
            self.length = end
            self.keys, self.values = (b[..., :end, :] for b in self.buffers)
            return self.keys, self.values

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.get_seq_length() > 0:
                self.buffers = [b.repeat_interleave(repeats, dim=0) for b in self.buffers]
                self.keys, self.values = (b[..., : self.length, :] for b in self.buffers)

        def batch_select_indices(self, indices) -> None:
            if self.get_seq_length() > 0:
                self.buffers = [b[indices, ...] for b in self.buffers]
                self.keys, self.values = (b[..., : self.length, :] for b in self.buffers)

    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer
    return cache


GROUPED_SDPA = "catcli_grouped_sdpa"


def _grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' SDPA attention, but keys and values stay one per KV head (SDPA's enable_gqa)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is None:  # transformers groups heads itself then, and handles the causal cases
        return sdpa_attention_forward(module, query, key, value, None, dropout, scaling, is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


@contextmanager
def grouped_kv_attention(model):
    """Within it, a CPU model on transformers' SDPA attention reads its cached keys and values as
    they are, one per KV head, instead of a copy per query head.

    transformers' SDPA path makes that copy whenever a mask is given, and left-padded sampling
    always gives one: qwen2.5-coder-1.5b has 6 query heads per KV head, and at 16 rows of 900 cached
    tokens the copy took half of a decode step on this CPU (10.8 s against 5.6 s a step, beside
    other work; equal at 64 tokens). torch's CPU SDPA takes the mask and grouped heads together. On
    CUDA a mask with enable_gqa leaves the fused kernels, and Unsloth's forwards replace this
    attention anyway: there, and for any other attention, nothing changes.
    """
    config = getattr(model, "config", None)
    if model.device.type != "cpu" or getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED_SDPA, _grouped_sdpa)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)
    model.set_attn_implementation(GROUPED_SDPA)
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")


def as_dynamic_cache(cache):
    """The cache a forward returned, as a DynamicCache.

    Take the returned one, not the one passed in: Unsloth's GPU forward builds a new cache rather
    than filling the DynamicCache it is given, and may return it as per-layer (key, value) pairs.
    """
    from transformers import DynamicCache

    return cache if isinstance(cache, DynamicCache) else DynamicCache(ddp_cache_data=cache)


class DecodeBatch:
    """The sequences of a chunk still decoding: their KV cache, attention mask and next positions.

    Built by the prefill: each prompt's forward pass runs once and its cache and last logits are
    copied to its n sequences (prompt-major). `step` feeds one token per live row; `keep` drops the
    rows that ended, cache rows with them. Call it under inference_mode and `grouped_kv_attention`.
    """

    def __init__(self, model, tokenizer, prompts: list[str], n: int):
        tokenizer.padding_side = "left"
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=enc["input_ids"],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=growing_cache(),
            use_cache=True,
            logits_to_keep=1,
        )
        self.model = model
        self.cache = as_dynamic_cache(out.past_key_values)
        self.cache.batch_repeat_interleave(n)
        self.logits = out.logits[:, -1].repeat_interleave(n, 0)
        self.mask = mask.repeat_interleave(n, 0)
        self.position = positions[:, -1:].repeat_interleave(n, 0)

    def keep(self, index) -> None:
        """Keep only these rows (a tensor of row indices on the model's device)."""
        self.cache.batch_select_indices(index)
        self.mask, self.position = self.mask[index], self.position[index]

    def step(self, tokens) -> None:
        """Feed one token per row (shape [rows]); `logits` become the next token's."""
        import torch

        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], -1)
        self.position = self.position + 1
        out = self.model(
            input_ids=tokens.unsqueeze(-1),
            attention_mask=self.mask,
            position_ids=self.position,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = as_dynamic_cache(out.past_key_values)
        self.logits = out.logits[:, -1]


def sample_completions(
    model,
    tokenizer,
    prompts: list[str],
    settings: SamplingSettings,
    seed: int,
    on_step: Callable[[int, int], None] | None = None,
) -> list[list[Completion]]:
    """n completions of each prompt (see the module docstring for how); texts without special tokens.

    `on_step(new_tokens, ended_sequences)` is called after every step, for progress.
    """
    import torch

    n, rows = settings.n, len(prompts) * settings.n
    eos = torch.tensor(eos_ids(model, tokenizer), device=model.device)
    generator = torch.Generator().manual_seed(seed)
    tokens: list[list[int]] = [[] for _ in range(rows)]
    stop: list[str] = ["length"] * rows
    with torch.inference_mode(), grouped_kv_attention(model):
        batch = DecodeBatch(model, tokenizer, prompts, n)
        live = torch.arange(rows)  # which of the chunk's sequences each batch row is
        for step in range(settings.max_new_tokens):
            uniforms = torch.rand(rows, generator=generator, dtype=torch.float64)[live]
            nxt = draw_tokens(batch.logits, settings.temperature, settings.top_p, uniforms.to(batch.logits.device))
            ended = torch.isin(nxt, eos)
            for row, token, done in zip(live.tolist(), nxt.tolist(), ended.tolist()):
                if done:
                    stop[row] = "eos"
                else:
                    tokens[row].append(token)
            if on_step is not None:
                on_step(step + 1, rows - len(live) + int(ended.sum()))
            if step + 1 == settings.max_new_tokens:
                break
            if ended.any():  # finished sequences leave the batch, their cache rows with them
                keep = (~ended).nonzero().squeeze(-1)
                if keep.numel() == 0:
                    break
                batch.keep(keep)
                live, nxt = live[keep.cpu()], nxt[keep]
            batch.step(nxt)
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
    flat = [Completion(t, len(ids), s) for t, ids, s in zip(texts, tokens, stop)]
    return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]


def sample_completions_vllm(
    model, prompts: list[str], settings: SamplingSettings, seed: int, eos: list[int], lora_request=None
) -> list[list[Completion]]:
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
    return [
        [
            Completion(
                c.text, sum(t not in eos for t in c.token_ids), "length" if c.finish_reason == "length" else "eos"
            )
            for c in o.outputs
        ]
        for o in outputs
    ]


def make_record(problem: Problem, completions: list[Completion]) -> dict:
    texts = [c.text for c in completions]
    g = grade_completions(problem.answer, texts)
    return {
        "id": problem.id,
        "level": problem.level,
        "subject": problem.subject,
        "answer": problem.answer,
        "completions": texts,
        "extracted": g.extracted,
        "correct": g.correct,
        "keys": g.keys,
        "tokens": [c.tokens for c in completions],
        "stop": [c.stop for c in completions],
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
        for column, kind in (("tokens", int), ("stop", str)):
            value = row.get(column)
            if value is not None and (
                not isinstance(value, list)
                or len(value) != len(comps)
                or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
                or (column == "stop" and not set(value) <= {"eos", "length"})
            ):
                what = "a count of tokens" if column == "tokens" else '"eos" or "length"'
                raise DataError(f"{where}: {column} must be a list with {what} per completion")
        if not all(c in row for c in ("correct", "keys")) or len(row["correct"]) != len(comps):
            g = grade_completions(str(row["answer"]), comps)
            row = {**row, "extracted": g.extracted, "correct": g.correct, "keys": g.keys}
        row.setdefault("id", f"line-{i + 1}")
        row.setdefault("level", None)
        by_id[str(row["id"])] = row
    return list(by_id.values())
