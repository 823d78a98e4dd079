"""Peak memory of a LoRA training step: 4-bit (bitsandbytes NF4) base weights against 16-bit.

Prints one JSON object. Target (issue 7): 4-bit / 16-bit <= 0.6. Each configuration runs in a
process of its own, because a process's peak only grows. The step is `catcli sft`'s trainer
(CAT pass@16, solution targets) for a few optimizer steps, so weights, activations, LoRA
gradients and AdamW state all count.

The target pairs 4-bit with 16-bit at the same compute dtype, bfloat16 (emulated, so slow, on
CPUs without native bf16); float32, what Unsloth picks on such CPUs, is paired the same way.

CPU: peak RSS over the steps (after loading, freed heap is handed back with malloc_trim and the
high-water mark reset via /proc/self/clear_refs, so loading's garbage does not count), as is
and minus the RSS the process had before the model was loaded (torch, transformers, TRL and
Unsloth themselves, ~0.9 GB, the same for every arm). GPU: torch.cuda.max_memory_allocated.

    python bench/memory.py [--quick] [--steps 2] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import device
from random_model import random_checkpoint

# name: (4-bit base weights, dtype of the unquantised weights and of the compute)
ARMS = {
    "4bit_bf16": (True, "bfloat16"),
    "16bit_bf16": (False, "bfloat16"),
    "4bit_fp32": (True, "float32"),
    "fp32": (False, "float32"),
}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(arm: str, model_spec: str, target: str, steps: int, batch_size: int) -> dict:
    """One configuration: load, train `steps` steps, report its memory in MiB."""
    from catcli.backend import import_unsloth
    from catcli.config import SFTRunConfig
    from catcli.models import load_model, seed_everything
    from catcli.objectives import parse_strategy
    from catcli.trainers.sft import build_trainer

    import_unsloth()
    import torch

    cuda = torch.cuda.is_available()
    seed_everything(0)
    cfg = SFTRunConfig(
        data="arith", levels="1-3", target=target, limit=64, strategy=parse_strategy("pass@16"),
        batch_size=batch_size, grad_accum=1, max_steps=steps, out=Path(tempfile.mkdtemp()),
    )  # fmt: skip
    before_load = _status_kb("VmRSS")
    load_in_4bit, dtype = ARMS[arm]
    model, tok = load_model(model_spec, load_in_4bit=load_in_4bit, dtype=getattr(torch, dtype), lora=cfg.lora)
    trainer = build_trainer(cfg, model=model, tokenizer=tok)
    load_peak = _status_kb("VmHWM")
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    after_load = _status_kb("VmRSS")
    # file-backed pages are the mmapped checkpoint: reclaimable, unlike anonymous memory
    anon_after_load, file_after_load = _status_kb("RssAnon"), _status_kb("RssFile")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS: the peak below is the steps', not loading's
    trainer.train()
    mib = 1 / 1024
    result = {
        "dtype": str(next(p.dtype for p in model.parameters() if p.is_floating_point())),
        "rss_before_load_mib": before_load * mib,
        "rss_after_load_mib": after_load * mib,
        "rss_anon_after_load_mib": anon_after_load * mib,
        "rss_file_after_load_mib": file_after_load * mib,
        "peak_rss_loading_mib": load_peak * mib,
        "peak_rss_step_mib": _status_kb("VmHWM") * mib,
        "rss_anon_after_step_mib": _status_kb("RssAnon") * mib,
        "rss_file_after_step_mib": _status_kb("RssFile") * mib,
    }
    result["peak_rss_step_above_imports_mib"] = result["peak_rss_step_mib"] - result["rss_before_load_mib"]
    if cuda:
        result["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def measure(model_spec: str, target: str, arms: list[str], steps: int, batch_size: int) -> dict:
    results = {}
    for arm in arms:
        cmd = [sys.executable, __file__, "--child", arm, "--model", model_spec, "--target", target]
        cmd += ["--steps", str(steps), "--batch-size", str(batch_size)]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        results[arm] = json.loads(r.stdout.strip().splitlines()[-1])
    key = (
        "peak_cuda_allocated_mib"
        if "peak_cuda_allocated_mib" in results[arms[0]]
        else "peak_rss_step_above_imports_mib"
    )
    out = {"target": target, "steps": steps, "batch_size": batch_size, "arms": results, "measure": key}
    out["ratio_4bit_16bit"] = results["4bit_bf16"][key] / results["16bit_bf16"][key]
    out["ratio_4bit_16bit_whole_process"] = (
        results["4bit_bf16"]["peak_rss_step_mib"] / results["16bit_bf16"]["peak_rss_step_mib"]
    )
    if "fp32" in results:
        out["ratio_4bit_fp32"] = results["4bit_fp32"][key] / results["fp32"][key]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the 16-bit pair, 1 step on 1 short sequence (CI smoke)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--child", choices=sorted(ARMS), help=argparse.SUPPRESS)
    ap.add_argument("--model", default="smollm2-135m", help="the small model's --model (CPU and --quick)")
    ap.add_argument("--target", default="solution", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    if args.child:
        print(json.dumps(child(args.child, args.model, args.target, args.steps, args.batch_size)))
        return

    bf16_pair = ["4bit_bf16", "16bit_bf16"]
    if args.quick:
        shapes = {"135m": measure(args.model, "answer", bf16_pair, 1, 1)}
    elif torch.cuda.is_available():  # GPU: a Qwen2.5-0.5B-shaped random model, real bf16 and NF4 kernels
        shapes = {
            "0.5b": measure(str(random_checkpoint("qwen2-0.5b")), "solution", bf16_pair, args.steps, args.batch_size)
        }
    else:
        shapes = {
            "135m": measure(args.model, "solution", list(ARMS), args.steps, args.batch_size),
            # SmolLM2-1.7B's shape, where weights (3.4 GB in bf16) dominate a short step as they do for 7B
            # models; one step on one answer-only sequence: emulated bf16 makes it take minutes here
            "1.7b": measure(str(random_checkpoint("smollm2-1.7b")), "answer", bf16_pair, 1, 1),
        }
    print(
        json.dumps(
            {
                "bench": "memory",
                "shapes": shapes,
                "ratio_4bit_16bit": {name: r["ratio_4bit_16bit"] for name, r in shapes.items()},
                "target_ratio": 0.6,
                "machine": device.describe(),
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
