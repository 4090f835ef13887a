"""Reading a sweep's ledger: typed rows from its lines, older lines, repeated lines, and a report
that reads them without the sweep package."""

from __future__ import annotations

import csv
import json
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
    from attnless.report import report

    committed = REPO / "results" / "tables" / "multi30k"
    sweep = tmp_path / "multi30k" / "encoder"
    sweep.mkdir(parents=True)
    lines = (committed / "encoder" / "results.jsonl").read_text().splitlines()
    records = [{**json.loads(line), "run_dir": str(tmp_path / "gone")} for line in lines]
    (sweep / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for teacher in (committed / "teachers").iterdir():  # every shipped direction
        shipped = tmp_path / "multi30k" / "teachers" / teacher.name
        shipped.mkdir(parents=True)
        (shipped / "data.json").write_text((teacher / "data.json").read_text())
    report(sweep)
    costs = (sweep / "report" / "inference_cost.csv").read_text().splitlines()[1:]
    assert costs and all(re.search(r",\d[\d.]* / (\d[\d.]*|-),", row) for row in costs), costs
    # each speed names its machine, the CPU without its instruction-set list
    machines = [row[-1] for row in csv.reader(costs)]
    assert all(m.endswith(" cores") or m.startswith("NVIDIA") for m in machines), machines


def test_speeds_name_the_machine_that_measured_them() -> None:
    from attnless.report import _machine_text

    cpu = "AMD EPYC (family 25 model 17), 2 cores (avx2, avx512f, avx512_bf16)"
    assert _machine_text(cpu) == "AMD EPYC (family 25 model 17), 2 cores"
    assert _machine_text("Intel Xeon, 2 cores (no AVX2)") == "Intel Xeon, 2 cores"
    assert _machine_text("NVIDIA H200") == "NVIDIA H200"
    assert _machine_text(None) == ""


# --------------------------------------------------------------------------- beyond the paper


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


PER_LAYER = {"alr": {"XS": 339_275, "M": 10_261_600}, "toeplitz": {"XS": 12_872, "M": 50_312}}


def _beyond_line(method: str, size: str, bleu: float, teacher: float, k: int = 1) -> dict:
    """A cell of the beyond sweep (all 6 encoder layers): its networks' parameters summed over
    the layers; on a grouped test set (``k`` > 1) with the teacher's BLEU on the same text and,
    for ALR (length-capped at n = 50), how many of its sentences the teacher translated."""
    fallback = {1: 0, 2: 200, 4: 240}[k] if method == "alr" else 0
    sentences = 1000 // k - fallback  # translated by the hybrid itself, as evaluate records
    score = {"split": "test", "test_set": "t" + (f".group{k}" if k > 1 else ""), "bleu": bleu}
    score |= {"teacher_bleu": teacher, "relative_bleu": 100 * bleu / teacher}
    score |= {"bleu_signature": "sig", "sentences": sentences, "teacher_fallback": fallback}
    line = {"kind": "cell", "cell_id": f"{method}-{size}-{k}", "corpus": "multi30k"}
    line |= {"direction": "de-en", "replace": [f"encoder.self={method}"], "size": size}
    line |= {"layers": "all", "n": 50, "config": {"model": {"encoder_layers": 6}}}
    line |= {"student_params": 6 * PER_LAYER.get(method, {}).get(size, 0)}
    line |= {"replaced_params": 6 * 49_536, "scores": {"test": score}, **score}
    return line | ({"test_group": k} if k > 1 else {})


def _beyond_report(tmp_path: Path, grouped: bool) -> Path:
    """The report of a beyond ledger (ALR, TOEPLITZ, MEANPOOL at XS and M); with ``grouped``,
    length cells at M for k = 2 and 4 too, written before the ordinary ones (a report that
    read them as ordinary results would show them in the size table)."""
    from attnless.report import report

    sweep = tmp_path / ("grouped" if grouped else "plain")
    sweep.mkdir()
    (sweep / "spec.yaml").write_text(
        "name: beyond\npreset: paper\ngrid:\n  direction: [de-en]\n  replace:\n"
        "    - [encoder.self=alr]\n    - [encoder.self=toeplitz]\n"
        "    - [encoder.self=meanpool]\n  size: [XS, M]\n  layers: [all]\n"
    )
    lines = []
    if grouped:
        lines += [_beyond_line("alr", "M", 30.0, 37.5, 2), _beyond_line("alr", "M", 28.0, 36.0, 4)]
        lines += [_beyond_line("toeplitz", "M", 33.0, 37.5, 2)]
        lines += [_beyond_line("toeplitz", "M", 30.0, 36.0, 4)]
        lines += [_beyond_line("meanpool", "M", 9.0, 36.0, 4)]
    lines += [_beyond_line("alr", "XS", 20.0, 38.0), _beyond_line("alr", "M", 37.0, 38.0)]
    lines += [_beyond_line("toeplitz", "XS", 30.0, 38.0)]
    lines += [_beyond_line("toeplitz", "M", 36.0, 38.0)]
    lines += [_beyond_line("meanpool", s, 15.0, 38.0) for s in ("XS", "M")]
    (sweep / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    report(sweep)
    return sweep / "report"


def test_grouped_test_sets_stay_out_of_the_ordinary_tables(tmp_path: Path) -> None:
    """Cells on grouped test sets (test_group k > 1) change no table, figure data or CSV of
    the ordinary test set; they only add the length table."""
    plain, grouped = _beyond_report(tmp_path, False), _beyond_report(tmp_path, True)
    for name in ("bleu_by_size.csv", "results.csv", "bleu_vs_params.csv", "inference_cost.csv"):
        assert (plain / name).read_text() == (grouped / name).read_text(), name
    assert "| ALR | 20.00 (52.6%) | 37.00 (97.4%) |" in (grouped / "report.md").read_text()
    assert not (plain / "length.csv").exists() and (grouped / "length.csv").exists()
    (row,) = ResultRow.from_record(_beyond_line("alr", "M", 28.0, 36.0, 4))
    assert (row.test_group, row.sentences, row.teacher_fallback) == (4, 10, 240)
    assert ResultRow.from_record(_beyond_line("alr", "M", 37.0, 38.0))[0].test_group == 1


def test_length_table(tmp_path: Path) -> None:
    """Rows the teacher and each method at its size, columns k (k = 1: the ordinary result);
    the length-capped ALR shows how many sentences the teacher translated."""
    out = _beyond_report(tmp_path, True)
    md = (out / "report.md").read_text()
    part = md[md.index("## Length generalisation") :]
    for line in [
        "| replaced \\ k | k = 1 | k = 2 | k = 4 |",
        "| teacher | 38.00 | 37.50 | 36.00 |",
        "| ALR M | 37.00 (97.4%); fallback: 0/1000 | 30.00 (80.0%); fallback: 200/500 "
        "| 28.00 (77.8%); fallback: 240/250 |",
        "| TOEPLITZ M | 36.00 (94.7%) | 33.00 (88.0%) | 30.00 (83.3%) |",
        "| MEANPOOL M | 15.00 (39.5%) | - | 9.00 (25.0%) |",
    ]:
        assert line in part, line
    assert "each k consecutive pairs of t joined into one" in part
    assert "Fixed-length networks (ALR; n = 50 subwords)" in part
    rows = _lines(out / "length.csv")
    assert rows[0] == (
        "corpus,direction,split,layers,variant,size,test_group,test_set,sentences,bleu,"
        "relative_bleu,teacher_bleu,teacher_fallback"
    )
    assert "multi30k,de-en,test,all,ALR,M,4,t.group4,10,28.0,77.77777777777777,36.0,240" in rows
    assert len(rows) == 1 + 3 + 3 + 2


def test_bleu_vs_params_figure(tmp_path: Path) -> None:
    """x: the networks' parameters summed over the replaced layers; a point per size of a
    network with parameters, a horizontal line for a parameter-free one (not on a log axis),
    the teacher's BLEU and the teacher parameters replaced for scale."""
    out = _beyond_report(tmp_path, False)
    assert (out / "bleu_vs_params.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![bleu_vs_params.png](bleu_vs_params.png)" in (out / "report.md").read_text()
    rows = _lines(out / "bleu_vs_params.csv")
    assert rows[0] == "corpus,direction,split,layers,series,size,params,bleu,relative_bleu,drawn"
    marks = [row[4:] for row in csv.reader(rows[1:])]
    assert [m[:3] + m[-1:] for m in marks if m[-1] == "point"] == [
        ["ALR", "XS", str(6 * 339_275), "point"],
        ["ALR", "M", str(6 * 10_261_600), "point"],
        ["TOEPLITZ", "XS", str(6 * 12_872), "point"],
        ["TOEPLITZ", "M", str(6 * 50_312), "point"],
    ]
    assert ["MEANPOOL", "XS/M", "0", "15.0"] in [m[:4] for m in marks if m[-1] == "hline"]
    assert ["teacher", "", "", "38.0"] in [m[:4] for m in marks if m[-1] == "teacher hline"]
    replaced = [m[:3] for m in marks if m[-1] == "teacher vline"]
    assert replaced == [["teacher params replaced (ALR, TOEPLITZ, MEANPOOL)", "", "297216"]]
