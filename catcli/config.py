"""Every command's options, declared once: frozen dataclasses whose fields are the flags.

A field is one option: its name is the long flag (`max_steps` -> `--max-steps`) and the recipe
key, its type and default are the option's, and its help sits in the field's metadata, as TRL's
configs keep theirs. The CLI builds its options from these fields (cli.py), so adding a flag is
adding a field. Shared groups (data selection, model, sampling, rewards, training, output) are
declared once and combined by inheritance; a command restates a field only where its default or
meaning differs.

A recipe is plain TOML holding one table per command (`[sft]`, `[eval]`, ...) keyed by field
name. Precedence is defaults < recipe < flags: every flag defaults to None in the CLI, so a flag
the user did not type never overrides the recipe. Values are parsed once, here (`resolve`): a
strategy becomes a `Strategy`, a k list and reward weights become numbers; unknown keys and wrong
types are refused with the dotted key and, where one is close, a suggestion. A config checks
itself on construction, before any model loads. Torch-free, so `catcli --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from catcli.errors import UsageError
from catcli.prompts import DEFAULT_INSTRUCTION
from catcli.strategy import Strategy, StrategyError, parse_strategy

Optim = Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit"]
Scheduler = Literal["constant", "linear", "cosine"]
ReportTo = Literal["none", "tensorboard", "wandb"]


def option(default, help: str, *, flag: str | None = None, shown: str | None = None, parse=None, repeat=False):
    """A dataclass field that is also a command-line option.

    flag: the option's spelling when it is not `--field-name` (e.g. `--json`, `--a/--no-a`).
    shown: what the help says the default is, when the field's own default (None) means
    "derived" (e.g. "4-bit on a CUDA GPU, 16-bit on a CPU"). parse: turns the flag's text (and a
    recipe's string) into the field's type. repeat: the flag may be given several times.
    """
    return field(
        default=default, metadata={"help": help, "flag": flag, "shown": shown, "parse": parse, "repeat": repeat}
    )


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def parse_strategy_flag(text: str) -> Strategy:
    """A strategy as typed; a bad one is a usage error."""
    try:
        return parse_strategy(text)
    except StrategyError as e:
        raise UsageError(str(e)) from None


def parse_ks_flag(text: str) -> tuple[int, ...]:
    """`1,4,16` as typed; a bad list is a usage error."""
    from catcli.estimators import EstimatorError, parse_ks

    try:
        return tuple(parse_ks(text))
    except EstimatorError as e:
        raise UsageError(str(e)) from None


def _numbers(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"invalid --reward-weights {text!r}: use one number per --reward, like 1,0.5") from None
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"invalid --reward-weights {text!r}: weights must be finite numbers")
    return values


def _at_least(cfg, names: tuple[str, ...], low: int) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < low:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")


# ---------------------------------------------------------------- shared groups


@dataclass(frozen=True)
class Options:
    """Base of every command's options: checks itself when built."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise UsageError for a bad value; subclasses extend it."""


@dataclass(frozen=True)
class DataOptions(Options):
    data: str = option("math", "math (hub), arith (built-in) or a .jsonl/.json/.parquet path.")
    split: str = option("train", "train | test (math also: math500).")
    levels: str = option("1-3", "Levels to keep, e.g. 1-3 or 1,2.")
    subjects: tuple[str, ...] = option((), "Comma-separated subjects to keep.", parse=_comma_list)
    limit: int | None = option(None, "Keep a seeded random subset of this many problems.")
    seed: int = option(0, "Seed for selection, sampling and bootstrap.")

    def check(self) -> None:
        super().check()
        _at_least(self, ("limit",), 1)
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"--seed must be in 0..{2**32 - 1}, got {self.seed}")


