"""Rewards: a score per completion, finer than right/wrong, for bon@k in eval and for RL.

Stage: samples -> grades. A reward follows TRL's reward-function contract, so the same function
serves `catcli eval --reward` and GRPOTrainer's `reward_funcs`:

    f(prompts, completions, **columns) -> list[float | None]

prompts are conversational (lists of {"role", "content"} messages), completions are
[{"role": "assistant", "content": text}], and each dataset column (`answer`, `id`, ...) is a
list with one entry per completion. None means "does not apply to this completion": TRL turns
it into NaN and leaves it out of its weighted nansum, and `combine` does the same. Anything
else must be a finite real number; `checked` enforces that on every call.

Specs (`load_reward`):
  correct                    1 when the last \\boxed{} answer is math-verify-equal to the gold, else 0
  closeness                  graded score in [0, 1] from the distance of a numeric answer to the gold
  module:function            a function of an importable module (on sys.path / PYTHONPATH)
  path/to/file.py:function   a function of a Python file
  rm:PATH                    a local sequence-classification reward model with one label: its logit
Loading a user reward imports it, and importing runs its code: load only code you trust.

Errors: a spec that cannot be loaded is a RewardError (exit 2, before anything is written); a
reward that misbehaves while scoring is a RewardFailure (exit 1, finished problems kept).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import numbers
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path

from catcli.data import Problem
from catcli.errors import RewardError, RewardFailure
from catcli.grading import answers_equal, extract_boxed, grade_completion, vote_key
from catcli.prompts import user_message

RewardFn = Callable[..., list[float | None]]


def completion_text(completion) -> str:
    """A completion's text in either TRL format: conversational (messages) or standard (a string)."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


# ---------------------------------------------------------------- built-ins


def correct(completions, answer, **columns) -> list[float]:
    """1.0 when the last \\boxed{} answer is math-verify-equal to the gold answer, else 0.0.

    >>> correct([[{"role": "assistant", "content": "so \\\\boxed{4}"}]], answer=["4"])
    [1.0]
    """
    return [1.0 if grade_completion(str(a), completion_text(c)) else 0.0 for c, a in zip(completions, answer)]


@functools.lru_cache(maxsize=100_000)
def _number(answer: str) -> float | None:
    """The real number an extracted answer is, or None when it is not a plain number.

    Plain numerals (57, -12, 3.5, 1/2, 1e-5) are read directly; anything else goes through
    math-verify's parse, whose canonical form (`vote_key`, printed by sympy) is a numeral exactly
    when the answer is a number: \\frac{3}{4} -> 3/4, 1,000 -> 1000, \\$5 -> 5. Expressions that
    are numbers only after evaluation (2\\sqrt{2}, 10^{3}) count as non-numeric: evaluating them
    is unbounded in time (9^{9^{9^9}}).
    """
    for text in (answer, vote_key(answer)):
        try:
            value = float(Fraction(text.strip()))
        except (ValueError, ZeroDivisionError, OverflowError):
            continue
        return value if math.isfinite(value) else None
    return None


def closeness(completions, answer, **columns) -> list[float]:
    """Graded correctness in [0, 1]: how near the last \\boxed{} answer is to the gold answer.

      1                                       the answer is math-verify-equal to the gold
      exp(-|pred - gold| / max(|gold|, 1))    both are plain numbers (relative error; absolute below 1)
      0                                       no boxed answer, or the gold or the answer is not a number

    An equation's right side is its answer (`75 + 52 = 121` -> 121), as math-verify reads `x = 5`.

    exp keeps every wrong number ranked (a nearer one always scores higher, and none reaches 0),
    which is what bon@k ranks by; max(|gold|, 1) keeps a gold of 0 finite.

    >>> closeness([[{"role": "assistant", "content": "so \\\\boxed{99}"}]], answer=["100"])  # exp(-0.01)
    [0.9900498337491681]
    """
    out = []
    for c, a in zip(completions, answer):
        gold, pred = str(a), extract_boxed(completion_text(c))
        if pred is None:
            out.append(0.0)
        elif answers_equal(gold, pred):
            out.append(1.0)
        else:
            g, p = _number(gold), _number(pred.rpartition("=")[2])
            out.append(0.0 if g is None or p is None else math.exp(-abs(p - g) / max(abs(g), 1.0)))
    return out


