"""`catcli eval` sampling throughput, side by side in one run, on the same problems and settings:

  catcli     catcli.samples.sample_completions: its own decode loop (finished sequences leave the
             batch, top-p from a top-k selection)
  generate   what `catcli eval` ran before: the prompt computed once and its cache shared by its n
             samples, then `generate` (top-p by a full sort; every row computed until the chunk's
             longest sample ends)
  floor      the forward passes alone: catcli's schedule replayed (each chunk's prefill, then one
             step per token with the rows catcli had live), no sampling and no bookkeeping
  steps      one decode step's forward at 1, 8 and 32 rows after 64 and 896 cached tokens (median
             of 5), with catcli's attention and with transformers' own: how much a shrinking batch
             can save on this machine, where a step's cost is not proportional to its rows, and
             what reading grouped keys in place saves on long contexts

Samples/s of each, and catcli's against both. Prints one JSON object.

    python bench/eval_throughput.py [--quick]                 # the embedded model on arith
    python bench/eval_throughput.py --case math-1.5b          # qwen2.5-coder-1.5b, 8 MATH L1-3 x 4, 1,024 tokens
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import device

MATH_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "math" / "train.jsonl"
CASES = {
    # the must-show of issue 27: what users compare against model cards, on this CPU
    "math-1.5b": dict(
        model="qwen2.5-coder-1.5b", data=str(MATH_TRAIN), levels="1-3", problems=8, n=4, max_new_tokens=1024
    ),
}


def previous_sampler(model, tokenizer, prompts, settings, seed):
    """catcli's sampler before its own decode loop, kept here to measure against."""
    import torch
    from transformers import DynamicCache

    from catcli.samples import as_dynamic_cache

    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    ids, mask, n = enc["input_ids"], enc["attention_mask"], settings.n
    torch.manual_seed(seed)
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        prefill = model(
            input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
            past_key_values=DynamicCache(), use_cache=True,
        )  # fmt: skip
        cache = as_dynamic_cache(prefill.past_key_values)
        cache.batch_repeat_interleave(n)
        out = model.generate(
            input_ids=ids.repeat_interleave(n, 0), attention_mask=mask.repeat_interleave(n, 0),
            past_key_values=cache, do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
    return out.shape[1] - ids.shape[1]


def forward_floor(model, tokenizer, prompts, n: int, lengths: list[int]) -> None:
    """The forward passes catcli's decoding of these prompts made, with nothing else: the prefill,
    then one step per token, each with as many rows as were still live (`lengths` per sequence)."""
    import torch

    from catcli.samples import DecodeBatch, grouped_kv_attention

    with torch.inference_mode(), grouped_kv_attention(model):
        batch = DecodeBatch(model, tokenizer, prompts, n)
        live = torch.arange(len(lengths))
        for step in range(1, max(lengths)):
            keep = [i for i, row in enumerate(live.tolist()) if lengths[row] > step]
            if len(keep) < len(live):
                batch.keep(torch.tensor(keep, device=model.device))
                live = live[keep]
            batch.step(torch.zeros(len(live), dtype=torch.long, device=model.device))


def filled_cache(model, rows: int, context: int, generator):
    """catcli's sampling cache holding `context` random keys and values per layer, and its mask
    with one padded row, as a chunk of prompts of different lengths has: a long context without
    a prefill. Keys and values take the model's dtype, which on a CPU Unsloth picks by its bf16
    support."""
    import torch

    from catcli.samples import growing_cache

    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    shape = (rows, config.num_key_value_heads, context, head_dim)
    cache = growing_cache()
    for layer in range(config.num_hidden_layers):
        keys, values = (torch.randn(shape, generator=generator, dtype=model.dtype) for _ in range(2))
        cache.update(keys, values, layer)
    mask = torch.ones(rows, context, dtype=torch.long)
    mask[0, 0] = 0
    return cache, mask


def step_costs(model, rows_list: list[int], contexts: list[int], steps: int = 5) -> dict[str, dict[str, float]]:
    """Median seconds of one decode step's forward, by "rows x cached tokens": with catcli's
    attention (`grouped_kv_attention`, as it samples) and with transformers' own (a copy of the
    cached keys and values per query head). The two alternate step by step, so other work on the
    machine slows both alike."""
    import statistics

    import torch

    from catcli.samples import as_dynamic_cache, grouped_kv_attention

    g = torch.Generator().manual_seed(0)
    attention = {"catcli": lambda: grouped_kv_attention(model), "transformers": contextlib.nullcontext}
    costs = {}
    with torch.inference_mode():
        for rows in rows_list:
            for context in contexts:
                states = {arm: filled_cache(model, rows, context, g) for arm in attention}
                walls = {arm: [] for arm in attention}
                token = torch.randint(100, 1000, (rows, 1), generator=g)
                for _ in range(steps):
                    for arm, (cache, mask) in states.items():
                        mask = torch.cat([mask, mask.new_ones(rows, 1)], -1)
                        position = mask.sum(-1, keepdim=True) - 1
                        start = time.perf_counter()
                        with attention[arm]():
                            out = model(input_ids=token, attention_mask=mask, position_ids=position,
                                        past_key_values=cache, use_cache=True)  # fmt: skip
                        walls[arm].append(time.perf_counter() - start)
                        states[arm] = (as_dynamic_cache(out.past_key_values), mask)
                costs[f"{rows}x{context}"] = {arm: statistics.median(w) for arm, w in walls.items()}
    return costs


def report(arm: str, result: dict) -> None:
    """Each arm's figures on stderr as soon as it ends: a long case (the 1.5B one runs for an hour
    or more) that is stopped part-way still leaves the arms it finished."""
    print(json.dumps({arm: result[arm]}), file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 problems x 2 samples x 8 tokens (CI smoke)")
    ap.add_argument("--case", choices=sorted(CASES), help="a named case (its settings override the flags)")
    ap.add_argument("--model", default="smollm2-135m", help="any catcli --model (GPU: a random checkpoint)")
    ap.add_argument("--data", default="arith")
    ap.add_argument("--levels", default="1-3")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)  # catcli eval's default
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--arms", default="catcli,generate,floor,steps")
    args = ap.parse_args()
    if args.case:
        for key, value in CASES[args.case].items():
            setattr(args, key, value)
    if args.quick:
        args.problems, args.n, args.batch_size, args.max_new_tokens = 2, 2, 2, 8
    arms = args.arms.split(",")

    from catcli.backend import quiet
    from catcli.data import load_selection
    from catcli.models import load_model
    from catcli.prompts import build_prompt
    from catcli.samples import SamplingSettings, chunk_seed, chunks, sample_completions

    split = "test" if args.data == "arith" else "train"
    problems = load_selection(args.data, split, levels=args.levels, limit=args.problems, seed=0)
    start = time.perf_counter()
    model, tok = load_model(args.model)
    from unsloth import FastLanguageModel

    with quiet():
        FastLanguageModel.for_inference(model)
    load_s = time.perf_counter() - start
    settings = SamplingSettings(args.n, args.temperature, args.top_p, args.max_new_tokens, args.batch_size)
    work = [(i, [build_prompt(tok, p) for p in chunk]) for i, chunk in chunks(problems, args.batch_size)]
    sample_completions(model, tok, work[0][1][:1], SamplingSettings(1, max_new_tokens=2), 0)  # warm-up

    result = {"bench": "eval_throughput", "case": args.case, "model": args.model, "data": args.data,
              "problems": len(problems), "n": args.n, "batch_size": args.batch_size,
              "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
              "load_s": load_s}  # fmt: skip
    total = len(problems) * args.n
    lengths: list[list[int]] = []
    if "catcli" in arms:
        start, tokens, cut = time.perf_counter(), 0, 0
        for i, prompts in work:
            out = sample_completions(model, tok, prompts, settings, chunk_seed(0, i))
            lengths.append([c.tokens + (c.stop == "eos") for row in out for c in row])  # steps each sequence ran
            tokens += sum(c.tokens for row in out for c in row)
            cut += sum(c.stop == "length" for row in out for c in row)
        seconds = time.perf_counter() - start
        result["catcli"] = {"seconds": seconds, "samples_per_s": total / seconds, "tokens": tokens,
                            "truncated": cut / total, "mean_tokens": tokens / total}  # fmt: skip
        report("catcli", result)
    if "generate" in arms:
        start, steps = time.perf_counter(), 0
        for i, prompts in work:
            steps += previous_sampler(model, tok, prompts, settings, chunk_seed(0, i))
        seconds = time.perf_counter() - start
        result["generate"] = {"seconds": seconds, "samples_per_s": total / seconds, "chunk_steps": steps}
        report("generate", result)
    if "floor" in arms and lengths:
        start = time.perf_counter()
        for (_, prompts), chunk_lengths in zip(work, lengths):
            forward_floor(model, tok, prompts, args.n, chunk_lengths)
        seconds = time.perf_counter() - start
        result["floor"] = {"seconds": seconds, "samples_per_s": total / seconds}
        report("floor", result)
    if "steps" in arms:
        rows, contexts = ([1, 2], [8, 40]) if args.quick else ([1, 8, 32], [64, 896])
        result["step_s"] = step_costs(model, rows, contexts)
        report("step_s", result)
    if "catcli" in result and "generate" in result:
        result["speedup_vs_generate"] = result["generate"]["seconds"] / result["catcli"]["seconds"]
    if "catcli" in result and "floor" in result:
        result["catcli_over_floor"] = result["catcli"]["seconds"] / result["floor"]["seconds"]
    result.update(machine=device.describe(), quick=args.quick)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