@dataclass(frozen=True)
class ModelOptions(Options):
    model: str = option(
        "smollm2-135m",
        "smollm2-135m (embedded), qwen2.5-coder-1.5b, a checkpoint/adapter/run dir, or a hub id.",
    )
    load_in_4bit: bool | None = option(
        None,
        "4-bit base weights.",
        flag="--load-in-4bit/--no-load-in-4bit",
        shown="4-bit on a CUDA GPU, 16-bit on a CPU",
    )
    trust_remote_code: bool = option(False, "Run a hub model's own code.")


@dataclass(frozen=True)
class RunOptions(DataOptions, ModelOptions):
    """A command that prompts a model on selected problems and writes an output directory."""

    instruction: str = option(DEFAULT_INSTRUCTION, "Appended to each problem; '' for none.")
    out: Path = option(Path("runs/run"), "Output directory.")
    resume: bool = option(False, "Continue the interrupted run in --out.")
    overwrite: bool = option(False, "Replace a non-empty --out.")

    def check(self) -> None:
        super().check()
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other: pick one")


@dataclass(frozen=True)
class SamplingOptions(Options):
    """Sampling completions from the model (eval's samples, RL's rollouts), optionally scored by rewards."""

    temperature: float = option(0.8, "Sampling temperature.")
    top_p: float = option(0.95, "Nucleus sampling: keep the most likely tokens up to this mass.")
    max_new_tokens: int = option(512, "Tokens per completion at most.")
    max_seq_length: int = option(2048, "Prompt plus completion tokens the model is loaded for.")
    reward: tuple[str, ...] = option(
        (),
        "A reward (repeatable): correct | closeness | module:function | path/file.py:function | rm:PATH. "
        "Loading user code runs it.",
        repeat=True,
    )
    reward_weights: tuple[float, ...] | None = option(
        None, "One weight per --reward, e.g. 1,0.5; the weighted sum.", shown="all 1", parse=_numbers
    )

    @property
    def weights(self) -> list[float]:
        """The weight of each --reward (all 1 unless --reward-weights)."""
        return list(self.reward_weights) if self.reward_weights is not None else [1.0] * len(self.reward)

    def check(self) -> None:
        super().check()
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {self.top_p}")
        _at_least(self, ("max_new_tokens", "max_seq_length"), 1)
        if self.reward_weights is not None:
            text = ",".join(f"{w:g}" for w in self.reward_weights)
            if not self.reward:
                raise UsageError("--reward-weights weighs the --reward functions: give at least one --reward")
            if len(self.reward_weights) != len(self.reward):
                raise UsageError(
                    f"--reward-weights {text!r} has {len(self.reward_weights)} weights for {len(self.reward)} --reward"
                )


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the attention projections; r16/alpha16 on q,k,v,o is the paper's SFT setting."""

    r: int = 16
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrainOptions(RunOptions):
    """What both training commands share: the optimiser, checkpoints, LoRA, a warm start."""

    LORA_DEFAULT: ClassVar[LoraSettings] = LoraSettings()

    strategy: Strategy = option(
        Strategy("ce"), "ce | pass@N | maj@N[:k=K|:frac=F] | bon@N.", shown="ce", parse=parse_strategy_flag
    )
    lr: float = option(5e-6, "Learning rate.")
    weight_decay: float = option(0.01, "AdamW weight decay.")
    max_grad_norm: float = option(0.3, "Gradient clipping norm.")
    optim: Optim = option("adamw_torch", "adamw_torch | adamw_torch_fused | adamw_8bit | paged_adamw_8bit.")
    lr_scheduler: Scheduler = option("linear", "constant | linear | cosine.")
    warmup_steps: int = option(0, "Learning-rate warm-up steps (the paper's: 0).")
    save_steps: int = option(50, "Checkpoint every this many steps.")
    lora_r: int | None = option(None, "LoRA rank.", shown="the command's; with --init-adapter, the adapter's")
    lora_alpha: int | None = option(None, "LoRA alpha.", shown="the command's; with --init-adapter, the adapter's")
    lora_targets: tuple[str, ...] | None = option(
        None,
        "Comma-separated module names.",
        shown="the command's; with --init-adapter, the adapter's",
        parse=_comma_list,
    )
    init_adapter: str | None = option(None, "Start from this adapter (e.g. a warm-up run).")
    report_to: ReportTo = option("none", "none | tensorboard | wandb.")
    save_merged: bool = option(False, "Also write OUT/merged: the adapter merged into a 16-bit base.")
    # held-apart evaluation while training (trainers/callbacks.py): what `catcli eval` would report
    # on the adapter of that step, with the same settings and seed
    eval_data: str | None = option(
        None, "Evaluate the policy during training on these problems (as eval's --data).", shown="no evaluation"
    )
    eval_split: str = option("test", "The evaluation problems' split.")
    eval_levels: str = option("1-3", "The evaluation problems' levels.")
    eval_limit: int | None = option(None, "A seeded subset of this many evaluation problems.")
    eval_seed: int = option(0, "Seed of the evaluation's selection and sampling: equal seeds pair two runs.")
    eval_k: tuple[int, ...] | None = option(
        None, "The evaluation's k values.", shown="1,4,16; 1 when greedy", parse=parse_ks_flag
    )
    eval_n: int | None = option(None, "Samples per evaluation problem.", shown="the largest --eval-k")
    eval_every: int | None = option(
        None, "Evaluate every this many optimizer steps, and at the end.", shown="at the end"
    )
    eval_temperature: float = option(0.8, "The evaluation's sampling temperature (0: greedy).")
    eval_top_p: float = option(0.95, "The evaluation's top-p.")
    eval_max_new_tokens: int = option(512, "Tokens per evaluation sample at most.")
    eval_batch_size: int = option(16, "Problems per chunk of evaluation samples.")

    @property
    def lora(self) -> LoraSettings:
        """The LoRA a fresh run attaches: the given fields over the command's LORA_DEFAULT."""
        d = self.LORA_DEFAULT
        return LoraSettings(self.lora_r or d.r, self.lora_alpha or d.alpha, self.lora_targets or d.targets)

    def __post_init__(self) -> None:
        if self.eval_k is None:
            object.__setattr__(self, "eval_k", (1,) if self.eval_temperature == 0 else (1, 4, 16))
        super().__post_init__()

    @property
    def eval_n_samples(self) -> int:
        return self.eval_n if self.eval_n is not None else max(self.eval_k)

    @classmethod
    def recipe_defaults(cls, recipe: dict, section: str, given: dict) -> dict:
        """The eval_* values a recipe's [eval] table gives: `catcli sft --recipe R --eval-every 8`
        evaluates as `catcli eval --recipe R` would. Only when evaluation is asked for (eval_data or
        eval_every in the flags or the command's table), and never over what that table says."""
        own = recipe.get(section, {})
        table = recipe.get("eval")
        if not isinstance(table, dict) or not any(given.get(k) or own.get(k) for k in ("eval_data", "eval_every")):
            return {}
        names = {f.name for f in dataclasses.fields(cls)}
        return {f"eval_{k}": v for k, v in table.items() if f"eval_{k}" in names and f"eval_{k}" not in own}

    def check(self) -> None:
        super().check()
        _at_least(self, ("save_steps", "lora_r", "lora_alpha", "eval_every", "eval_limit"), 1)
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")
        if self.warmup_steps < 0:
            raise UsageError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if self.eval_data is None and self.eval_every is not None:
            raise UsageError("--eval-every needs --eval-data (or a recipe's [eval] table): what to evaluate on")
        if not self.eval_k or any(k < 1 for k in self.eval_k):
            raise UsageError("--eval-k needs positive integers, like 1,4,16")
        _at_least(self, ("eval_n", "eval_max_new_tokens", "eval_batch_size"), 1)
        if max(self.eval_k) > self.eval_n_samples:
            raise UsageError(f"--eval-k {max(self.eval_k)} is larger than --eval-n {self.eval_n_samples}")
        if self.eval_temperature < 0 or not 0 < self.eval_top_p <= 1:
            raise UsageError("--eval-temperature must be >= 0 (0: greedy) and --eval-top-p in (0, 1]")
        if self.eval_temperature == 0 and self.eval_n_samples != 1:
            raise UsageError("--eval-temperature 0 decodes greedily: use --eval-n 1")


