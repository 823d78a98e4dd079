"""The embedded model: offline 4-bit + LoRA load, a cached conversion, atomic on failure."""

from __future__ import annotations

import time

import pytest

from catcli import backend, builtin_models, models
from catcli.errors import ModelError


@pytest.mark.slow
def test_embedded_model_loads_offline_in_4bit_with_lora():
    model, tok = models.load_model("smollm2-135m", load_in_4bit=True, lora=models.LoraSettings(r=8, alpha=16))
    names = {type(m).__name__ for m in model.modules()}
    assert "Linear4bit" in names  # bitsandbytes 4-bit base weights
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert tok.chat_template


@pytest.mark.slow
def test_second_load_skips_conversion():
    path = builtin_models.embedded_checkpoint()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    start = time.monotonic()
    assert builtin_models.embedded_checkpoint() == path
    # a conversion takes about a minute and finding the converted files milliseconds: 10 s tells
    # them apart even on a busy machine, where a 1 s bound could fail on a stall alone
    assert time.monotonic() - start < 10.0
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_interrupted_conversion_leaves_nothing_to_reuse(tmp_path, monkeypatch):
    monkeypatch.setenv("CATCLI_HOME", str(tmp_path))
    backend.import_unsloth()
    import transformers

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        builtin_models.embedded_checkpoint()
    assert not (tmp_path / "models" / "smollm2-135m").exists()
    assert list((tmp_path / "models").iterdir()) == []  # the temporary directory is gone too


def test_resolve_model_kinds(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    assert models.resolve_model(str(ckpt)).base == str(ckpt)
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text('{"base_model_name_or_path": "x"}')
    (run / "adapter" / models.BASE_RECORD).write_text(f'{{"model": "{ckpt}"}}')
    r = models.resolve_model(str(run))
    assert r.base == str(ckpt) and r.adapter == run / "adapter"
    assert models.resolve_model("owner/name").base == "owner/name"
    for bad in ("not-a-model", str(tmp_path / "missing"), str(tmp_path)):
        with pytest.raises(ModelError):
            models.resolve_model(bad)


def test_base_weights_default_to_4bit_only_on_a_gpu(monkeypatch):
    import torch

    from catcli.models import default_load_in_4bit

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_load_in_4bit() is False  # on a CPU 4-bit samples 2x slower (docs/benchmarks.md)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_load_in_4bit() is True
