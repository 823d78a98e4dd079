"""The training and sampling backends: Unsloth (imported first, once) and vLLM, and their noise.

Unsloth rewrites transformers' and TRL's classes when it is imported, so every module that needs
a model, a trainer or a tokenizer calls `import_unsloth()` before importing either; on a CUDA GPU
that import is what turns `trl.SFTTrainer` into Unsloth's generated `UnslothSFTTrainer`.

Third-party libraries announce themselves while importing, loading and building (Unsloth's
banners, transformers' weight-loading bar, notices about code paths catcli does not take). Those
known to be harmless are dropped unless CATCLI_DEBUG=1 (`quiet`, `HARMLESS`, `quiet_warnings`);
everything else they print still reaches stderr, and stdout stays --json's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import sys
import warnings

HARMLESS = tuple(
    re.compile(p)
    for p in (
        r"🦥 Unsloth",  # banners
        r"^Unsloth \d{4}\.\d+\.\d+: no GPU found",
        r"^Unsloth \(CPU\): ",
        r"^==\(\(====\)\)==|^   \\\\   /\||^O\^O/ \\_/ \\|^\\        /|^ \"-____-\"",  # Unsloth's GPU banner
        r"xformers is installed but cannot load|^To install a matching xformers",
        # on a GPU Unsloth's GRPOConfig turns scale_rewards off under dr_grpo; catcli pins it back on
        r"The Dr GRPO paper recommends setting `scale_rewards` to False",
        r"Failed to load CPU gemm_4bit_forward from kernels-community",  # bitsandbytes, 4-bit unused on CPU
        r"Ignoring clean_up_tokenization_spaces=True for BPE tokenizer",  # transformers, a tokenizer default
        r"`torch_dtype` is deprecated! Use `dtype` instead!",
        # a chat model's tokenizer names its end-of-turn token as EOS; catcli's sampler stops at both
        r"The tokenizer has new PAD/BOS/EOS tokens that differ from the model config and generation config",
        r"is an Enum subclass and is now natively supported by torch.compile",  # torch, about unsloth's kernels
    )
)


# Python warnings, by the start of their message: raised while a library is imported, which can be
# before any `quiet` block (datasets brings in huggingface_hub while catcli reads its data)
HARMLESS_WARNINGS = (
    # huggingface_hub 1.33 deprecates the variable; Unsloth sets it on import, and HF docs once told users to
    r"The `HF_HUB_ENABLE_HF_TRANSFER` environment variable is deprecated",
)


def debugging() -> bool:
    return os.environ.get("CATCLI_DEBUG") == "1"


class _Filtered(io.TextIOBase):
    """A text stream that passes whole lines to `target` unless a HARMLESS pattern matches them."""

    def __init__(self, target):
        self.target, self.pending = target, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not any(p.search(line) for p in HARMLESS):
                self.target.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending and not any(p.search(self.pending) for p in HARMLESS):
            self.target.write(self.pending)
        self.pending = ""
        self.target.flush()


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in HARMLESS)


@contextlib.contextmanager
def quiet():
    """While third-party code runs: its stdout goes to stderr (stdout is --json's), and the lines
    it prints that HARMLESS knows are dropped, unless CATCLI_DEBUG=1."""
    if debugging():
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    err = _Filtered(sys.stderr)
    try:
        with contextlib.redirect_stdout(err), contextlib.redirect_stderr(err):
            yield
    finally:
        err.flush()


def quiet_warnings() -> None:
    """Ignore the warnings HARMLESS_WARNINGS knows, for the whole process, unless CATCLI_DEBUG=1."""
    if debugging():
        return
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def _quiet_logging() -> None:
    """Drop the harmless notices libraries log (before they are imported: some log while importing)."""
    if debugging():
        return
    for name in ("", "transformers", "bitsandbytes", "torch.utils._pytree", "unsloth", "unsloth_zoo"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropHarmless) for f in logger.filters):
            logger.addFilter(_DropHarmless())


def import_unsloth():
    """Import Unsloth before transformers/TRL are used: it patches them on import."""
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")  # no network here: skip its ping
    _quiet_logging()
    with quiet():
        import unsloth  # noqa: F401
    if not debugging():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" at every model load
    return unsloth


def vllm_available() -> bool:
    """vLLM can sample here: its package is installed and a CUDA GPU is present."""
    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