# ---------------------------------------------------------------- the commands


@dataclass(frozen=True)
class SFTRunConfig(TrainOptions):
    """`catcli sft`. The defaults are the paper's SFT (cat-spec §7)."""

    LORA_DEFAULT: ClassVar[LoraSettings] = LoraSettings(16, 16, ("q_proj", "k_proj", "v_proj", "o_proj"))

    target: Literal["answer", "solution"] = option("answer", "answer (boxed answer only) | solution.")
    reduction: Literal["sequence", "token"] | None = option(
        None, "sequence | token.", shown="sequence for answer targets, token for solutions and --hybrid"
    )
    hybrid: bool = option(False, "Pairwise-contrastive hybrid loss (0.5 CE + 0.5 pairwise, paper appendix).")
    epochs: float = option(1.0, "Epochs over the selected problems.")
    max_steps: int | None = option(None, "Optimizer steps; overrides --epochs.")
    batch_size: int = option(1, "Sequences per micro-batch.")
    grad_accum: int = option(4, "Micro-batches per optimizer step.")
    max_length: int = option(1024, "Prompt plus target tokens at most.")
    p_estimate: Literal["sequence", "success"] = option(
        "sequence",
        "p behind the weights: sequence (the target's probability, the paper's) | success (the problem's "
        "Laplace success rate over answers sampled from the current policy, as --p-temperature etc. say).",
    )
    p_samples: int = option(8, "With --p-estimate success: answers sampled per training problem at each refresh.")
    p_every: int | None = option(
        None, "With --p-estimate success: refresh the estimates every this many optimizer steps.", shown="once an epoch"
    )
    # how those answers are sampled: eval's defaults, so p is the chance that one eval sample is right
    p_temperature: float = option(0.8, "With --p-estimate success: the answers' sampling temperature.")
    p_top_p: float = option(0.95, "With --p-estimate success: the answers' top-p.")
    p_max_new_tokens: int = option(512, "With --p-estimate success: tokens per answer at most.")
    p_batch_size: int = option(16, "With --p-estimate success: problems per chunk of answers.")
    out: Path = option(Path("runs/sft"), "Output directory.")

    def __post_init__(self) -> None:
        if self.reduction is None:  # the paper's pairing; the hybrid loss is a token average (cat-spec §5)
            token = self.target == "solution" or self.hybrid
            object.__setattr__(self, "reduction", "token" if token else "sequence")
        super().__post_init__()

    def check(self) -> None:
        super().check()
        _at_least(self, ("batch_size", "grad_accum", "max_length", "max_steps", "p_samples", "p_every"), 1)
        _at_least(self, ("p_max_new_tokens", "p_batch_size"), 1)
        if not self.p_temperature > 0 or not 0 < self.p_top_p <= 1:
            raise UsageError(
                "--p-temperature must be positive (greedy answers would all be one) and --p-top-p in (0, 1]"
            )
        if not self.epochs > 0:
            raise UsageError(f"--epochs must be positive, got {self.epochs}")


