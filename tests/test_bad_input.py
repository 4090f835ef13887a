"""Bad input gets a clear error, never a wrong result (issue 19): one test per case of the issue,
each reproducing it on a tiny teacher or config."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnless import config as config_mod
from attnless.cli import app
from attnless.config import Config, ConfigError
from attnless.data.textio import read_lines
from attnless.runs import read_json, read_jsonl
from tests.helpers import REPO, tiny_config

SMOKE = REPO / "experiments" / "smoke.yaml"
QUICK = ("data.train_subset=100", "runtime.threads=1")  # 9 steps an epoch


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Config:
    """A tiny teacher trained for one epoch (a few steps), with a 100-position table."""
    cfg = tiny_config(
        tmp_path_factory.mktemp("teacher"),
        data_dir,
        "data.train_subset=60",
        "data.eval_subset=12",
        "model.max_positions=100",
        "train.epochs=1",
        "runtime.threads=1",
    )
    from attnless.train import train

    train(cfg, progress=False)
    return cfg


def _invoke(*args: str | Path, stdin: bytes | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin)


def _text(result) -> str:
    """Everything a command printed, on one line (rich wraps long lines)."""
    return " ".join(result.output.split())


# --------------------------------------------------------------------------- case 1


def test_translate_writes_one_line_per_input_line(teacher: Config, tmp_path: Path) -> None:
    """U+2028, a form feed or a lone carriage return inside a line do not end it."""
    source = tmp_path / "in.de"
    source.write_bytes("ein Hund\u2028läuft\nzwei\x0cKatzen\nein\rMann\n".encode())
    out = tmp_path / "out.en"
    result = _invoke("translate", teacher.run_dir(), "-i", source, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().count(b"\n") == 3
    piped = _invoke("translate", teacher.run_dir(), "-o", out, stdin=source.read_bytes())
    assert piped.exit_code == 0, piped.output
    assert out.read_bytes().count(b"\n") == 3


# --------------------------------------------------------------------------- case 2


def test_reversed_layer_ranges_are_errors(teacher: Config, tmp_path: Path) -> None:
    from attnless.replacement import LayerSet
    from attnless.sweep import spec_from_dict

    run = teacher.run_dir()
    evaluated = _invoke("evaluate", run, "--replace", "encoder.self=alr:XS", "--layers", "1-0")
    assert evaluated.exit_code == 2, evaluated.output
    assert "--layers 1-0: eval.layers '1-0': the range 1-0 is reversed" in _text(evaluated)
    assert not (run / "eval" / "encoder.self-alr-XS.L1-0").exists()
    distilled = _invoke("distill", run, "--replace", "encoder.self=alr:XS", "--layers", "1-0")
    assert distilled.exit_code == 2 and "the range 1-0 is reversed" in _text(distilled)
    assert not (run / "students").exists()
    with pytest.raises(ConfigError, match="layers '3-1': the range 3-1 is reversed"):
        LayerSet.parse("3-1")
    with pytest.raises(ConfigError, match="layers '': expected all, 0-5 or 0,2,4"):
        LayerSet.parse("")
    spec = {"name": "t", "preset": "smoke", "grid": {"replace": ["encoder.self=alr"]}}
    spec["grid"].update(size=["XS"], layers=["0", "3-1"])
    with pytest.raises(ConfigError, match="grid.layers '3-1': the range 3-1 is reversed"):
        spec_from_dict(spec, "spec.yaml", REPO / "experiments")


# --------------------------------------------------------------------------- cases 3 and 6


def _text_corpus(tmp_path: Path, data_dir: Path, blank_targets: int | str = 0) -> Config:
    """A text corpus of 120 Multi30k pairs in ``tmp_path``; the first ``blank_targets`` target
    lines blank (``"all"``: every one)."""
    raw = data_dir / "multi30k" / "task1" / "raw"
    src, tgt = (read_lines(raw / f"train.{lang}.gz")[:120] for lang in ("de", "en"))
    tmp_path.mkdir(parents=True, exist_ok=True)
    blank = len(tgt) if blank_targets == "all" else int(blank_targets)
    tgt = [""] * blank + tgt[blank:]
    (tmp_path / "train.de").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / "train.en").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    files = {"src": str(tmp_path / "train.de"), "tgt": str(tmp_path / "train.en")}
    return tiny_config(
        tmp_path,
        data_dir,
        "data.corpus=text",
        "data.train_subset=null",
        "data.eval_subset=null",
        f"data.files={json.dumps({'train': files, 'valid': files})}",
    )


def test_failed_prepare_leaves_no_tokenizer_and_data_changes_are_caught(
    tmp_path: Path, data_dir: Path
) -> None:
    from attnless.prepare import prepare

    cfg = _text_corpus(tmp_path, data_dir, blank_targets="all")
    with pytest.raises(ValueError):
        prepare(cfg)
    assert not list(cfg.run_dir().glob("spm*.model"))
    # the corrected files get a tokenizer trained on them, not the failed run's
    fixed = _text_corpus(tmp_path, data_dir)
    tokenizer = prepare(fixed).tokenizer.files[0].read_bytes()
    fresh = _text_corpus(tmp_path / "fresh", data_dir)
    assert tokenizer == prepare(fresh).tokenizer.files[0].read_bytes()
    assert read_json(fixed.run_dir() / "tokenizer.json")["fingerprint"]
    # same settings, other data: retrained while nothing depends on the tokenizer ...
    changed = _text_corpus(tmp_path, data_dir, blank_targets=30)
    assert prepare(changed).tokenizer.files[0].read_bytes() != tokenizer
    # ... refused once checkpoints were trained with it
    (changed.run_dir() / "checkpoints").mkdir()
    (changed.run_dir() / "checkpoints" / "last.pt").write_bytes(b"trained with it")
    restored = _text_corpus(tmp_path, data_dir)
    with pytest.raises(ValueError, match="spm.model: trained on other data .* checkpoints"):
        prepare(restored)


def test_pairs_with_an_empty_side_are_counted_and_reported_as_empty(
    tmp_path: Path, data_dir: Path
) -> None:
    from attnless.prepare import prepare

    some = prepare(_text_corpus(tmp_path / "some", data_dir, blank_targets=7))
    assert some.stats["train_pairs_dropped_empty"] == 7
    assert some.stats["train_pairs_kept"] + some.stats["train_pairs_dropped_over_max_len"] == 113
    with pytest.raises(ValueError, match="empty") as failure:
        prepare(_text_corpus(tmp_path / "all", data_dir, blank_targets="all"))
    message = str(failure.value)
    assert "every pair has an empty (blank) source or target line; check text train de-en:" in (
        message
    )
    assert "train.en" in message and "max_len" not in message


# --------------------------------------------------------------------------- case 4


def test_evaluate_refuses_settings_that_contradict_the_run_folder(teacher: Config) -> None:
    from attnless.evaluate import evaluate

    run = teacher.run_dir()
    other = config_mod.load(SMOKE, [f"dir={run}"])  # the smoke preset: other model settings
    with pytest.raises(ConfigError, match="holds a run with different settings"):
        evaluate(other, progress=False)
    cli = _invoke("evaluate", run, "--set", "model.heads=4")
    assert cli.exit_code == 1 and "model.heads: 2 in the run folder, 4 now" in _text(cli)


def test_scores_of_different_test_subsets_never_overwrite_each_other(teacher: Config) -> None:
    from attnless.evaluate import evaluate

    run = teacher.run_dir()
    (ten,) = evaluate(config_mod.load(run, ["data.eval_subset=10"]), progress=False)
    (twelve,) = evaluate(config_mod.load(run), progress=False)
    assert (ten["sentences"], twelve["sentences"]) == (10, 12)
    folder = run / "eval" / "teacher"
    assert read_json(folder / "test.first10.greedy.scores.json")["sentences"] == 10
    assert read_json(folder / "test.first12.greedy.scores.json")["sentences"] == 12
    assert len((folder / "test.first10.greedy.hyp.txt").read_text().splitlines()) == 10


# --------------------------------------------------------------------------- case 5


def test_invalid_utf8_input_names_its_source_and_line(teacher: Config, tmp_path: Path) -> None:
    bad = b"ein Hund\nzwei \xff Katzen\n"
    piped = _invoke("translate", teacher.run_dir(), stdin=bad)
    assert piped.exit_code == 1, piped.output
    assert "standard input: line 2: invalid UTF-8 at byte offset 14" in _text(piped)
    path = tmp_path / "bad.de"
    path.write_bytes(bad)
    given = _invoke("translate", teacher.run_dir(), "-i", path)
    assert given.exit_code == 1
    assert f"{path}: line 2: invalid UTF-8" in _text(given)


# --------------------------------------------------------------------------- case 7


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=-1", "--set train.epochs=-1: train.epochs: must be positive, got -1"),
        ("model.dropout=1.5", "--set model.dropout=1.5: model.dropout: must be in [0, 1), got 1.5"),
        ("train.betas=[0.9, 1.2]", "train.betas[1]: must be in [0, 1), got 1.2"),
        ("decode.beam=0", "--set decode.beam=0: decode.beam: must be positive, got 0"),
        ("train.lr_scale=.nan", "train.lr_scale: must be greater than 0, got nan"),
        ("data.max_len=300", "--set data.max_len=300: model.max_positions: 256 must exceed"),
        ("eval.checkpoint=foo", "'foo' is not one of best, last, average"),
        ("eval.splits=[train]", "eval.splits: 'train' is not one of valid, test"),
    ],
)
def test_out_of_range_settings_name_the_override(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as failure:
        config_mod.load(SMOKE, ["train.epochs=3", override])
    assert message in str(failure.value)
    assert str(SMOKE) not in str(failure.value)


def test_out_of_range_values_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 0\n")
    expected = f"^{re.escape(str(path))}: train.epochs: must be positive, got 0$"
    with pytest.raises(ConfigError, match=expected):
        config_mod.load(path, ["model.dropout=0.2"])


def test_old_train_runtime_keys_are_read_as_the_runtime_section(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Run folders and presets written before the runtime section still load, with a note."""
    path = tmp_path / "old.yaml"
    path.write_text("train:\n  epochs: 3\n  precision: fp32\n  device: cpu\n  threads: 2\n")
    config_mod._NOTED.clear()
    with caplog.at_level("WARNING", logger="attnless.config"):
        cfg = config_mod.load(path, ["train.threads=1"])
        config_mod.load(path)  # noted once per process
    assert (cfg.runtime.precision, cfg.runtime.device, cfg.runtime.threads) == ("fp32", "cpu", 1)
    assert "precision" not in cfg.to_dict()["train"] and cfg.train.epochs == 3
    assert [r.getMessage() for r in caplog.records] == [
        "--set train.threads=1: train.threads moved to the runtime section: read as "
        "runtime.threads",
        f"{path}: train.device, train.precision moved to the runtime section: read as "
        "runtime.device, runtime.precision",
    ]
    both = tmp_path / "both.yaml"
    both.write_text("train:\n  precision: fp32\nruntime:\n  precision: bf16\n")
    assert config_mod.load(both).runtime.precision == "bf16"  # the runtime section wins
    with pytest.raises(ConfigError, match=r"^--set train.precision=fp16: runtime.precision: "):
        config_mod.load(path, ["train.precision=fp16"])


