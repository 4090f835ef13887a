"""The ``attnless`` command line: a thin typer layer over the Python API."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attnless import config as config_mod
from attnless.config import Config, ConfigError, Override

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


def load_config(target: Path, overrides: list[str] | None, *options: Override | None) -> Config:
    """Load a config or a run folder's config with the ``--set`` overrides, then the options of
    the command that set config values (None: not given), or exit with the error (which names
    the file, the override or the option that gave the bad value)."""
    given = [*(overrides or []), *(o for o in options if o is not None)]
    try:
        return config_mod.load(target, given)
    except ConfigError as err:
        console.print(f"[red]config error:[/red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(2) from None


def _option(flag: str, key: str, value: Any) -> Override | None:
    """The option ``flag`` setting config ``key``, or None when it was not given."""
    return None if value is None or value == [] else config_mod.option(flag, key, value)


def _fail(err: Exception) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
    raise typer.Exit(1) from None


def _command_line(*words: str | Path, **options: str | list[str] | bool | None) -> str:
    """A shell command line: ``attnless`` + ``words`` + the given ``options`` (``set_`` is
    ``--set``; a list repeats its option; True is a flag)."""
    out = ["attnless", *map(str, words)]
    for name, value in options.items():
        flag = "--" + name.rstrip("_").replace("_", "-")
        if value is True:
            out.append(flag)
        elif value:
            for item in value if isinstance(value, list) else [value]:
                out += [flag, str(item)]
    return shlex.join(out)


def _interrupted(kept: str, resume: str) -> NoReturn:
    """Ctrl-C: say what was kept and how to resume (main process only), and exit 130."""
    if _is_main_process():
        console.print(f"[yellow]interrupted:[/yellow] {escape(kept)}", soft_wrap=True)
        console.print(f"resume with: {resume}", soft_wrap=True, markup=False, highlight=False)
    raise typer.Exit(130) from None


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
    except (TrainingDiverged, ValueError, OSError) as err:
        _fail(err)
    except KeyboardInterrupt:
        _interrupted(_kept_checkpoint(cfg), _command_line("train", config, set_=set_, quiet=quiet))
    if _is_main_process():
        _print_record("training finished", summary)


def _kept_checkpoint(cfg: Config) -> str:
    """What an interrupted ``train`` leaves: the last checkpoint and its position."""
    from attnless.checkpoint import load
    from attnless.rundir import RunDir

    last = RunDir.of(cfg).checkpoint("last")
    if not last.is_file():
        return f"no checkpoint was written yet ({last} does not exist); training starts over"
    try:
        state = load(last)["state"]
    except (ValueError, OSError, KeyError) as err:  # pragma: no cover - written atomically
        return f"{last} is kept but cannot be read ({err})"
    return (
        f"kept {last} (step {state['step']}, {state['epoch']} of {cfg.train.epochs} epochs "
        "done); the steps after it are redone when training resumes"
    )


ReplaceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--replace",
        "-r",
        help="site=method:size, e.g. encoder.self=alr:M (sizes XS S M L XL; several sizes "
        "comma-separated for distill). Sites: encoder.self (alr aslr alrr elr; beyond the "
        "paper: mixer toeplitz fnet meanpool), decoder.self (alr; mixer toeplitz meanpool), "
        "decoder.cross (alr; mixer meanpool). Repeatable.",
        show_default=False,
    ),
]
LayersOpt = Annotated[
    str | None, typer.Option("--layers", "-l", help="Layers to replace: all, 0-5 or 0,2,4.")
]
BeamOpt = Annotated[int | None, typer.Option(help="Beam size (1 = greedy).")]


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
    cfg = load_config(
        config,
        set_,
        _option("--replace", "distill.replace", replace),
        _option("--layers", "distill.layers", layers),
    )
    try:
        summary = run_distill(cfg, progress=not quiet)
    except (ValueError, OSError) as err:
        _fail(err)
    except KeyboardInterrupt:
        resume = _command_line(
            "distill", config, set_=set_, replace=replace, layers=layers, quiet=quiet
        )
        _interrupted(_kept_students(cfg), resume)
    if not _is_main_process():
        return
    table = Table(title=f"students in {summary['run_dir']}")
    for column in ("student", "epoch", "step", "params", "valid MSE"):
        table.add_column(column)
    for key, info in summary["students"].items():
        row = [key, str(info["epoch"]), str(info["step"]), f"{info['params']:,}"]
        table.add_row(*row, f"{info['valid_mse']:.4g}")
    Console().print(table)


def _kept_students(cfg: Config) -> str:
    """What an interrupted ``distill`` leaves: the student checkpoints (each written at an epoch
    end) and which of them finished ``distill.epochs``."""
    from attnless.rundir import RunDir
    from attnless.runs import read_metrics

    run = RunDir.of(cfg)
    folder, students = run.students, run.student_checkpoints()
    if not students:
        return f"no student checkpoint was written yet (under {folder}); distillation starts over"
    epochs: dict[str, int] = {}
    for record in read_metrics(run.student_metrics_file):
        if record.get("kind") == "distill_epoch":
            epochs[record["student"]] = record["epoch"]
    finished = [s for s, _ in students if epochs.get(s.key, 0) >= cfg.distill.epochs]
    paths = [path for _, path in students]
    names = ", ".join(str(p.relative_to(folder)) for p in paths)
    return (
        f"kept {len(paths)} student checkpoints under {folder} ({names}), each as of its last "
        f"finished epoch; {len(finished)} of them finished all {cfg.distill.epochs} epochs"
    )


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
    beam: BeamOpt = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="Teacher checkpoint: best, last or average.")
    ] = None,
    finetune_epochs: Annotated[
        int | None,
        typer.Option(help="Fine-tune the hybrid end to end for N epochs first (not the paper)."),
    ] = None,
    src: Annotated[
        Path | None, typer.Option("--src", help="Score your own test set: its source file.")
    ] = None,
    ref: Annotated[
        Path | None, typer.Option("--ref", help="... and its reference file (line-aligned).")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Decode a split (or --src/--ref files) with the teacher (or, with --replace, the hybrid)
    and print sacreBLEU and chrF with their signatures."""
    from attnless.evaluate import evaluate as run_evaluate
    from attnless.evaluate import file_text

    _setup_logging(quiet)
    cfg = load_config(
        config,
        set_,
        _option("--replace", "eval.replace", replace),
        _option("--layers", "eval.layers", layers),
        _option("--split", "eval.splits", split),
        _option("--beam", "decode.beam", beam),
        _option("--checkpoint", "eval.checkpoint", checkpoint),
        _option("--finetune-epochs", "eval.finetune_epochs", finetune_epochs),
    )
    if (src is None) != (ref is None):
        console.print("[red]error:[/red] --src and --ref go together: give both files")
        raise typer.Exit(2)
    try:
        texts = dict([file_text(src, ref)]) if src and ref else None
        results = run_evaluate(cfg, progress=not quiet, texts=texts)
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
    beam: BeamOpt = None,
    checkpoint: Annotated[str, typer.Option(help="best, last or average.")] = "best",
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Stop at a line longer than model.max_positions (default: leave its "
            "translation empty, warn, and translate the rest).",
        ),
    ] = False,
    replace: ReplaceOpt = None,
    layers: LayersOpt = None,
) -> None:
    """Translate raw source sentences, one per line (only a newline ends a line), with the
    trained teacher, or with a hybrid (--replace, --layers): exactly one output line per
    input line."""
    from attnless import hardware
    from attnless.data.textio import read_input_lines
    from attnless.evaluate import translate_lines
    from attnless.prepare import check_compatible
    from attnless.replacement import from_config
    from attnless.rundir import RunDir
    from attnless.runs import write_text

    _setup_logging(True)
    cfg = load_config(
        config,
        set_,
        _option("--beam", "decode.beam", beam),
        _option("--checkpoint", "eval.checkpoint", checkpoint),
        _option("--replace", "eval.replace", replace),
        _option("--layers", "eval.layers", layers),
    )
    source = str(input_file) if input_file else "standard input"
    try:
        lines = read_input_lines(input_file)
        run = RunDir.of(cfg)
        check_compatible(run.root, cfg)
        device = hardware.resolve_device(cfg.runtime.device)
        replacements, chosen = from_config(cfg.eval)
        hybrid = None
        if replacements:  # students distilled from distill.teacher_checkpoint
            from attnless.hybrid import build_hybrid

            model, payload = run.load_teacher(cfg.distill.teacher_checkpoint, device)
            step = payload["state"]["step"]
            hybrid = build_hybrid(model, step, cfg, replacements, chosen)
        else:
            model, _ = run.load_teacher(cfg.eval.checkpoint, device)
        tokenizer = run.tokenizer()
        hyps, stats = translate_lines(
            model, tokenizer, lines, cfg, source=source, strict=strict, hybrid=hybrid
        )
    except (ValueError, OSError) as err:
        _fail(err)
    _warn_too_long(source, stats)
    text = "".join(h + "\n" for h in hyps)
    if output_file:
        write_text(output_file, text)
        console.print(json.dumps(stats))
    else:
        sys.stdout.write(text)


