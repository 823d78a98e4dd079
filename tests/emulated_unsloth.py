"""Unsloth's CUDA-path trainers on a CPU, and the experiments tests/test_unsloth_gpu.py compares.

On a CUDA GPU `import unsloth` rewrites TRL's trainers and configs into generated classes
(UnslothSFTTrainer, UnslothGRPOTrainer, their configs); without one it loads a CPU backend that
rewrites nothing, which is what the rest of the suite runs on. `UNSLOTH_ALLOW_CPU=1` makes the
import take the CUDA path on a CPU but skip the rewrite; `emulate_cuda_trainers` then runs the
skipped steps, as Unsloth's GPU import does after PatchFastRL, so trl.SFTTrainer and
trl.GRPOTrainer become Unsloth's generated classes here. FastLanguageModel.from_pretrained still
needs CUDA, so the model is a stock transformers Qwen2 with a PEFT LoRA (and the for_training /
for_inference methods Unsloth's trainers call): this covers Unsloth's trainers and configs, not
its kernels, 4-bit, torch.compile or vLLM.

    python tests/emulated_unsloth.py {stock|unsloth} {sft|rl} OUT.json

runs every case of one family in one process (the generated classes replace TRL's for the life
of the process, so stock and Unsloth runs never share one) and writes {case: figures}: the
per-sequence CAT weights, losses and advantages, and the trainer's resolved arguments, plus the
signatures of the TRL methods catcli overrides ("contract"). Each case builds its trainer with
catcli's own builder, as `catcli sft` / `catcli rl` do. SFT runs with UNSLOTH_RETURN_LOGITS=0 from
the test: that variable blocks Unsloth's padding-free batching too, and catcli's own settings
must keep one row per sequence without its help.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "fixtures" / "smollm2-tokenizer"

SFT_CASES = {
    # name: (strategy, target, hybrid)
    "ce": ("ce", "answer", False),
    "pass@16": ("pass@16", "answer", False),
    "pass@16-solution": ("pass@16", "solution", False),
    "maj@16:k=4-solution": ("maj@16:k=4", "solution", False),
    "pass@4-hybrid": ("pass@4", "answer", True),
}
RL_CASES = {
    # name: (strategy, method, extra reward)
    "grpo": ("grpo", "cat", False),
    "pass@4": ("pass@4", "cat", False),
    "maj@4": ("maj@4", "cat", False),
    "bon@4": ("bon@4", "cat", True),
    "pkpo": ("pass@4", "pkpo", False),
    "passk": ("pass@2", "passk", False),
    "passk-best": ("pass@4", "passk-best", False),
}
M = 4  # rollouts per prompt
PATTERN = [1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0]  # stubbed correctness of the 3 x 4 rollouts
CLOSENESS = [0.1, 0.9, 0.5, 0.0, 1.0, 0.3, 0.3, 0.8, 0.2, 0.6, 0.4, 0.7]


def emulate_cuda_trainers() -> None:
    """Take Unsloth's CUDA path on this CPU and generate its TRL trainers (see the module docstring)."""
    os.environ["UNSLOTH_ALLOW_CPU"] = "1"
    from catcli.backend import import_unsloth

    import_unsloth()
    from unsloth.context_parallel import patch_sft_trainer
    from unsloth.models import rl as unsloth_rl
    from unsloth.trainer import _patch_trl_trainer

    unsloth_rl.patch_trl_disable_gradient_checkpointing()
    unsloth_rl.patch_trl_fused_lm_head_devices()
    unsloth_rl.patch_trl_fused_lm_head_kernel()
    unsloth_rl.patch_trl_rl_trainers()
    _patch_trl_trainer()
    patch_sft_trainer()
    import trl

    generated = (trl.SFTTrainer.__name__, trl.GRPOTrainer.__name__)
    if generated != ("UnslothSFTTrainer", "UnslothGRPOTrainer"):
        raise RuntimeError(f"Unsloth did not generate its trainers: trl holds {generated}")


