"""The machine a benchmark ran on, in words, for its JSON: every figure is recorded with its device."""

from __future__ import annotations

import os
import platform


def describe() -> str:
    import torch

    cpu = f"{platform.machine()}, {os.cpu_count()} cores"
    if not torch.cuda.is_available():
        return cpu
    return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, torch {torch.__version__}), {cpu}"
