"""Models: resolve `--model`, load it through Unsloth (4-bit, LoRA), seed everything.

Stage: prompts -> model. `--model` takes
  smollm2-135m, qwen2.5-coder-1.5b   the built-in models (builtin_models.py)
  DIR            a local Hugging Face checkpoint (config.json), a PEFT adapter written by catcli
                 (adapter_config.json + catcli_base.json naming its base), or a catcli run
                 directory holding adapter/.
  OWNER/NAME     a Hugging Face hub id, e.g. unsloth/mistral-7b-instruct-v0.2-bnb-4bit.

Loading goes through Unsloth (backend.import_unsloth first); only safetensors are read, and
remote code runs only when asked for. The built-in models live in builtin_models.py.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from catcli.backend import import_unsloth, quiet
from catcli.builtin_models import EMBEDDED_ALIAS, QWEN_ALIAS, builtin_checkpoint
from catcli.config import LoraSettings
from catcli.errors import ModelError, UsageError

BASE_RECORD = "catcli_base.json"  # written beside an adapter: which --model it was trained from
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def seed_everything(seed: int) -> int:
    """Seed random, numpy and torch with seed + rank; returns the seed used, for run records."""
    import numpy as np
    import torch

    if not 0 <= seed < 2**32:
        raise UsageError(f"--seed must be in 0..{2**32 - 1}, got {seed}")
    seed = seed + int(os.environ.get("RANK", "0"))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


# ---------------------------------------------------------------- resolving --model


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights come from: a base (path or hub id) and an optional adapter on top."""

    spec: str
    base: str
    adapter: Path | None = None


def _adapter_base(adapter: Path) -> str:
    record = adapter / BASE_RECORD
    if record.exists():
        return json.loads(record.read_text())["model"]
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"adapter {adapter} does not say which base model it belongs to")
    return base


def base_spec(spec: str) -> str:
    """The --model that an adapter trained from `spec` records as its base (never an adapter)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        for adapter in (path, path / "adapter"):
            if (adapter / "adapter_config.json").exists():
                return _adapter_base(adapter)
        return str(path.resolve())
    return spec


def resolve_model(spec: str) -> ResolvedModel:
    """Turn a `--model` value into a base checkpoint and an optional adapter (no loading)."""
    builtin = builtin_checkpoint(spec)
    if builtin is not None:
        return ResolvedModel(spec, str(builtin))
    path = Path(spec).expanduser()
    if path.is_dir():
        for adapter in (path, path / "adapter"):
            if (adapter / "adapter_config.json").exists():
                base = resolve_model(_adapter_base(adapter))
                if base.adapter is not None:
                    raise ModelError(f"adapter {adapter} names another adapter as its base")
                return ResolvedModel(spec, base.base, adapter)
        if (path / "config.json").exists():
            return ResolvedModel(spec, str(path))
        raise ModelError(
            f"{spec} is a directory but holds no model: expected config.json (a checkpoint), "
            "adapter_config.json (an adapter) or adapter/ (a catcli run)"
        )
    if path.exists() or not _HUB_ID.match(spec):
        raise ModelError(
            f"unknown model {spec!r}: use {EMBEDDED_ALIAS}, {QWEN_ALIAS}, a local checkpoint or adapter "
            "directory, or a Hugging Face hub id such as owner/name"
        )
    return ResolvedModel(spec, spec)


# ---------------------------------------------------------------- loading


def default_load_in_4bit() -> bool:
    """4-bit base weights on a CUDA GPU, where memory is what runs out; 16-bit elsewhere.

    On this project's CPU machine 4-bit (bitsandbytes NF4, dequantised for every matmul) sampled
    qwen2.5-coder-1.5b at 1.35 tokens/s against 2.79 in 16-bit and loaded 4x slower, and trained
    the embedded model 1.8x slower (docs/benchmarks.md).
    """
    import torch

    return torch.cuda.is_available()


# Unsloth's offloaded gradient checkpointing, set on both paths (fresh LoRA, loaded adapter)
GRADIENT_CHECKPOINTING = "unsloth"


def adapter_lora(adapter: Path) -> LoraSettings:
    """The LoRA settings a saved adapter was trained with (its adapter_config.json)."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    targets = cfg.get("target_modules") or ()
    return LoraSettings(int(cfg["r"]), int(cfg["lora_alpha"]), tuple(sorted(targets)))


def _adapter_for_training(model):
    """Unsloth's own set-up of a loaded adapter, as FastLanguageModel.from_pretrained(adapter) does.

    On a GPU that is `patch_peft_model` (its LoRA kernels and offloaded gradient checkpointing);
    Unsloth's CPU backend has no such method, and there the set-up is what its get_peft_model
    gives a fresh LoRA: trainable inputs and gradient checkpointing.
    """
    from unsloth import FastLanguageModel

    patch = getattr(FastLanguageModel, "patch_peft_model", None)
    if patch is not None:
        return patch(model, use_gradient_checkpointing=GRADIENT_CHECKPOINTING)
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    return FastLanguageModel.for_training(model, use_gradient_checkpointing=True)


