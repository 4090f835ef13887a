"""The ``attnless`` command line: a thin typer layer over the Python API."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from attnless import config as config_mod
from attnless.config import Config, ConfigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Attentionless Transformers: train a teacher, distil its attention into shallow "
    "feed-forward networks, and score the hybrids (arXiv 2311.10642).",
)
console = Console(stderr=True)

ConfigArg = Annotated[
    Path,
    typer.Argument(
        help="A YAML config (e.g. experiments/quick.yaml) or an existing run folder.",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override a config value: section.key=value (YAML value), repeatable.",
        show_default=False,
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _is_main_process() -> bool:
    """False in the processes of rank > 0 of a ``torchrun`` job (they print nothing)."""
    from attnless.distributed import env_context

    return env_context().is_main


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet or not _is_main_process() else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def load_config(target: Path, overrides: list[str] | None) -> Config:
    """Load a config or a run folder's config, or exit with the error."""
    try:
        return config_mod.load(target, overrides or [])
    except ConfigError as err:
        console.print(f"[red]config error:[/red] {err}")
        raise typer.Exit(2) from None


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}")
    raise typer.Exit(1) from None


def _print_record(title: str, record: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in record.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (dict, list)):
            continue
        table.add_row(key, str(value))
    Console().print(table)


@app.command()
def prepare(config: ConfigArg, set_: SetOpt = None, quiet: QuietOpt = False) -> None:
    """Create the run folder: read the corpus, train the tokenizer, report the data."""
    from attnless.prepare import prepare as run_prepare

    _setup_logging(quiet)
    cfg = load_config(config, set_)
    try:
        prepared = run_prepare(cfg)
    except (ValueError, OSError) as err:
        _fail(err)
    _print_record(f"prepared {prepared.run_dir}", prepared.stats)


@app.command()
def train(config: ConfigArg, set_: SetOpt = None, quiet: QuietOpt = False) -> None:
    """Train (or resume) the teacher Transformer of CONFIG."""
    from attnless.train import TrainingDiverged
    from attnless.train import train as run_train

    _setup_logging(quiet)
    cfg = load_config(config, set_)
    if quiet:
        cfg.train.progress = False
    try:
        summary = run_train(cfg, progress=not quiet)
    except TrainingDiverged as err:
        _fail(err)
    except (ValueError, OSError) as err:
        _fail(err)
    if _is_main_process():
        _print_record("training finished", summary)


ReplaceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--replace",
        "-r",
        help="site=method:size, e.g. encoder.self=alr:M (sizes XS S M L XL; several sizes "
        "comma-separated for distill). Sites: encoder.self (alr aslr alrr elr), decoder.self "
        "(alr), decoder.cross (alr). Repeatable.",
        show_default=False,
    ),
]
LayersOpt = Annotated[
    str | None, typer.Option("--layers", "-l", help="Layers to replace: all, 0-5 or 0,2,4.")
]


@app.command()
def distill(
    config: ConfigArg,
    set_: SetOpt = None,
    replace: ReplaceOpt = None,
    layers: LayersOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train replacement networks against the frozen teacher (one shared teacher pass)."""
    from attnless.distill import distill as run_distill

    _setup_logging(quiet)
    cfg = load_config(config, set_)
    if replace:
        cfg.distill.replace = replace
    if layers is not None:
        cfg.distill.layers = layers
    try:
        summary = run_distill(cfg, progress=not quiet)
    except (ValueError, OSError) as err:
        _fail(err)
    if not _is_main_process():
        return
    table = Table(title=f"students in {summary['run_dir']}")
    for column in ("student", "epoch", "step", "params", "valid MSE"):
        table.add_column(column)
    for key, info in summary["students"].items():
        row = [key, str(info["epoch"]), str(info["step"]), f"{info['params']:,}"]
        table.add_row(*row, f"{info['valid_mse']:.4g}")
    Console().print(table)


@app.command()
def evaluate(
    config: ConfigArg,
    set_: SetOpt = None,
    replace: ReplaceOpt = None,
    layers: LayersOpt = None,
    split: Annotated[
        list[str] | None,
        typer.Option("--split", help="Split(s) to score: test, valid. Default: eval.splits."),
    ] = None,
    beam: Annotated[int | None, typer.Option(help="Beam size (1 = greedy).")] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="Teacher checkpoint: best, last or average.")
    ] = None,
    finetune_epochs: Annotated[
        int | None,
        typer.Option(help="Fine-tune the hybrid end to end for N epochs first (not the paper)."),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Decode a split with the teacher (or, with --replace, the hybrid) and print sacreBLEU."""
    from attnless.evaluate import evaluate as run_evaluate

    _setup_logging(quiet)
    cfg = load_config(config, set_)
    if beam is not None:
        cfg.decode.beam = beam
    if checkpoint is not None:
        cfg.eval.checkpoint = checkpoint
    if replace:
        cfg.eval.replace = replace
    if layers is not None:
        cfg.eval.layers = layers
    if finetune_epochs is not None:
        cfg.eval.finetune_epochs = finetune_epochs
    try:
        results = run_evaluate(cfg, split or None, progress=not quiet)
    except (ValueError, OSError) as err:
        _fail(err)
    for result in results:
        _print_record(f"{result['variant']} on {result['test_set']}", result)
        console.print(result["bleu_signature"])
        if "chrf_signature" in result:
            console.print(result["chrf_signature"])


@app.command()
def translate(
    config: ConfigArg,
    set_: SetOpt = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help="Source text (default: stdin).")
    ] = None,
    output_file: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write translations here (default: stdout)."),
    ] = None,
    beam: Annotated[int | None, typer.Option(help="Beam size (1 = greedy).")] = None,
    checkpoint: Annotated[str, typer.Option(help="best, last or average.")] = "best",
) -> None:
    """Translate raw source sentences, one per line, with the trained teacher."""
    from attnless import hardware
    from attnless.data.tokenizer import Tokenizer
    from attnless.evaluate import translate_lines
    from attnless.runs import write_text
    from attnless.train import load_model

    _setup_logging(True)
    cfg = load_config(config, set_)
    if beam is not None:
        cfg.decode.beam = beam
    try:
        lines = input_file.read_text(encoding="utf-8") if input_file else sys.stdin.read()
        device = hardware.resolve_device(cfg.train.device)
        model, _ = load_model(cfg.run_dir(), checkpoint, device)
        hyps, stats = translate_lines(model, Tokenizer.load(cfg.run_dir()), lines.splitlines(), cfg)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        _fail(err)
    text = "".join(h + "\n" for h in hyps)
    if output_file:
        write_text(output_file, text)
        console.print(json.dumps(stats))
    else:
        sys.stdout.write(text)


