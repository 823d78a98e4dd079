"""The `catcli` command: parse, validate, call the library. Nothing else lives here.

Flags default to None so that a recipe value is overridden only by a flag the user typed.
`--json` prints exactly one JSON object on stdout; progress bars and logs go to stderr.
Errors become one line on stderr and an exit code (errors.py); CATCLI_DEBUG=1 shows tracebacks.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from catcli import __version__
from catcli.errors import EXIT_INTERRUPTED, CatError, UsageError

app = typer.Typer(
    help="Compute Aligned Training (arXiv 2604.24957): train and evaluate LLMs for pass@N / maj@N / bon@N.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Inspect problem sources.", no_args_is_help=True)
app.add_typer(data_app, name="data")

# ---------------------------------------------------------------- shared options

ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model", help="smollm2-135m (embedded), a checkpoint/adapter/run dir, or a hub id. [default: smollm2-135m]"
    ),
]
DataOpt = Annotated[
    Optional[str],
    typer.Option("--data", help="math (hub), arith (built-in) or a .jsonl/.json/.parquet path. [default: math]"),
]
SplitOpt = Annotated[Optional[str], typer.Option("--split", help="train | test (math also: math500).")]
LevelsOpt = Annotated[Optional[str], typer.Option("--levels", help="Levels to keep, e.g. 1-3 or 1,2. [default: 1-3]")]
SubjectsOpt = Annotated[Optional[str], typer.Option("--subjects", help="Comma-separated subjects to keep.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Keep a seeded random subset of this many problems.")]
SeedOpt = Annotated[
    Optional[int], typer.Option("--seed", help="Seed for selection, sampling and bootstrap. [default: 0]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
RecipeOpt = Annotated[Optional[Path], typer.Option("--recipe", help="TOML recipe; flags override its values.")]
KOpt = Annotated[Optional[str], typer.Option("--k", help="Comma-separated k values, e.g. 1,4,16.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Output directory. [default: runs/<command>]")]
ResumeOpt = Annotated[Optional[bool], typer.Option("--resume", help="Continue the interrupted run in --out.")]
OverwriteOpt = Annotated[Optional[bool], typer.Option("--overwrite", help="Replace a non-empty --out.")]
InstructionOpt = Annotated[Optional[str], typer.Option("--instruction", help="Appended to each problem; '' for none.")]
LoadIn4bitOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--load-in-4bit/--no-load-in-4bit", help="4-bit base weights. [default: 4-bit on a CUDA GPU, 16-bit on a CPU]"
    ),
]
TrustRemoteCodeOpt = Annotated[Optional[bool], typer.Option("--trust-remote-code", help="Run a hub model's own code.")]
LoraROpt = Annotated[
    Optional[int], typer.Option("--lora-r", help="LoRA rank. [default: 16; with --init-adapter, the adapter's]")
]
LoraAlphaOpt = Annotated[Optional[int], typer.Option("--lora-alpha")]
LoraTargetsOpt = Annotated[Optional[str], typer.Option("--lora-targets", help="Comma-separated module names.")]
InitAdapterOpt = Annotated[
    Optional[str], typer.Option("--init-adapter", help="Start from this adapter (e.g. a warm-up run).")
]
SaveStepsOpt = Annotated[Optional[int], typer.Option("--save-steps", help="Checkpoint every this many steps.")]
ReportToOpt = Annotated[Optional[str], typer.Option("--report-to", help="none | tensorboard | wandb")]
MaxNewTokensOpt = Annotated[Optional[int], typer.Option("--max-new-tokens", help="[default: 512]")]
TemperatureOpt = Annotated[Optional[float], typer.Option("--temperature", help="[default: 0.8]")]
TopPOpt = Annotated[Optional[float], typer.Option("--top-p", help="[default: 0.95]")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and stop.")]
RewardOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--reward",
        help="A reward (repeatable): correct | closeness | module:function | path/file.py:function | rm:PATH. "
        "Loading user code runs it.",
    ),
]
RewardWeightsOpt = Annotated[
    Optional[str],
    typer.Option("--reward-weights", help="One weight per --reward, e.g. 1,0.5; the weighted sum. [default: all 1]"),
]
OptimOpt = Annotated[
    Optional[str],
    typer.Option(
        "--optim", help="adamw_torch | adamw_torch_fused | adamw_8bit | paged_adamw_8bit. [default: adamw_torch]"
    ),
]
LrSchedulerOpt = Annotated[
    Optional[str], typer.Option("--lr-scheduler", help="constant | linear | cosine. [default: sft linear, rl constant]")
]
WarmupStepsOpt = Annotated[Optional[int], typer.Option("--warmup-steps", help="[default: 0, the paper's]")]


def _version(value: bool):
    if value:
        typer.echo(f"catcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
):
    """Compute Aligned Training from the command line."""


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


def _console():
    from rich.console import Console

    return Console()


def _subjects(text: str | None) -> tuple[str, ...] | None:
    return tuple(s.strip() for s in text.split(",") if s.strip()) if text else None


def _ks(text: str | None) -> tuple[int, ...] | None:
    from catcli.estimators import EstimatorError, parse_ks

    if text is None:
        return None
    try:
        return tuple(parse_ks(text))
    except EstimatorError as e:
        raise UsageError(str(e)) from None


# ---------------------------------------------------------------- data


@data_app.command("show")
def data_show(
    data: DataOpt = None,
    split: SplitOpt = None,
    levels: LevelsOpt = None,
    subjects: SubjectsOpt = None,
    limit: LimitOpt = None,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
):
    """Count problems per level and subject after filtering."""
    from collections import Counter

    from catcli.data import load_selection

    source = data or "math"
    probs = load_selection(
        source,
        split or "train",
        levels=levels or "1-3",
        subjects=_subjects(subjects) or (),
        limit=limit,
        seed=seed or 0,
    )
    by_level = Counter(p.level for p in probs)
    by_subject = Counter(p.subject for p in probs)
    result = {
        "total": len(probs),
        "levels": {str(k): by_level[k] for k in sorted(by_level)},
        "subjects": dict(sorted(by_subject.items())),
    }
    if as_json:
        _emit_json(result)
        return
    from rich.table import Table

    table = Table(title=f"{source}: {len(probs)} problems")
    table.add_column("subject")
    lv = sorted(by_level)
    for level in lv:
        table.add_column(f"L{level}", justify="right")
    table.add_column("total", justify="right")
    for subject in sorted(by_subject):
        counts = Counter(p.level for p in probs if p.subject == subject)
        table.add_row(subject, *[str(counts[level]) for level in lv], str(by_subject[subject]))
    table.add_row("all", *[str(by_level[level]) for level in lv], str(len(probs)), style="bold")
    _console().print(table)


# ---------------------------------------------------------------- weights


@app.command()
def weights(
    strategy: Annotated[str, typer.Option("--strategy", help="ce | pass@N | maj@N[:k=K|:frac=F] | bon@N")],
    p: Annotated[
        Optional[str], typer.Option("--p", help="Comma-separated p values in [0, 1]; default a log grid.")
    ] = None,
    form: Annotated[str, typer.Option("--form", help="RL weight form: raw (S'(p)) or log (w_SFT).")] = "raw",
    source: Annotated[
        Optional[Path],
        typer.Option(
            "--from",
            help="Summarise a run instead of --p: an eval run (dir or samples.jsonl; p = c/n per problem) or an sft run "
            "(dir or train_log.jsonl; each step's batch-mean p). Prints quantiles of p, w_SFT and w_RL and the share of "
            "items CAT reweights against CE: |w_i / mean(w) - 1| > 0.1 (CE weights all 1; a common factor is only the "
            "learning rate).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG of both weight curves.")] = None,
):
    """CAT weights w_SFT(p) and w_RL(p) of a strategy (paper Table 1), at --p or over a run (--from). For bon@N, p is the reward quantile q."""
    import torch

    from catcli import objectives as obj

    try:
        s = obj.parse_strategy(strategy)
        if form not in ("raw", "log"):
            raise UsageError(f"--form must be raw or log, got {form!r}")
        if s.kind == "bon" and form == "log":
            raise UsageError("bon@N has only the raw rank weight N q^(N-1): use --form raw")
    except obj.StrategyError as e:
        raise UsageError(str(e)) from None
    if source is not None:
        if p is not None:
            raise UsageError("--from and --p both give the p values: use one")
        if plot is not None:
            raise UsageError("--plot draws the weight curves over --p; it does not take --from")
        _weights_from_run(s, source, form, as_json)
        return
    ps = _parse_ps(p) if p else [10.0**e for e in range(-6, 0)] + [0.5, 0.9, 0.99, 0.999999]
    log_p = torch.log(torch.tensor(ps, dtype=torch.float64))
    w_sft = obj.w_sft(s, log_p).tolist()
    w_rl = obj.w_rl(s, log_p, form).tolist()
    k = s.sft_k if s.kind == "maj" else None
    result = {
        "strategy": str(s),
        "n": s.n,
        "k": k,
        "points": [{"p": pv, "sft_weight": a, "rl_weight": b} for pv, a, b in zip(ps, w_sft, w_rl)],
    }
    if plot is not None:
        _plot_weights(result, plot, form)
    if as_json:
        _emit_json(result)
        return
    from rich.table import Table

    table = Table(title=f"CAT weights for {s}" + (f" (k = {k})" if k else ""))
    for col in ("p", "w_SFT", f"w_RL ({form})"):
        table.add_column(col, justify="right")
    for pt in result["points"]:
        table.add_row(f"{pt['p']:.6g}", f"{pt['sft_weight']:.6g}", f"{pt['rl_weight']:.6g}")
    _console().print(table)


REWEIGHTED = "|w_i / mean(w) - 1| > 0.1 (CE weights every item 1; a common factor is only the learning rate)"


def _weights_from_run(s, source: Path, form: str, as_json: bool) -> None:
    from dataclasses import asdict

    from catcli.reweighting import summarise

    ps, unit = _run_ps(source)
    summary = summarise(ps, s, form)
    note = (
        "p is each training step's batch-mean target probability (train_log p_mean), not a per-problem p, "
        "so each w is the weight at that mean, not the step's mean weight (train_log weight_mean)"
        if unit == "step"
        else "p is each problem's success rate c/n over its graded samples"
    )
    if as_json:
        _emit_json({**asdict(summary), "source": str(source), "unit": unit, "note": note, "reweighted": REWEIGHTED})
        return
    from rich.table import Table

    table = Table(title=f"CAT {s} on {summary.count} {unit}s of {source}")
    table.add_column("")
    for col in ("min", "10 %", "50 %", "90 %", "max", "mean"):
        table.add_column(col, justify="right")
    rows = [("p", summary.p), ("w_SFT", summary.w_sft), (f"w_RL ({form})", summary.w_rl)]
    for name, d in rows:
        if d is not None:
            table.add_row(name, *(f"{v:.3g}" for v in (d.min, d.p10, d.p50, d.p90, d.max, d.mean)))
    console = _console()
    console.print(table)
    console.print(f"{note}.", highlight=False, soft_wrap=True)

    def share(x: float | None) -> str:
        return "n/a (every weight is 0)" if x is None else f"{100 * x:.0f} %"

    rl = "n/a (bon@N ranks rewards, not p)" if summary.w_rl is None else share(summary.share_rl)
    console.print(
        f"CAT {s} reweights {share(summary.share_sft)} of these {summary.count} {unit}s by more than 10 % against CE "
        f"in SFT (RL, {form}: {rl}); reweighted means {REWEIGHTED}.",
        highlight=False,
        soft_wrap=True,
    )


def _run_ps(source: Path) -> tuple[list[float], str]:
    """The p values of a run and what each belongs to: per problem c/n (eval), per step p_mean (sft)."""
    from catcli.errors import DataError
    from catcli.rundir import read_jsonl
    from catcli.samples import load_samples

    if not source.exists():
        raise DataError(f"--from {source} does not exist")
    path = source
    if source.is_dir():
        found = [source / name for name in ("samples.jsonl", "train_log.jsonl") if (source / name).exists()]
        if not found:
            raise DataError(
                f"--from {source} holds neither samples.jsonl (an eval run) nor train_log.jsonl (an sft run)"
            )
        if len(found) > 1:
            raise UsageError(f"--from {source} holds both samples.jsonl and train_log.jsonl: name the file")
        path = found[0]
    if path.name != "train_log.jsonl":
        return [sum(r["correct"]) / len(r["correct"]) for r in load_samples(path)], "problem"
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
    return ps, "step"


def _parse_ps(text: str) -> list[float]:
    try:
        ps = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"invalid --p {text!r}: use numbers in [0, 1] like 0.05,0.5") from None
    if not ps or any(not (0.0 <= x <= 1.0) or math.isnan(x) for x in ps):
        raise UsageError(f"invalid --p {text!r}: every p must be in [0, 1]")
    return ps


def _plot_weights(result: dict, path: Path, form: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from catcli.curves import save_png

    pts = [pt for pt in result["points"] if pt["p"] > 0]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([pt["p"] for pt in pts], [pt["sft_weight"] for pt in pts], marker="o", label="w_SFT")
    ax.plot([pt["p"] for pt in pts], [pt["rl_weight"] for pt in pts], marker="s", label=f"w_RL ({form})")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("p")
    ax.set_ylabel("weight")
    ax.set_title(f"CAT weights: {result['strategy']}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_png(fig, path)


# ---------------------------------------------------------------- eval, score, compare, plot


@app.command("eval")
def eval_cmd(
    model: ModelOpt = None,
    data: DataOpt = None,
    split: SplitOpt = None,
    levels: LevelsOpt = None,
    subjects: SubjectsOpt = None,
    limit: LimitOpt = None,
    seed: SeedOpt = None,
    k: KOpt = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Samples per problem. [default: the largest k]")] = None,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    batch_size: Annotated[
        Optional[int], typer.Option("--batch-size", help="Problems per generate call (x n sequences). [default: 16]")
    ] = None,
    instruction: InstructionOpt = None,
    backend: Annotated[
        Optional[str],
        typer.Option("--backend", help="auto | hf | vllm (vllm: Unsloth fast_inference, GPU only). [default: auto]"),
    ] = None,
    load_in_4bit: LoadIn4bitOpt = None,
    max_seq_length: Annotated[Optional[int], typer.Option("--max-seq-length")] = None,
    trust_remote_code: TrustRemoteCodeOpt = None,
    reward: RewardOpt = None,
    reward_weights: RewardWeightsOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    overwrite: OverwriteOpt = None,
    recipe: RecipeOpt = None,
    as_json: JsonOpt = False,
):
    """Sample n completions per problem and report pass@k / maj@k (with --reward also bon@k, bon_correct@k) with 95 % CIs."""
    from catcli import config
    from catcli.curves import metrics_table
    from catcli.evaluation import EvalConfig, run_eval

    flags = dict(
        model=model,
        data=data,
        split=split,
        levels=levels,
        subjects=_subjects(subjects),
        limit=limit,
        seed=seed,
        k=_ks(k),
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        instruction=instruction,
        backend=backend,
        load_in_4bit=load_in_4bit,
        max_seq_length=max_seq_length,
        trust_remote_code=trust_remote_code,
        reward=tuple(reward) if reward else None,
        reward_weights=reward_weights,
        out=out,
        resume=resume,
        overwrite=overwrite,
    )
    cfg = config.resolve(EvalConfig, "eval", config.load_recipe(recipe), flags)
    result = run_eval(cfg, progress=not as_json)
    if result is None:  # another process of a multi-process run: rank 0 reports
        return
    if as_json:
        _emit_json(result)
    else:
        _console().print(
            metrics_table(
                result, f"{cfg.model} on {cfg.data}: {result['n_problems']} problems x {cfg.n_samples} samples"
            )
        )
        typer.echo(f"wrote {cfg.out}/eval.json, curves.csv, curves.png", err=True)


@app.command()
def score(
    samples: Annotated[Path, typer.Argument(help="A samples.jsonl file (or a run directory holding one).")],
    k: KOpt = None,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
):
    """Recompute metrics from a samples file, no model needed; grades lines that are not graded.

    Lines with a `reward` list (one number per completion) also give bon@k and bon_correct@k.
    """
    from catcli.curves import metrics_table, summarise
    from catcli.samples import load_samples

    records = load_samples(samples)
    ks = list(_ks(k) or (1,))
    summary = summarise(records, ks, seed or 0)
    if as_json:
        _emit_json(summary)
    else:
        _console().print(metrics_table(summary, f"{samples}: {summary['n_problems']} problems"))


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Baseline run directory or samples.jsonl.")],
    b: Annotated[Path, typer.Argument(help="Run to compare against it.")],
    k: KOpt = None,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
):
    """Paired difference B - A per metric over shared problems, with a bootstrap 95 % CI (bon metrics when both have rewards)."""
    from catcli.curves import compare as compare_runs
    from catcli.curves import compare_table
    from catcli.samples import load_samples

    ra, rb = load_samples(a), load_samples(b)
    ks = list(_ks(k) or _common_ks(ra, rb))
    result = compare_runs(ra, rb, ks, seed or 0)
    if as_json:
        _emit_json(result)
    else:
        _console().print(compare_table(result, str(a), str(b)))


def _common_ks(*runs: list[dict]) -> tuple[int, ...]:
    n = min(len(r["completions"]) for run in runs for r in run)
    return tuple(2**i for i in range(int(math.log2(n)) + 1))


@app.command()
def plot(
    runs: Annotated[list[Path], typer.Argument(help="eval.json files or run directories to overlay.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG file to write.")],
):
    """Overlay the pass@k / maj@k (and bon@k / bon_correct@k) curves of several eval runs."""
    from catcli.curves import plot_curves
    from catcli.errors import DataError

    loaded = []
    for run in runs:
        path = run / "eval.json" if run.is_dir() else run
        try:
            loaded.append((str(run), json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read eval results {path}: {getattr(e, 'strerror', None) or e}") from None
        if "metrics" not in loaded[-1][1]:
            raise DataError(f"{path} is not an eval.json written by catcli eval (no metrics)")
    plot_curves(loaded, output)
    typer.echo(f"wrote {output}", err=True)


# ---------------------------------------------------------------- training


def _train(section: str, cfg, run, summary: str, dry_run: bool, as_json: bool) -> None:
    """Validate (before any model loads), then print the config or train."""
    from catcli import config

    cfg.validate()
    if dry_run:
        _emit_json({section: config.to_dict(cfg)})
        return
    typer.echo(summary, err=True)
    result = run(cfg, progress=not as_json)
    if as_json:
        _emit_json(result)
    else:
        typer.echo(f"wrote {cfg.out}/adapter, train_log.jsonl, run.json ({result['global_step']} steps)", err=True)


@app.command()
def sft(
    model: ModelOpt = None,
    data: DataOpt = None,
    split: SplitOpt = None,
    levels: LevelsOpt = None,
    subjects: SubjectsOpt = None,
    limit: LimitOpt = None,
    seed: SeedOpt = None,
    strategy: Annotated[
        Optional[str], typer.Option("--strategy", help="ce | pass@N | maj@N[:k=K|:frac=F] | bon@N. [default: ce]")
    ] = None,
    target: Annotated[
        Optional[str], typer.Option("--target", help="answer (boxed answer only) | solution. [default: answer]")
    ] = None,
    reduction: Annotated[
        Optional[str],
        typer.Option("--reduction", help="sequence | token. [default: sequence for answer, token for solution]"),
    ] = None,
    hybrid: Annotated[
        Optional[bool],
        typer.Option("--hybrid", help="Pairwise-contrastive hybrid loss (0.5 CE + 0.5 pairwise, paper appendix)."),
    ] = None,
    epochs: Annotated[Optional[float], typer.Option("--epochs")] = None,
    max_steps: Annotated[
        Optional[int], typer.Option("--max-steps", help="Optimizer steps; overrides --epochs.")
    ] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="[default: 5e-6, the paper's]")] = None,
    batch_size: Annotated[
        Optional[int], typer.Option("--batch-size", help="Sequences per micro-batch. [default: 1]")
    ] = None,
    grad_accum: Annotated[Optional[int], typer.Option("--grad-accum", help="[default: 4]")] = None,
    optim: OptimOpt = None,
    lr_scheduler: LrSchedulerOpt = None,
    warmup_steps: WarmupStepsOpt = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="[default: 1024]")] = None,
    save_steps: SaveStepsOpt = None,
    lora_r: LoraROpt = None,
    lora_alpha: LoraAlphaOpt = None,
    lora_targets: LoraTargetsOpt = None,
    load_in_4bit: LoadIn4bitOpt = None,
    init_adapter: InitAdapterOpt = None,
    report_to: ReportToOpt = None,
    save_merged: Annotated[
        Optional[bool],
        typer.Option("--save-merged", help="Also write OUT/merged: the adapter merged into a 16-bit base."),
    ] = None,
    instruction: InstructionOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    overwrite: OverwriteOpt = None,
    recipe: RecipeOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
):
    """CAT-weighted SFT on Unsloth 4-bit QLoRA: minimise -log S(p) of the strategy."""
    from catcli import config
    from catcli.trainers.sft import SFTRunConfig, run_sft, with_defaults_for_target

    flags = dict(
        model=model,
        data=data,
        split=split,
        levels=levels,
        subjects=_subjects(subjects),
        limit=limit,
        seed=seed,
        strategy=strategy,
        target=target,
        reduction=reduction,
        hybrid=hybrid,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        batch_size=batch_size,
        grad_accum=grad_accum,
        optim=optim,
        lr_scheduler=lr_scheduler,
        warmup_steps=warmup_steps,
        max_length=max_length,
        save_steps=save_steps,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_targets=_subjects(lora_targets),
        load_in_4bit=load_in_4bit,
        init_adapter=init_adapter,
        report_to=report_to,
        save_merged=save_merged,
        instruction=instruction,
        trust_remote_code=trust_remote_code,
        out=out,
        resume=resume,
        overwrite=overwrite,
    )
    cfg = with_defaults_for_target(config.resolve(SFTRunConfig, "sft", config.load_recipe(recipe), flags))
    summary = (
        f"effective batch: {cfg.batch_size} x {cfg.grad_accum} accumulation per process; "
        f"strategy {cfg.strategy}, {cfg.target} targets, {cfg.resolved_reduction} reduction"
    )
    _train("sft", cfg, run_sft, summary, dry_run, as_json)


@app.command()
def rl(
    model: ModelOpt = None,
    data: DataOpt = None,
    split: SplitOpt = None,
    levels: LevelsOpt = None,
    subjects: SubjectsOpt = None,
    limit: LimitOpt = None,
    seed: SeedOpt = None,
    strategy: Annotated[
        Optional[str], typer.Option("--strategy", help="grpo (vanilla) | pass@N | maj@N[:k=K] | bon@N. [default: grpo]")
    ] = None,
    form: Annotated[Optional[str], typer.Option("--form", help="raw (S'(p)) | log (w_SFT). [default: raw]")] = None,
    method: Annotated[
        Optional[str],
        typer.Option(
            "--method",
            help="cat (weights GRPO's advantage) | pkpo | passk | passk-best (peers: replace it; k = the strategy's N). "
            "[default: cat]",
        ),
    ] = None,
    p_estimate: Annotated[
        Optional[str],
        typer.Option(
            "--p-estimate",
            help="sequence (each rollout's probability) | success (its prompt's Laplace success rate). "
            "[default: sequence for pass@N, success for maj@N]",
        ),
    ] = None,
    all_wrong_penalty: Annotated[
        Optional[float],
        typer.Option(
            "--all-wrong-penalty",
            help="Subtracted from every advantage of an all-wrong group, before the weight. [default: 0.5 for maj@N, else 0]",
        ),
    ] = None,
    num_generations: Annotated[
        Optional[int], typer.Option("--num-generations", help="M, rollouts per prompt. [default: 8]")
    ] = None,
    prompts_per_step: Annotated[Optional[int], typer.Option("--prompts-per-step", help="[default: 4]")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="[default: 100]")] = None,
    max_new_tokens: MaxNewTokensOpt = None,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    beta: Annotated[
        Optional[float], typer.Option("--beta", help="KL coefficient (not CAT-weighted). [default: 0]")
    ] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="[default: 1e-6]")] = None,
    optim: OptimOpt = None,
    lr_scheduler: LrSchedulerOpt = None,
    warmup_steps: WarmupStepsOpt = None,
    loss_type: Annotated[
        Optional[str], typer.Option("--loss-type", help="dr_grpo (the paper's) | dapo | grpo | bnpo")
    ] = None,
    lora_r: LoraROpt = None,
    lora_alpha: LoraAlphaOpt = None,
    lora_targets: LoraTargetsOpt = None,
    load_in_4bit: LoadIn4bitOpt = None,
    init_adapter: InitAdapterOpt = None,
    vllm: Annotated[
        Optional[bool], typer.Option("--vllm", help="Generate rollouts with vLLM (Unsloth fast_inference; CUDA).")
    ] = None,
    reward: RewardOpt = None,
    reward_weights: RewardWeightsOpt = None,
    save_steps: SaveStepsOpt = None,
    report_to: ReportToOpt = None,
    instruction: InstructionOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    overwrite: OverwriteOpt = None,
    recipe: RecipeOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
):
    """GRPO with CAT advantage weights: rollouts graded for correctness, advantages x w_RL."""
    from catcli import config
    from catcli.trainers.rl import RLRunConfig, run_rl

    flags = dict(
        model=model,
        data=data,
        split=split,
        levels=levels,
        subjects=_subjects(subjects),
        limit=limit,
        seed=seed,
        strategy=strategy,
        form=form,
        method=method,
        p_estimate=p_estimate,
        all_wrong_penalty=all_wrong_penalty,
        num_generations=num_generations,
        prompts_per_step=prompts_per_step,
        max_steps=max_steps,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        beta=beta,
        lr=lr,
        optim=optim,
        lr_scheduler=lr_scheduler,
        warmup_steps=warmup_steps,
        loss_type=loss_type,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_targets=_subjects(lora_targets),
        load_in_4bit=load_in_4bit,
        init_adapter=init_adapter,
        vllm=vllm,
        reward=tuple(reward) if reward else None,
        reward_weights=reward_weights,
        save_steps=save_steps,
        report_to=report_to,
        instruction=instruction,
        trust_remote_code=trust_remote_code,
        out=out,
        resume=resume,
        overwrite=overwrite,
    )
    cfg = config.resolve(RLRunConfig, "rl", config.load_recipe(recipe), flags)
    summary = (
        f"effective batch: {cfg.prompts_per_step} prompts x {cfg.num_generations} rollouts per process; "
        f"strategy {cfg.strategy} ({cfg.form}), method {cfg.method}, loss {cfg.loss_type}"
    )
    _train("rl", cfg, run_rl, summary, dry_run, as_json)


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; known errors become one stderr line and an exit code (errors.py)."""
    debug = os.environ.get("CATCLI_DEBUG") == "1"
    interrupted = "catcli: interrupted; finished work is saved: rerun with --resume to continue"
    try:
        result = app(args=argv, prog_name="catcli", standalone_mode=False)
        if result == EXIT_INTERRUPTED:  # typer turns Ctrl-C into this code itself, silently
            print(interrupted, file=sys.stderr)
        return result if isinstance(result, int) else 0
    except CatError as e:
        if debug:
            raise
        print(f"catcli: error: {e}", file=sys.stderr)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except typer.TyperException as e:  # typer's own copy of click's usage errors
        print(f"catcli: error: {e.format_message()} (see catcli --help)", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: one line unless debugging
        if debug:
            raise
        print(f"catcli: internal error: {type(e).__name__}: {e} (CATCLI_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
