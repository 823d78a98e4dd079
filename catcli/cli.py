"""The `catcli` command: parse, validate, call the library. Nothing else lives here.

The options of sft, rl, eval and data show are built from their config dataclasses (config.py):
each field is one flag, declared once there with its type, default and help. Every flag
defaults to None here, so a recipe value is overridden only by a flag the user typed; the help
shows the field's default. `--json` prints exactly one JSON object on stdout; progress bars and
logs go to stderr. Errors become one line on stderr and an exit code (errors.py);
CATCLI_DEBUG=1 shows tracebacks.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import sys
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from catcli import __version__, config
from catcli.backend import debugging, quiet_warnings
from catcli.config import DataOptions, EvalConfig, RLRunConfig, SFTRunConfig
from catcli.errors import EXIT_INTERRUPTED, CatError, UsageError
from catcli.strategy import Strategy

app = typer.Typer(
    help="Compute Aligned Training (arXiv 2604.24957): train and evaluate LLMs for pass@N / maj@N / bon@N.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Inspect problem sources.", no_args_is_help=True)
app.add_typer(data_app, name="data")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
KOpt = Annotated[Optional[str], typer.Option("--k", help="Comma-separated k values, e.g. 1,4,16.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the bootstrap CIs.")]


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


# ---------------------------------------------------------------- options from config fields

_LAST = ("out", "resume", "overwrite")  # shown after the command's own options
_EXTRAS = {
    "recipe": (Optional[Path], None, typer.Option("--recipe", help="TOML recipe; flags override its values.")),
    "dry_run": (bool, False, typer.Option("--dry-run", help="Print the resolved config and stop.")),
    "as_json": (bool, False, typer.Option("--json", help="Print one JSON object on stdout.")),
}


def _flag_type(hint, repeat: bool):
    """The type Typer parses the flag's text into; the config parses it further (config.resolve)."""
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if repeat:
        return list[str]
    return hint if hint in (bool, int, float, Path) else str


