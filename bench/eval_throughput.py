"""`catcli eval` sampling throughput against a naive per-problem `generate` loop.

Same model, same problems, same n, sampling settings and max_new_tokens, in one run. catcli
batches `batch_size` problems x n samples into one `generate` call and runs each prompt once
(its KV cache shared by its n samples); the naive loop is what one writes first: one
`generate(num_return_sequences=n)` per problem. Prints one JSON object. Target (issue 4):
>= 3x on CPU.

    python bench/eval_throughput.py [--quick] [--problems 16] [--n 8] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import time

import device


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 problems x 2 samples x 8 tokens (CI smoke)")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)  # catcli eval's default
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--model", default="smollm2-135m", help="any catcli --model (GPU: a random checkpoint)")
    args = ap.parse_args()
    if args.quick:
        args.problems, args.n, args.batch_size, args.max_new_tokens = 2, 2, 2, 8

    from catcli.data import generate_arith
    from catcli.models import load_model
    from catcli.prompts import build_prompt
    from catcli.samples import SamplingSettings, chunks, sample_completions

    model, tok = load_model(args.model)
    from unsloth import FastLanguageModel

    FastLanguageModel.for_inference(model)
    problems = generate_arith("test")[: args.problems]
    batched = SamplingSettings(n=args.n, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    sample_completions(model, tok, [build_prompt(tok, problems[0])], batched, 0)  # warm-up

    start = time.perf_counter()
    for i, chunk in chunks(problems, args.batch_size):
        sample_completions(model, tok, [build_prompt(tok, p) for p in chunk], batched, i)
    catcli_s = time.perf_counter() - start

    import torch

    start = time.perf_counter()
    for p in problems:
        enc = tok(build_prompt(tok, p), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            model.generate(
                **enc,
                do_sample=True,
                temperature=batched.temperature,
                top_p=batched.top_p,
                max_new_tokens=args.max_new_tokens,
                num_return_sequences=args.n,
                pad_token_id=tok.pad_token_id,
            )
    naive_s = time.perf_counter() - start

    total = args.problems * args.n
    print(
        json.dumps(
            {
                "bench": "eval_throughput",
                "problems": args.problems,
                "n": args.n,
                "batch_size": args.batch_size,
                "max_new_tokens": args.max_new_tokens,
                "catcli_samples_per_s": total / catcli_s,
                "naive_samples_per_s": total / naive_s,
                "speedup": naive_s / catcli_s,
                "target_speedup": 3.0,
                "machine": device.describe(),
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