def test_every_numeric_setting_has_a_range() -> None:
    import typing

    from pydantic import BaseModel

    def numeric(tp: typing.Any) -> bool:  # int, float, Optional or Annotated ones, tuples of them
        args = typing.get_args(tp)
        if typing.get_origin(tp) is typing.Annotated:
            return numeric(args[0])
        return tp in (int, float) or typing.get_origin(tp) is not list and any(map(numeric, args))

    keys = []
    for name, field in Config.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            sub = field.annotation.model_fields
            keys += [f"{name}.{k}" for k, f in sub.items() if numeric(f.annotation)]
        elif numeric(field.annotation):
            keys.append(name)
    assert sorted(keys) == sorted(config_mod.RANGES)


def test_cli_options_are_range_checked(teacher: Config, tmp_path: Path) -> None:
    run = teacher.run_dir()
    for beam in ("0", "-2"):
        result = _invoke("evaluate", run, "--beam", beam)
        assert result.exit_code == 2, result.output
        assert f"--beam {beam}: decode.beam: must be positive, got {beam}" in _text(result)
    assert not list((run / "eval").glob("*/*beam0*")) if (run / "eval").exists() else True
    for command in ("evaluate", "translate"):
        result = _invoke(command, run, "--checkpoint", "foo", stdin=b"x\n")
        assert result.exit_code == 2, result.output
        assert "--checkpoint foo: eval.checkpoint: 'foo' is not one of best, last, average" in (
            _text(result)
        )
    average = _invoke("evaluate", run, "--checkpoint", "average")
    assert average.exit_code == 1
    assert "train.average_last > 0); this run has: best, last" in _text(average)
    epochs = _invoke("train", run, "--set", "train.epochs=-1")
    assert epochs.exit_code == 2
    assert "--set train.epochs=-1: train.epochs: must be positive, got -1" in _text(epochs)


