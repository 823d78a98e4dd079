"""Prompts: one user turn `Problem:\\n{problem}` under the model's chat template (cat-spec §7).

Stage: data -> prompts. The paper's format plus an instruction to answer in \\boxed{} (on by
default: a small model rarely boxes its answer unasked, and an unboxed answer grades wrong).
"""

from __future__ import annotations

from typing import Literal

from catcli.data import Problem

Target = Literal["answer", "solution"]
DEFAULT_INSTRUCTION = "Put your final answer within \\boxed{}."


def user_message(problem: Problem, instruction: str = DEFAULT_INSTRUCTION) -> str:
    text = f"Problem:\n{problem.problem}"
    return f"{text}\n\n{instruction}" if instruction else text


def build_prompt(tokenizer, problem: Problem, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The prompt text, ending where the model's answer begins."""
    message = user_message(problem, instruction)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
    # a base model without a chat template gets the same text in plain form
    return f"{message}\n\nSolution:\n"


def build_target(problem: Problem, target: Target) -> str:
    """What SFT teaches: the boxed answer alone (short, so p stays measurable) or the solution."""
    return f"\\boxed{{{problem.answer}}}" if target == "answer" else problem.solution