@dataclass(frozen=True)
class RLRunConfig(SamplingOptions, TrainOptions):
    """`catcli rl`. The defaults are the paper's RL (cat-spec §7)."""

    LORA_DEFAULT: ClassVar[LoraSettings] = LoraSettings(16, 32, ("q_proj", "v_proj"))

    strategy: Strategy = option(
        Strategy("ce"), "grpo (vanilla) | pass@N | maj@N[:k=K] | bon@N.", shown="grpo", parse=parse_strategy_flag
    )
    form: Literal["raw", "log"] = option("raw", "raw (S'(p)) | log (w_SFT).")
    method: Literal["cat", "pkpo", "passk", "passk-best"] = option(
        "cat", "cat (weights GRPO's advantage) | pkpo | passk | passk-best (peers: replace it; k = the strategy's N)."
    )
    p_estimate: Literal["sequence", "success"] | None = option(
        None,
        "sequence (each rollout's probability) | success (its prompt's Laplace success rate).",
        shown="sequence for pass@N, success for maj@N",
    )
    all_wrong_penalty: float | None = option(
        None, "Subtracted from every advantage of an all-wrong group, before the weight.", shown="0.5 for maj@N, else 0"
    )
    num_generations: int = option(8, "M, rollouts per prompt.")
    prompts_per_step: int = option(4, "Prompts per optimizer step.")
    max_steps: int = option(100, "Optimizer steps.")
    beta: float = option(0.0, "KL coefficient (not CAT-weighted).")
    lr: float = option(1e-6, "Learning rate.")
    max_grad_norm: float = option(1.0, "Gradient clipping norm.")
    lr_scheduler: Scheduler = option("constant", "constant | linear | cosine.")
    # dr_grpo is the paper's summed-log-prob REINFORCE up to 1/max_new_tokens (cat-spec §4)
    loss_type: Literal["dr_grpo", "dapo", "grpo", "bnpo"] = option(
        "dr_grpo", "dr_grpo (the paper's) | dapo | grpo | bnpo."
    )
    vllm: bool = option(False, "Generate rollouts with vLLM (Unsloth fast_inference; CUDA).")
    out: Path = option(Path("runs/rl"), "Output directory.")

    def __post_init__(self) -> None:
        maj = self.strategy.kind == "maj" and self.method == "cat"
        if self.p_estimate is None and self.method == "cat" and self.strategy.kind in ("pass", "maj"):
            object.__setattr__(self, "p_estimate", "success" if maj else "sequence")
        if self.all_wrong_penalty is None and self.method == "cat":
            from catcli.objectives import ALL_WRONG_PENALTY

            object.__setattr__(self, "all_wrong_penalty", ALL_WRONG_PENALTY if maj else 0.0)
        super().__post_init__()

    def check(self) -> None:
        super().check()
        from catcli import peers

        s = self.strategy
        if s.kind == "bon" and self.form == "log":
            raise UsageError("bon@N has only the raw rank weight N q^(N-1): use --form raw")
        try:
            peers.check_method(self.method, s, self.num_generations)
        except peers.MethodError as e:
            raise UsageError(f"--method {self.method}: {e}") from None
        if self.p_estimate is not None and (self.method != "cat" or s.kind not in ("pass", "maj")):
            raise UsageError(f"--p-estimate applies to CAT pass@N and maj@N, not to {s} with --method {self.method}")
        if s.kind == "maj" and self.p_estimate == "sequence":
            raise UsageError("maj@N RL estimates p from the prompt's graded rollouts: use --p-estimate success")
        if self.all_wrong_penalty is not None:
            if self.method != "cat":
                raise UsageError(f"--all-wrong-penalty applies to GRPO and CAT, not to --method {self.method}")
            if not self.all_wrong_penalty >= 0:
                raise UsageError(f"--all-wrong-penalty must be >= 0, got {self.all_wrong_penalty}")
        _at_least(self, ("prompts_per_step", "max_steps"), 1)
        if self.num_generations < 2:
            raise UsageError(
                f"--num-generations must be at least 2 (GRPO compares rollouts), got {self.num_generations}"
            )
        if not self.temperature > 0:
            raise UsageError("--temperature must be positive and --top-p in (0, 1]")
        if self.beta < 0:
            raise UsageError("--beta must be >= 0 and --lr positive")
        if self.vllm:
            from catcli.backend import vllm_available

            if not vllm_available():
                raise UsageError(
                    "--vllm needs a CUDA GPU and the vllm package; leave it out to generate with transformers"
                )


