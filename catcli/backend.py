"""The training and sampling backends: Unsloth (imported first, once) and vLLM.

Unsloth rewrites transformers' and TRL's classes when it is imported, so every module that needs
a model, a trainer or a tokenizer calls `import_unsloth()` before importing either; on a CUDA GPU
that import is what turns `trl.SFTTrainer` into Unsloth's generated `UnslothSFTTrainer`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys


def quiet_stdout():
    """Unsloth prints banners and notes on stdout while importing and building trainers; stdout
    belongs to --json, so send them to stderr."""
    return contextlib.redirect_stdout(sys.stderr)


def import_unsloth():
    """Import Unsloth before transformers/TRL are used: it patches them on import."""
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")  # no network here: skip its ping
    # torch warns about each Enum that unsloth's kernels register with pytree: noise to a user
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    with quiet_stdout():
        import unsloth  # noqa: F401

    return unsloth


def vllm_available() -> bool:
    """vLLM can sample here: its package is installed and a CUDA GPU is present."""
    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