def tiny_lora_model(lora):
    """A seeded 2-layer random Qwen2 with a PEFT LoRA, and SmolLM2's tokenizer (tests/fixtures)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    tok.pad_token = tok.pad_token or tok.eos_token
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    peft_config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, target_modules=list(lora.targets), lora_dropout=0.0, bias="none"
    )
    model = get_peft_model(model, peft_config)
    # what FastLanguageModel gives its models, and Unsloth's generated trainers call
    model.for_training = lambda use_gradient_checkpointing=True, **kw: model.train()
    model.for_inference = lambda **kw: model.eval()
    return model, tok


def run_sft_case(name: str, out: Path) -> dict:
    import torch

    from catcli.config import SFTRunConfig
    from catcli.strategy import parse_strategy
    from catcli.trainers.lifecycle import resolved_arguments
    from catcli.trainers.sft import build_trainer

    strategy, target, hybrid = SFT_CASES[name]
    cfg = SFTRunConfig(
        data="arith", levels="1-3", limit=8, strategy=parse_strategy(strategy), target=target, hybrid=hybrid,
        batch_size=2, grad_accum=2, max_steps=2, lr=1e-3, save_steps=1000, out=out / name,
    )  # fmt: skip
    model, tok = tiny_lora_model(cfg.lora)
    trainer = build_trainer(cfg, model=model, tokenizer=tok)
    torch.manual_seed(1)  # the hybrid's rival draws
    trainer.train()
    weights = [w.tolist() for w, _ in trainer.cat_window]
    log_p = [lp.tolist() for _, lp in trainer.cat_window]
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return {
        "weights": weights,
        "log_p": log_p,
        "losses": losses,
        "args": resolved_arguments(trainer),
        "trainer": type(trainer).__mro__[1].__name__,
    }


def run_rl_case(name: str, out: Path) -> dict:
    import torch
    from datasets import Dataset

    from catcli.config import RLRunConfig
    from catcli.strategy import parse_strategy
    from catcli.trainers.lifecycle import resolved_arguments
    from catcli.trainers.rl import build_trainer

    strategy, method, extra = RL_CASES[name]
    n_prompts = len(PATTERN) // M
    cfg = RLRunConfig(
        strategy=parse_strategy(strategy), method=method, num_generations=M, prompts_per_step=n_prompts,
        max_new_tokens=6, temperature=1.0, top_p=1.0, max_steps=1, lr=1e-3, reward=("closeness",) if extra else (),
        out=out / name,
    )  # fmt: skip
    model, tok = tiny_lora_model(cfg.lora)
    rows = [  # prompts of different lengths: left padding is exercised
        {"prompt": [{"role": "user", "content": f"What is {i} + {i}?" + " Think." * (3 * i)}], "answer": str(2 * i)}
        for i in range(n_prompts)
    ]

    def correctness(completions, **kwargs):
        return [float(x) for x in PATTERN]

    def closeness(completions, **kwargs):
        return list(CLOSENESS)

    funcs = [correctness, *([closeness] if extra else [])]
    trainer = build_trainer(cfg, model=model, tokenizer=tok, dataset=Dataset.from_list(rows), reward_funcs=funcs)
    inputs = [row for row in rows for _ in range(M)]
    result = {"args": resolved_arguments(trainer), "trainer": type(trainer).__mro__[1].__name__}
    for mode in ("train", "eval"):  # TRL's eval also generates and scores: CAT must leave it alone
        model.train(mode == "train")
        torch.manual_seed(7)
        output = trainer._generate_and_score_completions(inputs)
        result[mode] = {
            "advantages": output["advantages"].double().tolist(),
            "completion_ids": output["completion_ids"].tolist(),
            "completion_mask": output["completion_mask"].tolist(),
            "prompt_mask": output["prompt_mask"].tolist(),
            "window": len(trainer.cat_window),
            "weights": trainer.cat_window[-1]["w"].tolist()
            if trainer.cat_window and "w" in trainer.cat_window[-1]
            else None,
        }
        if mode == "train" and strategy.startswith("pass") and method == "cat":
            result[mode]["seq_log_p"] = trainer._rollout_seq_log_p(output).tolist()
        result[mode]["output_keys"] = sorted(output)
    return result


def contract() -> dict:
    """The parameters of each method catcli overrides, on the classes trl holds now."""
    import inspect

    import trl

    from catcli.trainers.lifecycle import TRL_CONTRACT

    def parameters(fn, name: str) -> list[str]:
        names = list(inspect.signature(fn).parameters)
        if names == ["self", "args", "kwargs"]:  # a wrapper without functools.wraps: the method it wraps
            cells = [c.cell_contents for c in fn.__closure__ or ()]
            inner = [f for f in cells if getattr(f, "__name__", "") == name]
            if inner:
                return parameters(inner[0], name)
        return names

    return {
        cls: {m: parameters(getattr(getattr(trl, cls), m), m) for m in methods} for cls, methods in TRL_CONTRACT.items()
    }


def main(argv: list[str]) -> int:
    mode, family, path = argv
    if mode == "unsloth":
        emulate_cuda_trainers()
    out = Path(path).parent / f"runs-{mode}-{family}"
    cases, run = (SFT_CASES, run_sft_case) if family == "sft" else (RL_CASES, run_rl_case)
    results: dict = {"contract": contract()}
    for name in cases:
        try:
            results[name] = run(name, out)
        except Exception as e:  # one broken case must not hide the others' figures
            results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    Path(path).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
