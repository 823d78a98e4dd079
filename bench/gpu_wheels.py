"""The wheels a GPU machine without network needs to run catcli's GPU check (`make gpu-wheels`).

The GPU machine catcli is checked on (one NVIDIA H200, Python 3.12, torch 2.11 with CUDA 13,
transformers 5.17, peft, accelerate, typer, rich, matplotlib, pandas, pyarrow, pytest) lacks the
packages below; `pip install -e '.[dev]'` would resolve some 31 more (about 104 MiB), too much to
copy there at once. These are downloaded for CPython 3.12 on x86_64 Linux without their
dependencies, at the versions the CPU suite runs (constraints.txt, which `make install` honours), then
slimmed: unsloth without its `studio/` web UI (25 MiB) and bitsandbytes without its libraries for
other CUDA versions, ROCm and XPU (39 MiB), each wheel's RECORD rewritten to match. typer is
carried too, so the CLI there is the one tested here. Prints each wheel's size and the total, and
fails above 16 MiB.

    python bench/gpu_wheels.py [--out .whl/gpu] [--python 3.12]

`--python 3.11` fetches the same set for this machine's Python, to check the set imports here.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
UNSLOTH = "2026.10.9"  # the Makefile's --no-deps pin


# what the GPU machine lacks of catcli's install; the rest it has (its own torch, transformers,
# peft, accelerate, ...)
CARRIED = ("trl", "datasets", "dill", "multiprocess", "torchao", "cut-cross-entropy", "msgspec", "bitsandbytes",
           "math-verify", "latex2sympy2-extended", "antlr4-python3-runtime", "gguf", "typer")  # fmt: skip


def pinned(path: Path = ROOT / "constraints.txt") -> dict[str, str]:
    """The `name==version` lines of the install's constraints file, by canonical (PEP 503) name."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {canonicalize_name(name): version for name, version in (line.split("==") for line in lines if line)}


PINS = pinned()
PACKAGES = {name: PINS[name] for name in CARRIED} | {"unsloth": UNSLOTH, "unsloth_zoo": UNSLOTH}
CUDA = "130"  # torch 2.11's CUDA 13.0: the one bitsandbytes library kept
DROP = {
    "unsloth": re.compile(r"^studio/"),
    "bitsandbytes": re.compile(rf"^bitsandbytes/libbitsandbytes_(cuda(?!{CUDA}\.)\d+|rocm\d+|xpu\d+)\.so$"),
}
LIMIT_MIB = 16
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip


def slim(wheel: Path, drop: re.Pattern) -> None:
    """Rewrite `wheel` without the members `drop` matches, and without their RECORD lines."""
    src = zipfile.ZipFile(wheel)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            if drop.match(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = "".join(f"{line}\n" for line in lines if not drop.match(line.split(",", 1)[0])).encode()
            out.writestr(info, data)
    src.close()
    wheel.write_bytes(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(".whl/gpu"))
    ap.add_argument("--python", default="3.12", help="the GPU machine's Python (3.11: this machine's, to check here)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.whl"):
        old.unlink()
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    specs = [f"{name}=={version}" for name, version in PACKAGES.items()]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
         args.python, "--implementation", "cp", *platforms, "-d", str(args.out), *specs],
        check=True,
    )  # fmt: skip
    total = 0
    for wheel in sorted(args.out.glob("*.whl")):
        name = wheel.name.split("-")[0].lower()
        if name in DROP:
            slim(wheel, DROP[name])
        size = wheel.stat().st_size
        total += size
        print(f"{size / 2**20:7.2f} MiB  {wheel.name}")
    print(f"{total / 2**20:7.2f} MiB  in all, {args.out}")
    if total > LIMIT_MIB * 2**20:
        sys.exit(f"gpu_wheels: {total / 2**20:.1f} MiB is more than {LIMIT_MIB} MiB")


if __name__ == "__main__":
    main()