def _from_pretrained(spec: str, base: str, **kwargs):
    """FastLanguageModel.from_pretrained(base), safetensors only; a failure is one ModelError line."""
    import_unsloth()
    from unsloth import FastLanguageModel

    try:
        with quiet():
            return FastLanguageModel.from_pretrained(base, use_safetensors=True, **kwargs)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"cannot load model {spec!r} ({first})") from None


def _load_base(spec: str, *, load_in_4bit: bool | None, max_seq_length: int, vllm_lora_rank: int | None, **kwargs):
    """(resolved spec, model, tokenizer) of `spec`'s base; with `vllm_lora_rank`, beside Unsloth's vLLM engine."""
    resolved = resolve_model(spec)
    if vllm_lora_rank is not None:
        kwargs.update(fast_inference=True, max_lora_rank=vllm_lora_rank)
    model, tokenizer = _from_pretrained(
        spec,
        resolved.base,
        load_in_4bit=default_load_in_4bit() if load_in_4bit is None else load_in_4bit,
        max_seq_length=max_seq_length,
        **kwargs,
    )
    return resolved, model, tokenizer


def load_model(
    spec: str,
    *,
    load_in_4bit: bool | None = None,
    max_seq_length: int = 1024,
    lora: LoraSettings | None = None,
    trust_remote_code: bool = False,
    dtype=None,
    fast_inference: bool = False,
):
    """Load `--model` through Unsloth's FastLanguageModel; returns (model, tokenizer).

    `fast_inference` also starts Unsloth's vLLM engine beside the model (CUDA only), which TRL's
    GRPOTrainer then generates with (`catcli rl --vllm`).

    `dtype` (a torch dtype) is that of the unquantised weights; None lets Unsloth pick
    (bfloat16 where the hardware has it, else float16 on GPU and float32 on CPU).

    With `lora`, a fresh LoRA is attached unless the model is an adapter, which is loaded
    trainable instead (continuing a warm-up). Without it an adapter is loaded for inference.
    """
    resolved, model, tokenizer = _load_base(
        spec,
        load_in_4bit=load_in_4bit,
        max_seq_length=max_seq_length,
        vllm_lora_rank=(lora.r if lora else 64) if fast_inference else None,
        trust_remote_code=trust_remote_code,
        dtype=dtype,
    )
    from unsloth import FastLanguageModel

    if resolved.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(resolved.adapter), is_trainable=lora is not None)
        if lora is not None:
            model = _adapter_for_training(model)
    elif lora is not None:
        model = FastLanguageModel.get_peft_model(
            model,
            r=lora.r,
            lora_alpha=lora.alpha,
            target_modules=list(lora.targets),
            lora_dropout=0.0,
            bias="none",
            use_gradient_checkpointing=GRADIENT_CHECKPOINTING,
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def dtype_name(model) -> str:
    """What the model computes in ("bfloat16", "float32", ...): on a CPU Unsloth picks it from the
    hardware (bfloat16 where the CPU has bf16 compute, else float32; UNSLOTH_CPU_BF16=0/1 overrides),
    so a run records it beside its results."""
    return str(model.dtype).removeprefix("torch.")


def load_for_vllm(spec: str, *, load_in_4bit: bool | None = None, max_seq_length: int = 1024, max_lora_rank: int = 64):
    """Load through Unsloth's vLLM engine (`fast_inference`, CUDA only); returns (model, tokenizer, lora_request).

    An adapter is served as a vLLM LoRA request on top of its base rather than merged.
    """
    resolved, model, tokenizer = _load_base(
        spec, load_in_4bit=load_in_4bit, max_seq_length=max_seq_length, vllm_lora_rank=max_lora_rank
    )
    lora_request = model.load_lora(str(resolved.adapter)) if resolved.adapter is not None else None
    return model, tokenizer, lora_request


def save_adapter(model, tokenizer, out: Path, base_spec: str) -> None:
    """Write the LoRA adapter (PEFT format) plus the record of its base, atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / BASE_RECORD).write_text(json.dumps({"model": base_spec}) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_merged(adapter: Path, out: Path) -> None:
    """Merge a LoRA adapter into its base in 16 bit and save a plain checkpoint, atomically.

    The base is reloaded unquantised: merging into 4-bit weights would round the update away
    (and Unsloth's CPU backend refuses it).
    """
    import torch

    model, tokenizer = load_model(str(adapter), load_in_4bit=False)
    merged = model.merge_and_unload()
    merged = merged.to(
        torch.bfloat16 if not torch.cuda.is_available() or torch.cuda.is_bf16_supported() else torch.float16
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