@dataclass(frozen=True)
class EvalConfig(SamplingOptions, RunOptions):
    """`catcli eval`: n samples per problem, graded, pass@k / maj@k (bon@k with --reward)."""

    split: str = option("test", "train | test (math also: math500).")
    temperature: float = option(0.8, "Sampling temperature; 0 decodes greedily (then --n 1: a model card's pass@1).")
    k: tuple[int, ...] | None = option(
        None, "Comma-separated k values, e.g. 1,4,16.", shown="1,4,16; 1 when greedy", parse=parse_ks_flag
    )
    n: int | None = option(None, "Samples per problem.", shown="the largest k")
    batch_size: int = option(16, "Problems per generate call (x n sequences).")
    backend: Literal["auto", "hf", "vllm"] = option(
        "auto", "auto | hf | vllm (vllm: Unsloth fast_inference, GPU only; auto picks it when it can run)."
    )
    out: Path = option(Path("runs/eval"), "Output directory.")

    def __post_init__(self) -> None:
        if self.k is None:
            object.__setattr__(self, "k", (1,) if self.temperature == 0 else (1, 4, 16))
        super().__post_init__()

    @property
    def n_samples(self) -> int:
        return self.n if self.n is not None else max(self.k)

    def check(self) -> None:
        super().check()
        if not self.k or any(k < 1 for k in self.k):
            raise UsageError("--k needs positive integers, like 1,4,16")
        _at_least(self, ("n", "batch_size"), 1)
        if max(self.k) > self.n_samples:
            raise UsageError(f"k = {max(self.k)} is larger than --n {self.n_samples}: every k must be at most n")
        if self.temperature < 0:
            raise UsageError(
                f"--temperature must be positive to sample, or 0 to decode greedily, got {self.temperature}"
            )
        if self.temperature == 0 and self.n_samples != 1:
            raise UsageError(
                "--temperature 0 decodes greedily, so every sample of a problem is the same: "
                f"use --n 1, not {self.n_samples}"
            )


