"""CAT GRPO step time / vanilla GRPO step time: same model, prompts, seed, interleaved A B A B.

Each pair reseeds before both steps, so both generate the same rollouts and the ratio isolates
what CAT adds (grading keys, weights, and for pass@N the rollout log-probs). Prints one JSON
object. Target (issue 6 / 7): ratio <= 1.03. A step is TRL's training_step: generation,
scoring, forward and backward (the optimizer update is the same for both and left out).

    python bench/rl_overhead.py [--quick] [--strategy maj@4] [--pairs 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import device

from catcli.objectives import parse_strategy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 pair, 8 tokens (CI smoke)")
    ap.add_argument("--strategy", default="maj@4")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--num-generations", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--model", default="smollm2-135m", help="any catcli --model (GPU: a random checkpoint)")
    args = ap.parse_args()
    pairs, tokens = (1, 8) if args.quick else (args.pairs, args.max_new_tokens)

    from pathlib import Path

    import torch

    from catcli.config import RLRunConfig
    from catcli.trainers.rl import build_trainer

    m = args.num_generations
    cfg = RLRunConfig(
        model=args.model, data="arith", levels="1", limit=32, num_generations=m, prompts_per_step=2,
        max_new_tokens=tokens, out=Path(tempfile.mkdtemp()),
    )  # fmt: skip
    trainer = build_trainer(cfg)  # exactly what `catcli rl` trains, vanilla GRPO to start with
    model = trainer.model
    trainer.current_gradient_accumulation_steps = 1  # set by train()'s loop, which we bypass
    model.train()
    batches = iter(trainer.get_train_dataloader())
    strategies = {"grpo": parse_strategy("ce"), "cat": parse_strategy(args.strategy)}

    def step(name: str, batch, seed: int) -> float:
        trainer.strategy = strategies[name]
        torch.manual_seed(seed)
        start = time.perf_counter()
        trainer.training_step(model, batch, None)
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    warm = next(batches)
    step("grpo", warm, 0), step("cat", warm, 0)
    ratios, times = [], {"grpo": [], "cat": []}
    for i in range(pairs):
        batch = next(batches)
        order = ("grpo", "cat") if i % 2 == 0 else ("cat", "grpo")
        t = {name: step(name, batch, 1000 + i) for name in order}
        for name in t:
            times[name].append(t[name])
        ratios.append(t["cat"] / t["grpo"])
    print(
        json.dumps(
            {
                "bench": "rl_overhead",
                "strategy": args.strategy,
                "pairs": pairs,
                "num_generations": m,
                "prompts_per_step": 2,
                "max_new_tokens": tokens,
                "grpo_step_s": statistics.median(times["grpo"]),
                "cat_step_s": statistics.median(times["cat"]),
                "ratio_median": statistics.median(ratios),
                "pair_ratios": [round(r, 4) for r in ratios],
                "target_ratio": 1.03,
                "machine": device.describe(),
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