BUILTINS: dict[str, RewardFn] = {"correct": correct, "closeness": closeness}


# ---------------------------------------------------------------- loading a spec


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_reward(spec: str) -> RewardFn:
    """A built-in name, `module:function`, `path/to/file.py:function` or `rm:PATH`, as a `checked`
    reward whose `__name__` is short (TRL names its logged reward columns by it)."""
    if spec in BUILTINS:
        fn = BUILTINS[spec]
    elif spec.startswith("rm:"):
        fn = _reward_model(spec, spec[3:])
    elif ":" in spec:
        where, _, name = spec.rpartition(":")
        module = _import_file(spec, where) if where.endswith(".py") or "/" in where else _import_module(spec, where)
        fn = _function(spec, module, where, name)
    else:
        raise RewardError(
            f"reward {spec!r}: not a built-in reward ({', '.join(BUILTINS)}); "
            "use module:function, path/to/file.py:function or rm:PATH"
        )
    return checked(fn, spec)


def _import_module(spec: str, name: str):
    try:
        return importlib.import_module(name)
    except Exception as e:  # the user's module may fail in any way while it runs
        raise RewardError(f"reward {spec!r}: cannot import {name}: {type(e).__name__}: {_one_line(e)}") from None


def _import_file(spec: str, where: str):
    path = Path(where).expanduser()
    if not path.is_file():
        raise RewardError(f"reward {spec!r}: no such file {path}")
    # a private module name per file, so two reward files with one stem do not collide
    name = f"catcli_reward_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up here
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # the user's file may fail in any way while it runs
        del sys.modules[name]
        raise RewardError(f"reward {spec!r}: cannot import {path}: {type(e).__name__}: {_one_line(e)}") from None
    return module


def _function(spec: str, module, where: str, name: str) -> RewardFn:
    if not hasattr(module, name):
        defined = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        listing = f" (it defines: {', '.join(defined)})" if defined else ""
        raise RewardError(f"reward {spec!r}: {where} has no function {name!r}{listing}")
    fn = getattr(module, name)
    if not callable(fn):
        raise RewardError(f"reward {spec!r}: {name!r} in {where} is not callable: {name} = {_one_line(repr(fn), 60)}")
    return fn


# ---------------------------------------------------------------- a reward model


