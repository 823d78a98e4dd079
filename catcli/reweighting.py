"""How much CAT reweights a data set against CE: the spread of p, w_SFT(p) and w_RL(p) over it.

CE weights every item 1. Multiplying all weights by one constant only rescales the learning rate,
so what CAT changes is each item's weight relative to the others, w_i / mean(w). An item counts as
reweighted when that ratio is more than 10 % away from CE's 1: |w_i / mean(w) - 1| > 0.1.

The weights are the paper's Table 1 at the given p, unclipped (objectives.w_sft, w_rl). maj@N
without `:k=` uses the strict majority for both; `catcli rl` instead picks k per prompt and
estimates p from its rollouts, so w_RL here is what Table 1 says at these p, not a replay of a run.
`catcli weights` is this module: the weights at given p (`weight_points`), or over the p values a
run recorded (`run_ps` reads them, `summarise` is pure).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from catcli.errors import DataError, UsageError
from catcli.objectives import Form, Strategy, w_rl, w_sft
from catcli.rundir import read_jsonl

THRESHOLD = 0.1  # "reweighted": relative weight more than 10 % away from CE's
REWEIGHTED = "|w_i / mean(w) - 1| > 0.1 (CE weights every item 1; a common factor is only the learning rate)"
QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)


@dataclass(frozen=True)
class Distribution:
    """Quantiles (linear interpolation, as numpy's default) and mean of one quantity over the items."""

    min: float
    p10: float
    p50: float
    p90: float
    max: float
    mean: float


@dataclass(frozen=True)
class Reweighting:
    """p and the CAT weights over a data set, and the share of its items CAT reweights against CE.

    A share is None when every weight is 0 (pass@N at p = 1 everywhere): there is no relative
    weight, CAT simply gives those items no gradient. w_rl is None for bon@N, whose RL weight
    ranks a sample's reward within its group and is not a function of p.
    """

    strategy: str
    form: str
    count: int
    p: Distribution
    w_sft: Distribution
    w_rl: Distribution | None
    share_sft: float | None
    share_rl: float | None


def distribution(values: Tensor) -> Distribution:
    qs = torch.quantile(values, torch.tensor(QUANTILES, dtype=values.dtype)).tolist()
    return Distribution(*qs, mean=values.mean().item())


def reweighted_share(w: Tensor, threshold: float = THRESHOLD) -> float | None:
    """Share of items with |w_i / mean(w) - 1| > threshold; None when all weights are 0."""
    mean = w.mean()
    if mean <= 0:
        return None
    return ((w / mean - 1).abs() > threshold).to(torch.float64).mean().item()


def summarise(ps: Sequence[float], strategy: Strategy, form: Form = "raw") -> Reweighting:
    """The distribution of p, w_SFT(p) and w_RL(p) over `ps` (each in [0, 1]) and the reweighted shares."""
    if not ps:
        raise ValueError("no p values to summarise")
    p = torch.tensor(ps, dtype=torch.float64)
    # log 0 = -inf and log 1 = 0: objectives clamps both into its range, which gives each
    # weight's limit at p = 0 and p = 1 (w_SFT(0) = 1 for pass@N, k for maj@N)
    log_p = torch.log(p)
    ws = w_sft(strategy, log_p)
    wr = None if strategy.kind == "bon" else w_rl(strategy, log_p, form)
    return Reweighting(
        strategy=str(strategy),
        form=form,
        count=len(ps),
        p=distribution(p),
        w_sft=distribution(ws),
        w_rl=None if wr is None else distribution(wr),
        share_sft=reweighted_share(ws),
        share_rl=None if wr is None else reweighted_share(wr),
    )


CONSTANT = 0.01  # weights within 1 % of each other over a whole run: CAT trained as CE


def constant_weight(w_min: Sequence[float], w_max: Sequence[float], tolerance: float = CONSTANT) -> float | None:
    """The one weight every sequence of a run had, or None if they differed.

    From each logged step's smallest and largest weight: constant when the largest of all is within
    `tolerance` of the smallest of all (and positive). Then CAT changed only the step size: the run
    trained as CE (GRPO) with a learning rate `w` times larger. Returns the geometric middle.
    """
    low, high = min(w_min), max(w_max)
    if not low > 0 or high > (1 + tolerance) * low:
        return None
    return (low * high) ** 0.5


def weight_points(strategy: Strategy, ps: Sequence[float], form: Form = "raw") -> dict:
    """{"strategy", "n", "k", "points": [{"p", "sft_weight", "rl_weight"}]}: Table 1 at each p."""
    log_p = torch.log(torch.tensor(ps, dtype=torch.float64))
    w_s = w_sft(strategy, log_p).tolist()
    w_r = w_rl(strategy, log_p, form).tolist()
    return {
        "strategy": str(strategy),
        "n": strategy.n,
        "k": strategy.sft_k if strategy.kind == "maj" else None,
        "points": [{"p": p, "sft_weight": a, "rl_weight": b} for p, a, b in zip(ps, w_s, w_r)],
    }


def run_ps(source: Path) -> tuple[list[float], str, str]:
    """The p values a run recorded, what each belongs to, and a note saying so: per problem c/n (an
    eval run's samples.jsonl), per training problem (c + 1)/(m + 2) from sampled answers (an sft
    run with --p-estimate success: its p_estimates.json), per step p_mean (an sft run's train_log)."""
    from catcli.samples import load_samples

    if not source.exists():
        raise DataError(f"--from {source} does not exist")
    path = source
    if source.is_dir():
        names = ("p_estimates.json", "samples.jsonl", "train_log.jsonl")
        found = [source / name for name in names if (source / name).exists()]
        if not found:
            raise DataError(
                f"--from {source} holds neither samples.jsonl (an eval run) nor train_log.jsonl (an sft run)"
            )
        if len(found) > 1 and found[0].name == "samples.jsonl":
            raise UsageError(f"--from {source} holds both samples.jsonl and train_log.jsonl: name the file")
        path = found[0]  # an sft run with sampled estimates: those, rather than its train_log's p_mean
    if path.name == "p_estimates.json":
        saved = json.loads(path.read_text())
        note = (
            f"p is each training problem's success rate (c + 1)/(m + 2) over m = {saved['m']} answers sampled "
            f"from the policy at step {saved['step']} (--p-estimate success)"
        )
        return list(saved["p"].values()), "problem", note
    if path.name != "train_log.jsonl":
        ps = [sum(r["correct"]) / len(r["correct"]) for r in load_samples(path)]
        return ps, "problem", "p is each problem's success rate c/n over its graded samples"
    ps = []
    for i, row in enumerate(read_jsonl(path)):
        if not isinstance(row, dict) or "p_mean" not in row:
            continue  # the trainer's closing summary line, or another log's columns
        p = row["p_mean"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise DataError(f"{path} line {i + 1}: p_mean must be a number in [0, 1], got {p!r}")
        ps.append(float(p))
    if not ps:
        raise DataError(f"{path} has no p_mean: only sft train logs record p (an rl log records rewards)")
    note = (
        "p is each training step's batch-mean target probability (train_log p_mean), not a per-problem p, "
        "so each w is the weight at that mean, not the step's mean weight (train_log weight_mean)"
    )
    return ps, "step", note


def summarise_run(source: Path, strategy: Strategy, form: Form = "raw") -> tuple[Reweighting, str, str]:
    """`summarise` over a run's p values (`run_ps`); also what one p stands for and a note saying so."""
    ps, unit, note = run_ps(source)
    return summarise(ps, strategy, form), unit, note