# ---------------------------------------------------------------- recipes and flags


def load_recipe(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read recipe {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"recipe {path} is not valid TOML: {e}") from None


def _check_type(value, hint, key: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return value
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise UsageError(f"{key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{key} must be a list, got {value!r}")
        return tuple(_check_type(v, args[0], f"{key}[]") for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise UsageError(f"{key} must be {hint.__name__}, got {value!r}")
    return value


def _value(f: dataclasses.Field, hint, value, key: str):
    """A recipe's or a flag's value as the field's type: its text parsed, then type-checked."""
    parse = f.metadata.get("parse")
    if parse is not None and isinstance(value, list):  # a recipe's list gets the text's checks
        value = ",".join(map(str, value))
    if parse is not None and isinstance(value, str):
        value = parse(value)
    return _check_type(value, hint, key)


def resolve(cls, section: str, recipe: dict, flags: dict):
    """Build `cls` from its defaults, then the recipe's [section], then the flags that were given."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown_sections = [s for s in recipe if not isinstance(recipe[s], dict)]
    if unknown_sections:
        raise UsageError(f"recipe keys must sit under a table such as [{section}]: found {unknown_sections[0]!r}")
    values: dict = {}
    defaults = getattr(cls, "recipe_defaults", None)
    for key, value in (defaults(recipe, section, flags) if defaults else {}).items():
        values[key] = _value(fields[key], hints[key], value, f"eval.{key.removeprefix('eval_')}")
    for key, value in recipe.get(section, {}).items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"unknown recipe key {section}.{key}{hint}")
        values[key] = _value(fields[key], hints[key], value, f"{section}.{key}")
    for key, value in flags.items():
        if value is not None:
            values[key] = _value(fields[key], hints[key], value, f"--{key.replace('_', '-')}")
    return cls(**values)


def to_dict(cfg) -> dict:
    """The config as JSON values, for run.json and --dry-run."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = str(v) if isinstance(v, (Path, Strategy)) else list(v) if isinstance(v, tuple) else v
    return out