# --------------------------------------------------------------------------- case 8


def test_a_line_too_long_for_the_model_is_named_and_the_rest_translated(
    teacher: Config, tmp_path: Path
) -> None:
    long = " ".join(["Hund"] * 150)  # more than the teacher's 100 positions
    lines = f"ein Hund\n{long}\nzwei Katzen\n".encode()
    out = tmp_path / "out.en"
    result = _invoke("translate", teacher.run_dir(), "-o", out, stdin=lines)
    assert result.exit_code == 0, result.output
    hyps = out.read_text(encoding="utf-8").split("\n")
    assert len(hyps) == 4 and hyps[1] == "" and hyps[3] == ""
    assert "standard input: line 2: longer than model.max_positions (100 subword tokens)" in (
        _text(result)
    )
    strict = _invoke("translate", teacher.run_dir(), "--strict", stdin=lines)
    assert strict.exit_code == 1
    assert "standard input: line 2: " in _text(strict)
    assert "more than model.max_positions (100); nothing was translated" in _text(strict)


# --------------------------------------------------------------------------- case 9


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, cls: type, method: str, call: int) -> None:
    """Make ``cls.method`` raise KeyboardInterrupt (Ctrl-C) on its ``call``-th call."""
    real = getattr(cls, method)
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, interrupted)


