"""--init-adapter: trained through Unsloth's own adapter set-up; LoRA flags that would not apply are refused."""

from __future__ import annotations

import json

import pytest

from catcli.config import LoraSettings
from conftest import run_cli, tiny_llama


def _fake_adapter(path, r=16, alpha=32, targets=("q_proj", "v_proj")):
    path.mkdir()
    (path / "adapter_config.json").write_text(
        json.dumps({"r": r, "lora_alpha": alpha, "target_modules": list(targets)})
    )
    (path / "catcli_base.json").write_text(json.dumps({"model": "smollm2-135m"}))
    return path


@pytest.mark.parametrize("command", ["sft", "rl"])
def test_lora_flags_that_differ_from_the_adapter_are_a_usage_error(tmp_path, command):
    adapter = _fake_adapter(tmp_path / "warmup")
    out = tmp_path / "out"
    r = run_cli(command, "--data", "arith", "--init-adapter", str(adapter), "--lora-r", "8", "--out", str(out))
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert "--lora-r 8 cannot apply beside --init-adapter" in lines[-1] and "r=16" in lines[-1]
    assert "Traceback" not in r.stderr and not out.exists()


def test_lora_values_equal_to_the_adapters_are_accepted(tmp_path):
    from catcli.config import RLRunConfig
    from catcli.trainers.lifecycle import check_adapter_lora

    adapter = _fake_adapter(tmp_path / "warmup")
    cfg = RLRunConfig(init_adapter=str(adapter), lora_r=16, lora_alpha=32, lora_targets=("v_proj", "q_proj"))
    check_adapter_lora(cfg)  # same settings, other order: no error
    with pytest.raises(Exception, match="--lora-targets q_proj"):
        check_adapter_lora(RLRunConfig(init_adapter=str(adapter), lora_targets=("q_proj",)))


@pytest.fixture
def tiny_adapter(tmp_path):
    """A tiny random Llama saved as a checkpoint, and a LoRA adapter (r4/alpha8 on q,v) trained from it."""
    from peft import LoraConfig, get_peft_model

    from catcli.models import save_adapter

    model, tok = tiny_llama()
    base = tmp_path / "base"
    model.save_pretrained(base, safe_serialization=True)
    tok.save_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    save_adapter(peft, tok, tmp_path / "adapter", str(base))
    return tmp_path / "adapter"


def test_adapter_is_set_up_by_unsloths_patch_peft_model_where_unsloth_has_it(tiny_adapter, monkeypatch):
    from unsloth import FastLanguageModel

    from catcli.models import load_model

    calls = []

    def patch_peft_model(model, use_gradient_checkpointing="unsloth"):  # Unsloth's GPU backend has this
        calls.append(use_gradient_checkpointing)
        return model

    monkeypatch.setattr(FastLanguageModel, "patch_peft_model", patch_peft_model, raising=False)
    load_model(str(tiny_adapter), load_in_4bit=False, lora=LoraSettings(4, 8, ("q_proj", "v_proj")))
    assert calls == ["unsloth"]
    load_model(str(tiny_adapter), load_in_4bit=False)  # for inference: no training set-up
    assert calls == ["unsloth"]


def test_adapter_trains_like_a_fresh_lora_on_the_cpu_backend(tiny_adapter):
    from unsloth import FastLanguageModel

    from catcli.models import load_model

    assert not hasattr(FastLanguageModel, "patch_peft_model")  # the CPU backend
    model, _ = load_model(str(tiny_adapter), load_in_4bit=False, lora=LoraSettings(4, 8, ("q_proj", "v_proj")))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert model.base_model.model.is_gradient_checkpointing  # as get_peft_model sets a fresh LoRA up
