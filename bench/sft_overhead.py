"""CAT SFT step time / CE step time: same model, batch, seed and data, interleaved A B A B.

Prints one JSON object. Target (issue 5 / 7): ratio <= 1.02. A "step" here is one
forward + backward of CATSFTTrainer.training_step on a fixed micro-batch; the optimizer
update that follows is identical for both and left out so it does not dilute the ratio.

    python bench/sft_overhead.py [--quick] [--strategy pass@16] [--pairs 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import device

from catcli.objectives import parse_strategy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 pairs on a small batch (CI smoke)")
    ap.add_argument("--strategy", default="pass@16")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--target", default="solution", choices=["answer", "solution"])
    ap.add_argument("--model", default="smollm2-135m", help="any catcli --model (GPU: a random checkpoint)")
    args = ap.parse_args()
    pairs, batch_size = (3, 2) if args.quick else (args.pairs, args.batch_size)

    import tempfile
    from pathlib import Path

    from catcli.config import SFTRunConfig
    from catcli.trainers.sft import build_trainer

    cfg = SFTRunConfig(
        model=args.model, data="arith", levels="1-3", target=args.target, limit=64, reduction="sequence",
        batch_size=batch_size, grad_accum=1, max_steps=1, out=Path(tempfile.mkdtemp()),
    )  # fmt: skip
    trainer = build_trainer(cfg)  # exactly what `catcli sft` trains, CE to start with
    model = trainer.model
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.current_gradient_accumulation_steps = 1  # set by train()'s loop, which we bypass
    strategies = {"ce": parse_strategy("ce"), "cat": parse_strategy(args.strategy)}

    def step(name: str) -> float:
        trainer.strategy = strategies[name]
        start = time.perf_counter()
        trainer.training_step(model, dict(batch))
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step("ce"), step("cat")  # warm-up
    ratios, times = [], {"ce": [], "cat": []}
    for i in range(pairs):
        order = ("ce", "cat") if i % 2 == 0 else ("cat", "ce")  # A B, B A: no fixed position advantage
        t = {name: step(name) for name in order}
        for name in t:
            times[name].append(t[name])
        ratios.append(t["cat"] / t["ce"])
    print(
        json.dumps(
            {
                "bench": "sft_overhead",
                "strategy": args.strategy,
                "target": args.target,
                "pairs": pairs,
                "batch_size": batch_size,
                "ce_step_s": statistics.median(times["ce"]),
                "cat_step_s": statistics.median(times["cat"]),
                "ratio_median": statistics.median(ratios),
                "pair_ratios": [round(r, 4) for r in ratios],
                "target_ratio": 1.02,
                "machine": device.describe(),
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