def test_ctrl_c_in_train_says_what_was_kept_and_how_to_resume(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from attnless.train import Trainer

    cfg = tiny_config(tmp_path, data_dir, *QUICK, "train.max_steps=4")
    cfg.train.save_every = 2
    path = tmp_path / "tiny.yaml"
    path.write_text(config_mod.dump(cfg))
    _interrupt_at(monkeypatch, Trainer, "train_step", 4)
    result = _invoke("train", path, "--set", "train.max_steps=5", "-q")
    assert result.exit_code == 130, result.output
    text = _text(result)
    last = cfg.run_dir() / "checkpoints" / "last.pt"
    assert f"kept {last} (step 2, 0 of 2 epochs done)" in text
    assert f"resume with: attnless train {path} --set train.max_steps=5 --quiet" in text
    monkeypatch.undo()
    resumed = _invoke("train", path, "--set", "train.max_steps=5", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert not list(last.parent.glob(".*.tmp"))


def test_ctrl_c_in_distill_lists_the_students_kept(
    teacher: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from attnless.distill import Distiller

    run = tmp_path / "run"
    shutil.copytree(teacher.run_dir(), run)
    _interrupt_at(monkeypatch, Distiller, "train_step", 2)
    args = ("distill", run, "--set", "distill.epochs=2", "--set", "distill.batch_size=1000")
    result = _invoke(*args, "--replace", "encoder.self=alr:XS", "--layers", "0-1", "-q")
    assert result.exit_code == 130, result.output
    text = _text(result)
    assert f"kept 2 student checkpoints under {run / 'students'}" in text
    # students/<site>/<method>-<size>/<settings key>/layer<i>.pt
    assert re.search(
        r"encoder\.self/alr-XS/\w+/layer0\.pt, encoder\.self/alr-XS/\w+/layer1\.pt", text
    )
    assert "0 of them finished all 2 epochs" in text
    assert (
        f"resume with: attnless distill {run} --set distill.epochs=2 --set distill.batch_size=1000"
        " --replace encoder.self=alr:XS --layers 0-1 --quiet" in text
    )


def test_ctrl_c_in_sweep_counts_the_finished_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from attnless.sweep.runner import Sweep

    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\npreset: smoke\ngrid: {replace: [[encoder.self=alr]], size: [XS, S]}\n"
    )
    _interrupt_at(monkeypatch, Sweep, "_run", 1)
    out = tmp_path / "out"
    result = _invoke("sweep", spec, "--out", out, "--set", "train.epochs=1")
    assert result.exit_code == 130, result.output
    text = _text(result)
    assert f"0 of 2 cells are finished (their lines are in {out / 'results.jsonl'})" in text
    assert f"resume with: attnless sweep {spec} --set train.epochs=1 --out {out}" in text


# --------------------------------------------------------------------------- case 10


def test_resumed_run_logs_each_step_once(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after step 3 with its checkpoint at step 2, the run redoes step 3 on resuming."""
    from attnless.train import Trainer, train

    cfg = tiny_config(tmp_path, data_dir, *QUICK, "train.max_steps=5")
    cfg.train.save_every = 2
    _interrupt_at(monkeypatch, Trainer, "train_step", 4)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.undo()
    train(cfg, progress=False)
    records = read_jsonl(cfg.run_dir() / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5]


def test_metrics_reader_sees_each_step_once(tmp_path: Path) -> None:
    """A metrics file written by a killed and resumed run (before resumes truncated it)."""
    from attnless.runs import read_metrics

    steps = [1, 2, 3, 2, 3, 4]
    lines = [{"kind": "start", "step": 0}, {"kind": "start", "step": 1}]
    lines += [{"kind": "train", "step": s, "loss": 10 * i} for i, s in enumerate(steps)]
    lines += [
        {"kind": "distill", "student": k, "step": 1, "mse": m}
        for k, m in [("a", 1), ("b", 2), ("a", 3)]
    ]
    lines.append({"kind": "distill_done", "seconds": 1.0})
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    records = read_metrics(path)
    train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
    assert train == [(1, 0), (2, 30), (3, 40), (4, 50)]
    assert [(r["student"], r["mse"]) for r in records if r["kind"] == "distill"] == [
        ("b", 2),
        ("a", 3),
    ]
    assert sum(r["kind"] == "start" for r in records) == 2 and records[-1]["kind"] == "distill_done"
