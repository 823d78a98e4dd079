"""Test-time strategies: the `Strategy` record and its string grammar (cat-spec §1-2).

`ce` | `grpo` | `pass@N` | `maj@N` | `maj@N:k=K` | `maj@N:frac=F` | `bon@N`. Torch-free, so that
configs parse a strategy once at the CLI boundary without loading torch; the math on a strategy
lives in objectives.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["ce", "pass", "maj", "bon"]


class StrategyError(ValueError):
    """A strategy string that does not parse; the message names the problem."""


@dataclass(frozen=True)
class Strategy:
    """A parsed test-time strategy: `ce`, `pass@N`, `maj@N[:k=K|:frac=F]` or `bon@N`.

    k is the majority threshold when it was given (`:k=` or `:frac=`); None means
    "not given": SFT then uses the strict majority k = floor(N/2) + 1 (`sft_k`) and RL
    chooses k per prompt from its rollouts (`dynamic_k`, cat-spec §2).
    """

    kind: Kind
    n: int = 1
    k: int | None = None

    def __str__(self) -> str:
        if self.kind == "ce":
            return "ce"
        suffix = f":k={self.k}" if self.k is not None else ""
        return f"{self.kind}@{self.n}{suffix}"

    @property
    def sft_k(self) -> int:
        """Threshold used for maj@N SFT: the given k, else strict majority floor(N/2) + 1.

        Strict majority is the one threshold that wins the vote however the wrong answers
        split; the paper's looser (8,3)/(16,4)/(64,26) settings are spelled `:k=` or `:frac=`.
        """
        return self.k if self.k is not None else self.n // 2 + 1


_STRATEGY_RE = re.compile(r"^(pass|maj|bon)@(\d+)(?::(k|frac)=([^:]+))?$")


def parse_strategy(text: str) -> Strategy:
    """Parse `ce` | `grpo` | `pass@N` | `maj@N` | `maj@N:k=K` | `maj@N:frac=F` | `bon@N`.

    `grpo` is the RL spelling of plain likelihood. `maj@N:frac=F` means k = ceil(F * N)
    (cat-spec §2). Errors name what is wrong with the string.
    """
    s = text.strip().lower()
    if s in ("ce", "grpo"):
        return Strategy("ce")
    m = _STRATEGY_RE.match(s)
    if m is None:
        raise StrategyError(
            f"invalid strategy {text!r}: expected ce, grpo, pass@N, maj@N, maj@N:k=K, "
            "maj@N:frac=F or bon@N (N a positive integer)"
        )
    kind, n_text, opt, value = m.groups()
    n = int(n_text)
    if n < 1:
        raise StrategyError(f"invalid strategy {text!r}: N must be at least 1")
    if opt is None:
        return Strategy(kind, n)
    if kind != "maj":
        raise StrategyError(f"invalid strategy {text!r}: only maj@N takes :{opt}=")
    if opt == "k":
        if not value.isdigit():
            raise StrategyError(f"invalid strategy {text!r}: k must be an integer")
        k = int(value)
    else:
        try:
            frac = float(value)
        except ValueError:
            raise StrategyError(f"invalid strategy {text!r}: frac must be a number") from None
        if not 0 < frac <= 1:
            raise StrategyError(f"invalid strategy {text!r}: frac must be in (0, 1]")
        k = math.ceil(frac * n - 1e-9)  # 1e-9: 0.375 * 8 must stay 3, not round up to 4
    if not 1 <= k <= n:
        raise StrategyError(f"invalid strategy {text!r}: k must be in 1..{n}")
    return Strategy("maj", n, k)