@app.command()
def sweep(
    spec: Annotated[
        Path,
        typer.Argument(help="A sweep spec, e.g. experiments/encoder.yaml.", show_default=False),
    ],
    preset: Annotated[
        str | None,
        typer.Option(
            help="Preset name (experiments/<name>.yaml) or YAML file; overrides the spec's."
        ),
    ] = None,
    set_: SetOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the cells and estimate the time; run nothing.")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            help="i/n: run cells i, i+n, i+2n, ... (0-based), e.g. "
            "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Sweep folder. Default: sweeps/<spec name>.")
    ] = None,
    runs: Annotated[
        Path | None,
        typer.Option(help="Teacher run folders. Default: runs/ beside the sweep folder."),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only the cells with these grid values, key=value[,value], repeatable: "
            "--only direction=de-en --only size=XS,S (keys: corpus, direction, replace, size, "
            "layers).",
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run (or continue) a sweep: teachers, students and one result line per cell."""
    from attnless.sweep import Sweep, load_spec, parse_shard

    _setup_logging(quiet)
    try:
        loaded = load_spec(spec, preset, set_ or [])
        runner = Sweep(loaded, out, runs, parse_shard(shard), progress=not quiet, only=only)
    except ConfigError as err:
        console.print(f"[red]spec error:[/red] {err}", soft_wrap=True)
        raise typer.Exit(2) from None
    if dry_run:
        typer.echo(runner.dry_run())
        return
    try:
        counts = runner.run()
    except (ValueError, OSError) as err:
        _fail(err)
    console.print(
        f"sweep {runner.spec.name}: {counts['evaluated']} cells run, {counts['skipped']} were "
        f"finished, {counts['busy']} busy elsewhere; results in {runner.results_path}"
    )


@app.command()
def report(
    sweep_dir: Annotated[
        Path,
        typer.Argument(
            help="A sweep folder (sweeps/encoder) or its spec (experiments/encoder.yaml).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None, typer.Option(help="Output folder. Default: <sweep folder>/report.")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Tables (markdown, CSV) and figures (PNG) of a sweep's results, laid out like the paper's."""
    from attnless.report import report as run_report

    _setup_logging(True)
    if sweep_dir.is_file():
        values = config_mod.read_yaml(sweep_dir)
        sweep_dir = Path("sweeps") / str(values.get("name") or sweep_dir.stem)
    try:
        summary = run_report(
            sweep_dir, out, warn=lambda text: console.print(f"[yellow]warning:[/yellow] {text}")
        )
    except (ValueError, OSError) as err:
        _fail(err)
    if not quiet:
        typer.echo(summary["markdown"])
    files = ", ".join(summary["files"])
    console.print(f"report of {summary['cells']} cells in {summary['out']}: {files}")


# commands that compute, and so gain from a faster allocator (see attnless.allocator)
COMPUTE_COMMANDS = {"prepare", "train", "distill", "evaluate", "translate", "sweep"}


def main() -> None:
    """The console script: relaunch compute commands with a faster allocator, then run."""
    from attnless.allocator import AllocatorError, relaunch_with_fast_allocator

    if COMPUTE_COMMANDS.intersection(sys.argv[1:2]):
        try:
            relaunch_with_fast_allocator()
        except AllocatorError as err:
            console.print(f"[red]error:[/red] {err}")
            raise SystemExit(2) from None
    app()