def _warn_too_long(source: str, stats: dict[str, Any], shown: int = 10) -> None:
    """Name the input lines ``translate`` could not read (too long), the first ``shown``."""
    lines = stats["too_long"]
    if not lines:
        return
    listed = ", ".join(map(str, lines[:shown]))
    if len(lines) > shown:
        listed += f" and {len(lines) - shown} more"
    plural = "s" if len(lines) > 1 else ""
    console.print(
        f"[yellow]warning:[/yellow] {escape(source)}: line{plural} {listed}: longer than "
        f"model.max_positions ({stats['max_positions']} subword tokens), left empty in the "
        f"output; the other {stats['sentences']} lines are translated (--strict stops instead)",
        soft_wrap=True,
    )


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
            "layers, test_group, cell: ids as --dry-run lists them).",
        ),
    ] = None,
    together: Annotated[
        bool,
        typer.Option(
            "--together",
            help="Distil the students of all the selected cells of a teacher before scoring "
            "any, in calls that share each batch's teacher pass (the same students, faster "
            "for decoder-side ones; a cell's line waits for all of its teacher's students).",
        ),
    ] = False,
    students_only: Annotated[
        bool,
        typer.Option(
            "--students-only",
            help="Distil the students the selected cells need (scored or not) and score none, "
            "e.g. in several processes that share one GPU, for a later sweep that scores them.",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run (or continue) a sweep: teachers, students and one result line per cell."""
    from attnless.sweep import Sweep, load_spec, parse_shard

    _setup_logging(quiet)
    try:
        loaded = load_spec(spec, preset, set_ or [])
        runner = Sweep(
            loaded,
            out,
            runs,
            parse_shard(shard),
            progress=not quiet,
            only=only,
            together=together,
            students_only=students_only,
        )
    except ConfigError as err:
        console.print(f"[red]spec error:[/red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(2) from None
    if dry_run:
        typer.echo(runner.dry_run())
        return
    try:
        counts = runner.run()
    except (ValueError, OSError) as err:
        _fail(err)
    except KeyboardInterrupt:
        done = len(runner.done_ids() & {c.id for c in runner.mine})
        kept = (
            f"{done} of {len(runner.mine)} cells are finished (their lines are in "
            f"{runner.results_path}); trained teachers and distilled students are kept under "
            f"{runner.runs} and are reused, an interrupted one resuming from its last checkpoint"
        )
        resume = _command_line(
            "sweep",
            spec,
            preset=preset,
            set_=set_,
            shard=shard,
            out=out,
            runs=runs,
            only=only,
            together=together,
            students_only=students_only,
            quiet=quiet,
        )
        _interrupted(kept, resume)
    if students_only:
        console.print(
            f"sweep {runner.spec.name}: the students of {counts['prepared']} cells are distilled "
            f"(under {runner.runs}); no cell scored"
        )
        return
    copied = f", {counts['copied']} copied from sibling ledgers" if counts.get("copied") else ""
    console.print(
        f"sweep {runner.spec.name}: {counts['evaluated']} cells run, {counts['skipped']} were "
        f"finished{copied}, {counts['busy']} busy elsewhere; results in {runner.results_path}"
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
