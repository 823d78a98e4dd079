"""Random-init checkpoints built from a config (no download), for GPU tests and memory/speed benches.

Only shapes matter where these are used, so the weights are random and the tokenizer is
SmolLM2's, kept in tests/fixtures so that a GPU machine needs neither the embedded GGUF nor
the network. Saved once in bf16 under $CATCLI_HOME/bench/ and reused.

    python bench/random_model.py --shape qwen2-0.5b    # prints the checkpoint's path
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

TOKENIZER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "smollm2-tokenizer"

# architecture and the config fields that give it its size (vocabulary: the tokenizer's, 49,152)
SHAPES = {
    # two layers: the GPU tests run the real CLI on it in seconds
    "qwen2-tiny": ("qwen2", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)),
    # Qwen2.5-0.5B's body: GPU step-time and memory benches
    "qwen2-0.5b": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                 num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)),
    # SmolLM2-1.7B's body: where weights dominate a CPU training step's memory (bench/memory.py)
    "smollm2-1.7b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                                   num_attention_heads=32, num_key_value_heads=32, head_dim=64,
                                   tie_word_embeddings=True)),
}  # fmt: skip


def random_checkpoint(shape: str, home: Path | None = None) -> Path:
    """The checkpoint directory of `shape`, built on first use (written aside, then renamed)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from catcli.builtin_models import catcli_home

    out = (home or catcli_home()) / "bench" / f"random-{shape}"
    if (out / "config.json").exists():
        return out
    arch, fields = SHAPES[shape]
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    config = AutoConfig.for_model(
        arch,
        vocab_size=len(tok),
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **fields,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    tmp = out.with_name(f".{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    print(random_checkpoint(ap.parse_args().shape))


if __name__ == "__main__":
    main()
