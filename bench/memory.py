"""Peak memory of a LoRA training step: 4-bit (bitsandbytes NF4) base weights against 16-bit.

Prints one JSON object. Target (issue 7): 4-bit / 16-bit <= 0.6. Each configuration runs in a
process of its own, because a process's peak only grows. The step is `catcli sft`'s trainer
(CAT pass@16, solution targets) for a few optimizer steps, so weights, activations, LoRA
gradients and AdamW state all count.

CPU: peak RSS over the steps (the high-water mark is reset after loading, via
/proc/self/clear_refs), reported as is and minus the RSS the process had before the model was
loaded (torch, transformers, TRL and Unsloth themselves, ~0.9 GB, the same for every arm).
The 16-bit arm is bfloat16 (emulated, so slow, on CPUs without native bf16); float32, what
Unsloth picks on such CPUs, is reported beside it. GPU: torch.cuda.max_memory_allocated.

    python bench/memory.py [--quick] [--steps 2] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

ARMS = {"4bit": (True, None), "16bit": (False, "bfloat16"), "fp32": (False, "float32")}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(arm: str, steps: int, batch_size: int) -> dict:
    """One configuration: load, train `steps` steps, report its memory in MiB."""
    from catcli.models import LoraSettings, import_unsloth, load_model, seed_everything

    import_unsloth()
    import torch
    from trl import SFTConfig

    from catcli.objectives import parse_strategy
    from catcli.trainers.sft import SFTRunConfig, _cat_sft_trainer_class, build_dataset

    cuda = torch.cuda.is_available()
    seed_everything(0)
    dataset, _ = build_dataset(SFTRunConfig(data="arith", levels="1-3", target="solution", limit=64))
    before_load = _status_kb("VmRSS")
    load_in_4bit, dtype = ARMS[arm]
    model, tok = load_model(
        "smollm2-135m", load_in_4bit=load_in_4bit, dtype=dtype and getattr(torch, dtype), lora=LoraSettings()
    )
    trainer = _cat_sft_trainer_class()(
        model=model,
        args=SFTConfig(
            output_dir=tempfile.mkdtemp(),
            per_device_train_batch_size=batch_size,
            max_steps=steps,
            report_to=[],
            disable_tqdm=True,
            save_strategy="no",
            completion_only_loss=True,
            dataset_num_proc=None,
        ),
        train_dataset=dataset,
        processing_class=tok,
        strategy=parse_strategy("pass@16"),
        reduction="token",
    )
    after_load, load_peak = _status_kb("VmRSS"), _status_kb("VmHWM")
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
        "peak_rss_loading_mib": load_peak * mib,
        "peak_rss_step_mib": _status_kb("VmHWM") * mib,
    }
    result["peak_rss_step_above_imports_mib"] = result["peak_rss_step_mib"] - result["rss_before_load_mib"]
    if cuda:
        result["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 step on 2 sequences (CI smoke)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--child", choices=sorted(ARMS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    steps, batch_size = (1, 2) if args.quick else (args.steps, args.batch_size)
    if args.child:
        print(json.dumps(child(args.child, steps, batch_size)))
        return

    arms = {}
    for arm in ARMS:
        cmd = [sys.executable, __file__, "--child", arm, "--steps", str(steps), "--batch-size", str(batch_size)]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        arms[arm] = json.loads(r.stdout.strip().splitlines()[-1])
    key = "peak_cuda_allocated_mib" if "peak_cuda_allocated_mib" in arms["4bit"] else "peak_rss_step_above_imports_mib"
    print(
        json.dumps(
            {
                "bench": "memory",
                "steps": steps,
                "batch_size": batch_size,
                "arms": arms,
                "measure": key,
                "ratio_4bit_16bit": arms["4bit"][key] / arms["16bit"][key],
                "ratio_4bit_fp32": arms["4bit"][key] / arms["fp32"][key],
                "ratio_4bit_16bit_whole_process": arms["4bit"]["peak_rss_step_mib"] / arms["16bit"]["peak_rss_step_mib"],
                "target_ratio": 0.6,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