def shown_default(f: dataclasses.Field) -> str:
    """What the help says a field's default is: its `shown` text, else the value itself."""
    if f.metadata.get("shown"):
        return f.metadata["shown"]
    v = f.default
    if v is None or v is False or v == ():
        return ""
    if isinstance(v, tuple):
        return ",".join(map(str, v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def _option(f: dataclasses.Field, hint) -> inspect.Parameter:
    shown = shown_default(f)
    text = f.metadata["help"] + (f" [default: {shown}]" if shown else "")
    flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
    base = _flag_type(hint, f.metadata["repeat"])
    if base is bool and "/" not in flag:  # a recipe's `true` can be turned off from the command line
        flag = f"{flag}/--no-{flag[2:]}"
    annotation = Annotated[Optional[base], typer.Option(flag, help=text)]
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def config_command(parent: typer.Typer, name: str, cls, *extras: str):
    """Register `body(cfg, **extras)` as command NAME whose options are the fields of `cls`.

    Typer reads a command's options from its signature, so the signature is built here from the
    fields, for a function that takes them all as **given; nothing lists them a second time. The
    flags given (and the recipe's [NAME] table) become one `cls` in config.resolve.
    """

    def register(body):
        hints = typing.get_type_hints(cls)
        fields = sorted(dataclasses.fields(cls), key=lambda f: f.name in _LAST)
        params = [_option(f, hints[f.name]) for f in fields]
        for e in extras:
            base, default, info = _EXTRAS[e]
            params.append(
                inspect.Parameter(e, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[base, info])
            )

        def command(**given):
            extra = {e: given.pop(e) for e in extras}
            recipe = config.load_recipe(extra.pop("recipe", None))
            return body(config.resolve(cls, name, recipe, given), **extra)

        command.__signature__ = inspect.Signature(params)
        command.__doc__ = body.__doc__
        parent.command(name)(command)
        return body

    return register


# ---------------------------------------------------------------- data


@config_command(data_app, "show", DataOptions, "as_json")
def data_show(cfg: DataOptions, as_json: bool):
    """Count problems per level and subject after filtering."""
    from collections import Counter

    from catcli.curves import console
    from catcli.data import load_selection

    probs = load_selection(
        cfg.data, cfg.split, levels=cfg.levels, subjects=cfg.subjects, limit=cfg.limit, seed=cfg.seed
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

    table = Table(title=f"{cfg.data}: {len(probs)} problems")
    table.add_column("subject")
    lv = sorted(by_level)
    for level in lv:
        table.add_column(f"L{level}", justify="right")
    table.add_column("total", justify="right")
    for subject in sorted(by_subject):
        counts = Counter(p.level for p in probs if p.subject == subject)
        table.add_row(subject, *[str(counts[level]) for level in lv], str(by_subject[subject]))
    table.add_row("all", *[str(by_level[level]) for level in lv], str(len(probs)), style="bold")
    console().print(table)


# ---------------------------------------------------------------- weights


def _parse_ps(text: str) -> list[float]:
    try:
        ps = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"invalid --p {text!r}: use numbers in [0, 1] like 0.05,0.5") from None
    if not ps or any(not (0.0 <= x <= 1.0) or math.isnan(x) for x in ps):
        raise UsageError(f"invalid --p {text!r}: every p must be in [0, 1]")
    return ps


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
    s = config.parse_strategy_flag(strategy)
    if form not in ("raw", "log"):
        raise UsageError(f"--form must be raw or log, got {form!r}")
    if s.kind == "bon" and form == "log":
        raise UsageError("bon@N has only the raw rank weight N q^(N-1): use --form raw")
    if source is not None:
        if p is not None:
            raise UsageError("--from and --p both give the p values: use one")
        if plot is not None:
            raise UsageError("--plot draws the weight curves over --p; it does not take --from")
        _weights_from_run(s, source, form, as_json)
        return
    from catcli.reweighting import weight_points

    ps = _parse_ps(p) if p else [10.0**e for e in range(-6, 0)] + [0.5, 0.9, 0.99, 0.999999]
    result = weight_points(s, ps, form)
    if plot is not None:
        from catcli.curves import plot_weights

        plot_weights(result, plot, form)
    if as_json:
        _emit_json(result)
        return
    from rich.table import Table

    from catcli.curves import console

    table = Table(title=f"CAT weights for {s}" + (f" (k = {result['k']})" if result["k"] else ""))
    for col in ("p", "w_SFT", f"w_RL ({form})"):
        table.add_column(col, justify="right")
    for pt in result["points"]:
        table.add_row(f"{pt['p']:.6g}", f"{pt['sft_weight']:.6g}", f"{pt['rl_weight']:.6g}")
    console().print(table)


def _weights_from_run(s: Strategy, source: Path, form: str, as_json: bool) -> None:
    from dataclasses import asdict

    from catcli.curves import console
    from catcli.reweighting import REWEIGHTED, summarise_run

    summary, unit, note = summarise_run(source, s, form)
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
    out = console()
    out.print(table)
    out.print(f"{note}.", highlight=False, soft_wrap=True)

    def share(x: float | None) -> str:
        return "n/a (every weight is 0)" if x is None else f"{100 * x:.0f} %"

    rl = "n/a (bon@N ranks rewards, not p)" if summary.w_rl is None else share(summary.share_rl)
    out.print(
        f"CAT {s} reweights {share(summary.share_sft)} of these {summary.count} {unit}s by more than 10 % against CE "
        f"in SFT (RL, {form}: {rl}); reweighted means {REWEIGHTED}.",
        highlight=False,
        soft_wrap=True,
    )


# ---------------------------------------------------------------- eval, score, compare, plot


@config_command(app, "eval", EvalConfig, "recipe", "as_json")
def eval_cmd(cfg: EvalConfig, as_json: bool):
    """Sample n completions per problem and report pass@k / maj@k (with --reward also bon@k, bon_correct@k) with 95 % CIs."""
    from catcli.curves import console, metrics_table
    from catcli.evaluation import run_eval

    result = run_eval(cfg, progress=not as_json)
    if result is None:  # another process of a multi-process run: rank 0 reports
        return
    if as_json:
        _emit_json(result)
        return
    title = f"{cfg.model} on {cfg.data}: {result['n_problems']} problems x {cfg.n_samples} samples"
    console().print(metrics_table(result, title))
    typer.echo(f"wrote {cfg.out}/eval.json, curves.csv, curves.png", err=True)


def _ks(text: str | None) -> list[int] | None:
    return list(config.parse_ks_flag(text)) if text is not None else None


@app.command()
def score(
    samples: Annotated[Path, typer.Argument(help="A samples.jsonl file (or a run directory holding one).")],
    k: KOpt = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
):
    """Recompute metrics from a samples file, no model needed; grades lines that are not graded.

    Lines with a `reward` list (one number per completion) also give bon@k and bon_correct@k.
    """
    from catcli.curves import console, metrics_table, summarise
    from catcli.samples import load_samples

    records = load_samples(samples)
    summary = summarise(records, _ks(k) or [1], seed)
    if as_json:
        _emit_json(summary)
    else:
        console().print(metrics_table(summary, f"{samples}: {summary['n_problems']} problems"))


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Baseline run directory or samples.jsonl.")],
    b: Annotated[Path, typer.Argument(help="Run to compare against it.")],
    k: Annotated[
        Optional[str],
        typer.Option("--k", help="Comma-separated k values. [default: 1, 2, 4, ... up to the fewest samples]"),
    ] = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
):
    """Paired difference B - A per metric over shared problems, with a bootstrap 95 % CI (bon metrics when both have rewards).

    Two training runs evaluated along the way (--eval-data) are compared at each step both evaluated.
    """
    from catcli.curves import common_ks, compare_over_steps, compare_table, console, is_training_run
    from catcli.curves import compare as compare_runs
    from catcli.samples import load_samples

    if is_training_run(a) and is_training_run(b):  # their evaluations along training, step by step
        result = compare_over_steps(a, b, _ks(k), seed)
        if as_json:
            _emit_json(result)
            return
        for step, at_step in result["steps"].items():
            console().print(compare_table(at_step, str(a), str(b), f"step {step}: "))
        return
    ra, rb = load_samples(a), load_samples(b)
    result = compare_runs(ra, rb, _ks(k) or common_ks(ra, rb), seed)
    if as_json:
        _emit_json(result)
    else:
        console().print(compare_table(result, str(a), str(b)))


@app.command()
def plot(
    runs: Annotated[list[Path], typer.Argument(help="eval.json files or run directories to overlay.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG file to write.")],
):
    """Overlay the pass@k / maj@k (and bon@k / bon_correct@k) curves of several eval runs against k, or
    of training runs evaluated along the way (--eval-data) against the step."""
    from catcli.curves import is_training_run, load_eval_log, load_eval_results, plot_curves, plot_over_steps

    training = [is_training_run(run) for run in runs]
    if any(training) and not all(training):
        raise UsageError("plot draws eval runs against k or training runs against the step: not both at once")
    if all(training):
        plot_over_steps([(str(run), load_eval_log(run)) for run in runs], output)
    else:
        plot_curves(load_eval_results(runs), output)
    typer.echo(f"wrote {output}", err=True)


# ---------------------------------------------------------------- training


def _train(section: str, cfg, run, dry_run: bool, as_json: bool) -> None:
    """Print the resolved config, or train."""
    if dry_run:
        _emit_json({section: config.to_dict(cfg)})
        return
    result = run(cfg, progress=not as_json)
    if as_json:
        _emit_json(result)
    else:
        typer.echo(f"wrote {cfg.out}/adapter, train_log.jsonl, run.json ({result['global_step']} steps)", err=True)


@config_command(app, "sft", SFTRunConfig, "recipe", "dry_run", "as_json")
def sft(cfg: SFTRunConfig, dry_run: bool, as_json: bool):
    """CAT-weighted SFT on Unsloth 4-bit QLoRA: minimise -log S(p) of the strategy."""
    from catcli.trainers.sft import run_sft

    _train("sft", cfg, run_sft, dry_run, as_json)


@config_command(app, "rl", RLRunConfig, "recipe", "dry_run", "as_json")
def rl(cfg: RLRunConfig, dry_run: bool, as_json: bool):
    """GRPO with CAT advantage weights: rollouts graded for correctness, advantages x w_RL."""
    from catcli.trainers.rl import run_rl

    _train("rl", cfg, run_rl, dry_run, as_json)


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; known errors become one stderr line and an exit code (errors.py)."""
    debug = debugging()
    interrupted = "catcli: interrupted; finished work is saved: rerun with --resume to continue"
    quiet_warnings()
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
