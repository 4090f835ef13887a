"""Reading a sweep's ledger: typed rows from its lines, older lines, repeated lines, and a report
that reads them without the sweep package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from attnless.results import ResultRow, result_rows
from tests.helpers import REPO


def test_an_older_line_reads_its_missing_fields_as_none() -> None:
    """A cell line without scores, config, times or variant: one row (its split), the variant
    from its sites, None for every field it lacks."""
    line = {"kind": "cell", "cell_id": "c", "replace": ["decoder.self=alr"], "size": "S"}
    line |= {"layers": "all", "bleu": 20.0, "test_set": "t"}
    (row,) = ResultRow.from_record(line)
    assert (row.kind, row.cell_id, row.split, row.variant) == ("cell", "c", "test", "ALR dec self")
    assert (row.replace, row.layers, row.bleu, row.test_set) == (
        "decoder.self=alr",
        "all",
        20.0,
        "t",
    )
    assert row.relative_bleu is row.encoder_layers is row.distill_seconds is row.config is None


def test_scores_per_split_and_the_main_ones_as_fallback() -> None:
    """A cell has a row per split; a score a split lacks falls back to the line's main one (a
    teacher's does not)."""
    scores = {"test": {"bleu": 30.0, "relative_bleu": 75.0}, "valid": {"bleu": 31.0}}
    cell = {"kind": "cell", "cell_id": "c", "relative_bleu": 75.0, "scores": scores}
    assert [(r.split, r.bleu, r.relative_bleu) for r in ResultRow.from_record(cell)] == [
        ("test", 30.0, 75.0),
        ("valid", 31.0, 75.0),
    ]
    teacher = {"kind": "teacher", "teacher_id": "t", "chrf": 60.0, "scores": scores}
    assert [r.chrf for r in ResultRow.from_record(teacher)] == [None, None]


def test_a_repeated_line_wins_in_the_place_of_the_first() -> None:
    lines = [
        {"kind": "teacher", "teacher_id": "t", "bleu": 40.0},
        {"kind": "cell", "cell_id": "a", "bleu": 1.0},
        {"kind": "cell", "cell_id": "b", "bleu": 2.0},
        {"kind": "note"},
        {"kind": "cell", "cell_id": "a", "bleu": 3.0},
    ]
    rows = result_rows(lines)
    assert [(r.kind, r.cell_id or r.teacher_id, r.bleu) for r in rows] == [
        ("teacher", "t", 40.0),
        ("cell", "a", 3.0),
        ("cell", "b", 2.0),
    ]


def test_the_report_does_not_import_the_sweep() -> None:
    code = "import sys, attnless.report; print(*sorted(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert not [m for m in done.stdout.split() if m.startswith("attnless.sweep")]


def test_committed_ledger_costs_come_from_the_shipped_teacher(tmp_path: Path) -> None:
    """A committed ledger's run folders are gone on another machine: the FLOPs per sentence of
    its inference-cost table come from the shipped teacher's data.json beside it."""
    import json

    from attnless.report import report

    committed = REPO / "results" / "tables" / "multi30k"
    sweep = tmp_path / "multi30k" / "encoder"
    sweep.mkdir(parents=True)
    lines = (committed / "encoder" / "results.jsonl").read_text().splitlines()
    records = [{**json.loads(line), "run_dir": str(tmp_path / "gone")} for line in lines]
    (sweep / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    shipped = tmp_path / "multi30k" / "teachers" / "de-en"
    shipped.mkdir(parents=True)
    (shipped / "data.json").write_text((committed / "teachers/de-en/data.json").read_text())
    report(sweep)
    costs = (sweep / "report" / "inference_cost.csv").read_text().splitlines()[1:]
    assert costs and all(re.search(r",\d[\d.]* / (\d[\d.]*|-),", row) for row in costs), costs