def _reward_model(spec: str, where: str, batch_size: int = 16) -> RewardFn:
    """A local AutoModelForSequenceClassification with one label; a completion's reward is its logit
    on prompt + completion, under the tokenizer's chat template when it has one (as TRL scores)."""
    path = Path(where).expanduser()
    if not path.is_dir():
        raise RewardError(f"reward {spec!r}: no such directory {path} (rm:PATH takes a saved reward model)")
    from catcli.backend import import_unsloth

    import_unsloth()  # before transformers, which Unsloth patches on import for the policy model
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError... for unusable dirs
        raise RewardError(f"reward {spec!r}: cannot load a reward model from {path}: {_one_line(e)}") from None
    if model.config.num_labels != 1:
        raise RewardError(
            f"reward {spec!r}: the model has {model.config.num_labels} labels; a reward model has one (its score)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        # the score is read at the last non-pad token, which the model finds by pad_token_id
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"  # a long input keeps its end, where the score is read
    max_length = getattr(model.config, "max_position_embeddings", None)
    # under accelerate / torchrun each process scores on its own GPU
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    templated = bool(getattr(tokenizer, "chat_template", None))

    def text(prompt, completion) -> str:
        if templated and isinstance(prompt, list):
            return tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        if isinstance(prompt, list):
            prompt = "\n\n".join(m["content"] for m in prompt)
        return f"{prompt}{completion_text(completion)}"

    def reward(prompts, completions, **columns) -> list[float]:
        texts = [text(p, c) for p, c in zip(prompts, completions)]
        scores: list[float] = []
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[i : i + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=max_length is not None,
                max_length=max_length,
                add_special_tokens=not templated,  # a chat template writes its own special tokens
            ).to(device)
            with torch.inference_mode():
                scores.extend(model(**enc).logits[:, 0].float().tolist())
        return scores

    reward.__name__ = reward.__qualname__ = path.resolve().name  # as TRL names a reward model
    return reward


# ---------------------------------------------------------------- checking and combining


def checked(fn: RewardFn, name: str) -> RewardFn:
    """`fn`, with every call's result checked: one entry per completion, each None or a finite real.

    A failure (also `fn` raising) is a one-line RewardFailure naming the reward (`name`, as the
    user typed it) and, from the `id` column, the problem: the failing completion's, or the
    batch's when the whole batch fails and holds one problem. Keeps `fn`'s `__name__`.
    """

    def reward(prompts, completions, **columns) -> list[float | None]:
        ids = columns.get("id")
        batch = f" on problem {ids[0]}" if ids and len(set(ids)) == 1 else ""
        try:
            out = fn(prompts=prompts, completions=completions, **columns)
        except RewardError:  # already one line naming a reward (`fn` is itself checked)
            raise
        except Exception as e:  # a user's reward may fail in any way
            raise RewardFailure(f"reward {name!r} raised {type(e).__name__}{batch}: {_one_line(e)}") from None
        values = None if isinstance(out, (str, bytes, Mapping)) or not hasattr(out, "__iter__") else list(out)
        if values is None:
            raise RewardFailure(
                f"reward {name!r} returned a {type(out).__name__}{batch}: return a list, one number per completion"
            )
        if len(values) != len(completions):
            raise RewardFailure(
                f"reward {name!r} returned {len(values)} rewards for {len(completions)} completions{batch}"
            )
        result: list[float | None] = []
        for i, v in enumerate(values):
            if v is not None and not (isinstance(v, numbers.Real) and math.isfinite(v)):
                raise RewardFailure(
                    f"reward {name!r} gave {_one_line(repr(v), 60)} for {_item(ids, i)}: "
                    "return a finite number, or None where the reward does not apply"
                )
            result.append(None if v is None else float(v))
        return result

    functools.update_wrapper(reward, fn, assigned=("__module__", "__name__", "__qualname__", "__doc__"), updated=())
    return reward


def _item(ids: Sequence | None, i: int) -> str:
    if not ids:
        return f"completion {i} of the batch"
    return f"completion {list(ids[:i]).count(ids[i])} of problem {ids[i]}"


def combine(columns: Sequence[Sequence[float | None]], weights: Sequence[float]) -> list[float]:
    """Per completion, sum_j w_j r_j over the rewards that apply (None skipped), as TRL's nansum.

    A completion no reward applies to scores 0, as under nansum (TRL then leaves it out of its
    advantage baseline; a best-of-k ranking needs a number).
    """
    if len(columns) != len(weights):
        raise ValueError(f"{len(columns)} reward columns for {len(weights)} weights")
    return [sum((w * r for r, w in zip(row, weights) if r is not None), 0.0) for row in zip(*columns)]


def problem_rewards(
    rewards: Sequence[RewardFn],
    weights: Sequence[float],
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str]],
    instruction: str,
) -> list[list[float]]:
    """Each completion's combined reward, per problem, with the inputs GRPOTrainer would pass.

    One call per reward over all the completions of `problems` (a reward model batches them):
    the user turn `catcli rl` trains on, the completion as an assistant message, and the columns
    answer, id, level and subject.
    """
    prompts, comps, columns = [], [], {"answer": [], "id": [], "level": [], "subject": []}
    for p, texts in zip(problems, completions):
        for t in texts:
            prompts.append([{"role": "user", "content": user_message(p, instruction)}])
            comps.append([{"role": "assistant", "content": t}])
            for key, values in columns.items():
                values.append(getattr(p, key))
    flat = combine([f(prompts=prompts, completions=comps, **columns) for f in rewards], weights)
    out, i = [], 0
    for texts in completions:
        out.append(flat[i : i + len(texts)])
        i += len(texts)
    return out
