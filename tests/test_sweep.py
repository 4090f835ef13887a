"""Sweeps and reports: spec validation, stable cell ids, sharding, dry runs, an end-to-end sweep
on a slice of Multi30k, a sweep killed mid-cell and resumed, locks, and reports that survive a
corrupt results line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from attnless.cli import app
from attnless.config import Config, ConfigError
from attnless.report import params_table, report
from attnless.results import result_rows
from attnless.sweep import (
    SpecError,
    Sweep,
    expand,
    load_spec,
    parse_shard,
    read_results,
    shard_cells,
    spec_from_dict,
)
from attnless.sweep.locks import Lock
from tests.helpers import REPO, data_root

SMOKE = REPO / "experiments" / "smoke.yaml"
# The smoke preset shrunk further: every cell takes well under a second.
TINY = [
    "data.train_subset=200",
    "data.eval_subset=16",
    "tokenizer.vocab_size=200",
    "model.d_model=16",
    "model.heads=2",
    "model.encoder_layers=2",
    "model.decoder_layers=2",
    "model.ffn_dim=32",
    "train.epochs=1",
    "train.max_tokens=400",
    "train.progress=false",
    "runtime.threads=1",
    "distill.epochs=1",
    "distill.batch_size=64",
    "distill.progress=false",
]


def _cli(*args: str, timeout: float = 170) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attnless", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _sets() -> list[str]:
    return [arg for item in TINY for arg in ("--set", item)]


def _demo_sweep(out: Path, *more: str) -> subprocess.CompletedProcess:
    """`attnless sweep experiments/demo.yaml` with the smoke preset and TINY, into ``out``."""
    return _cli(
        "sweep", "experiments/demo.yaml", "--preset", "smoke", *_sets(), "--out", str(out), *more
    )


def _assert_plans_no_teacher(out: Path) -> None:
    """The dry run into ``out`` plans no teacher training (the shipped one is installed)."""
    plan = _demo_sweep(out, "--dry-run")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "0 teacher(s) to train" in plan.stdout + plan.stderr


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _free(paths: list[Path]) -> bool:
    """Whether no process holds any of the locks ``paths`` (their files stay on disk)."""
    locks = [Lock(path, path.name) for path in paths]
    try:
        return all(lock.try_acquire() for lock in locks)
    finally:
        for lock in locks:
            lock.release()


def _hold(path: Path) -> subprocess.Popen:
    """Another process that holds the lock ``path`` until it is killed."""
    code = (
        "import time\nfrom attnless.sweep.locks import Lock\n"
        f"lock = Lock({str(path)!r}, 'x')\nassert lock.try_acquire()\nprint('held', flush=True)\n"
        "time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def demo_sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """experiments/demo.yaml with the smoke preset, shrunk: 1 teacher, 8 cells."""
    root = tmp_path_factory.mktemp("sweeps")
    out = root / "demo"
    done = _demo_sweep(out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_demo_spec_runs_end_to_end(demo_sweep: Path) -> None:
    records = read_results(demo_sweep / "results.jsonl")
    teachers = [r for r in records if r["kind"] == "teacher"]
    cells = [r for r in records if r["kind"] == "cell"]
    assert len(teachers) == 1 and len(cells) == 8
    assert {(tuple(c["replace"]), c["size"]) for c in cells} == {
        ((f"encoder.self={m}",), s) for m in ("alr", "alrr", "aslr", "elr") for s in ("XS", "S")
    }
    for cell in cells:
        for key in ("bleu", "chrf", "relative_bleu", "teacher_bleu", "student_params", "seed"):
            assert cell[key] is not None, key
        assert cell["bleu_signature"].startswith("nrefs:1")
        assert cell["test_set"] and cell["config"]["model"]["d_model"] == 16
        assert cell["versions"]["torch"]
        times = cell["times"]
        assert times["distill_seconds"] > 0 and times["eval_seconds"] > 0
        assert times["teacher_train_seconds"] > 0
        assert cell["precision"] in ("bf16", "fp32") and cell["machine"] and cell["commit"]
    # the report's rows (attnless.results) have every field the sweep is meant to record
    rows = result_rows(records)
    assert len(rows) == len(records)  # one evaluation split
    for row in rows:
        wanted = ["teacher_id", "corpus", "direction", "test_set", "bleu", "chrf", "run_dir"]
        wanted += ["bleu_signature"]
        if row.kind == "cell":
            wanted += ["cell_id", "variant", "replace", "size", "layers", "seed", "n"]
            wanted += ["teacher_bleu", "relative_bleu", "student_params", "replaced_params"]
            wanted += ["params_ratio", "sentences_per_s", "teacher_sentences_per_s"]
            wanted += ["teacher_train_seconds", "distill_seconds", "eval_seconds"]
            wanted += ["d_model", "heads", "encoder_layers", "decoder_layers", "config"]
        assert [k for k in wanted if getattr(row, k) is None] == [], row.kind
    run_dirs = {c["run_dir"] for c in cells}
    assert len(run_dirs) == 1  # one teacher, trained once, shared by every cell
    run_dir = Path(run_dirs.pop())
    assert run_dir.parent.parent == demo_sweep.parent / "runs"
    assert run_dir.name.startswith("smoke-")
    markers = list((run_dir / "students").glob("*/*/*/sweep.json"))
    assert len(markers) == 8
    calls = {json.loads(m.read_text())["call"] for m in markers}
    assert len(calls) == 8  # one call per cell, each cell scored as soon as it can be
    assert (demo_sweep / "spec.yaml").is_file()
    assert _free(list((demo_sweep / "locks").glob("*.lock")))


def test_rerun_skips_finished_cells(demo_sweep: Path) -> None:
    before = (demo_sweep / "results.jsonl").read_bytes()
    again = _demo_sweep(demo_sweep)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "8 finished (skipped), 0 to run" in again.stderr
    assert (demo_sweep / "results.jsonl").read_bytes() == before


def test_report_renders_tables_and_figure(demo_sweep: Path) -> None:
    done = _cli("report", str(demo_sweep), "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    out = demo_sweep / "report"
    md = (out / "report.md").read_text()
    for title in ("Table A", "Tables B/C", "Table D", "relative_bleu.png"):
        assert title in md
    test_set = read_results(demo_sweep / "results.jsonl")[0]["test_set"]
    assert "signature `nrefs:1" in md and f"Test set: {test_set} (split test)" in md
    for name in ("teacher_bleu.csv", "bleu_by_size.csv", "params.csv", "results.csv"):
        assert (out / name).stat().st_size > 0
    assert len(_lines(out / "results.csv")) == 1 + 8
    assert (out / "relative_bleu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corrupt_results_line_is_skipped_with_a_warning(demo_sweep: Path, tmp_path: Path) -> None:
    lines = _lines(demo_sweep / "results.jsonl")
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(demo_sweep / "spec.yaml", broken / "spec.yaml")
    text = "\n".join(lines[:2] + ['{"kind": "cell", "cell_id": "trunc'] + lines[2:])
    (broken / "results.jsonl").write_text(text + '\n{"kind": "cell", "bl')  # and a torn last line
    warnings: list[str] = []
    summary = report(broken, warn=warnings.append)
    assert summary["cells"] == 8
    assert len(warnings) == 2
    assert ":3: corrupt line" in warnings[0] and f":{len(lines) + 2}: corrupt line" in warnings[1]
    assert "corrupt line" in (broken / "report" / "report.md").read_text()
    cli = _cli("report", str(broken), "--quiet")
    assert cli.returncode == 0 and "corrupt line skipped" in cli.stderr


def _six_cells(tmp_path: Path, name: str) -> Path:
    """A spec with one teacher and six cells (3 methods x 2 sizes)."""
    spec = tmp_path / f"{name}.yaml"
    grid = {
        "replace": [["encoder.self=alr"], ["encoder.self=alrr"], ["encoder.self=elr"]],
        "size": ["XS", "S"],
    }
    sets = [*TINY, "runtime.sweep_poll_s=0.2"]  # look at work other shards hold often
    spec.write_text(json.dumps({"name": name, "preset": str(SMOKE), "grid": grid, "set": sets}))
    return spec


def _env() -> dict[str, str]:
    return {**os.environ, "ATTNLESS_DATA": str(data_root())}


def test_sweep_killed_mid_cell_resumes_without_recomputing(tmp_path: Path, data_dir: Path) -> None:
    spec = _six_cells(tmp_path, "killme")
    out = tmp_path / "sweeps" / "killme"
    results = out / "results.jsonl"
    command = [sys.executable, "-m", "attnless", "sweep", str(spec), "--out", str(out), "-q"]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(command, cwd=REPO, env=_env(), stderr=log, stdout=log)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and '"kind": "cell"' in results.read_text():
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        log.close()
    first = _lines(results)
    first_cells = [json.loads(line) for line in first if '"kind": "cell"' in line]
    assert 1 <= len(first_cells) < 6, "the sweep finished before it could be killed"
    again = _cli("sweep", str(spec), "--out", str(out), "-q")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(first_cells)} finished (skipped)" in again.stderr
    final = _lines(results)
    assert final[: len(first)] == first  # finished lines untouched
    records = [json.loads(line) for line in final]  # every line valid
    cells = [r for r in records if r["kind"] == "cell"]
    assert len(cells) == 6 and len({c["cell_id"] for c in cells}) == 6
    assert sum(r["kind"] == "teacher" for r in records) == 1
    assert {c["pid"] for c in cells[: len(first_cells)]} == {proc.pid}
    assert proc.pid not in {c["pid"] for c in cells[len(first_cells) :]}
    assert _free(list((out / "locks").glob("*.lock")))  # the killed holder's lock was freed


def test_a_killed_holders_lock_frees_itself_and_a_live_holders_cell_is_skipped(
    tmp_path: Path,
) -> None:
    """A sweep killed between appending a cell's line and releasing the cell's lock leaves the
    lock file behind, unlocked: it holds nobody up. A cell whose lock a live process holds is
    skipped, with a message naming the cell."""
    spec = load_spec(_six_cells(tmp_path, "locks"))
    out = tmp_path / "sweeps" / "locks"
    said: list[str] = []
    sweep = Sweep(spec, out, progress=False, say=said.append)
    lines = [{"kind": "cell", "cell_id": c.id} for c in sweep.cells]
    out.mkdir(parents=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    killed, live = (out / "locks" / f"{c.id}.lock" for c in sweep.cells[:2])
    _kill(_hold(killed))
    holder = _hold(live)
    try:
        assert sweep.run()["skipped"] == 6
        assert killed.exists() and _free([killed]) and not _free([live])
        sweep.counts["busy"] = 0
        sweep._evaluate(sweep.cells[1], {}, {})  # a cell the other process is running
        cell = sweep.cells[1]
        assert said[-1] == f"cell {cell.id} ({cell.title()}): being run by another process; skipped"
        assert sweep.counts["busy"] == 1
    finally:
        _kill(holder)
    assert _free([live])


def test_concurrent_shards_share_the_teacher_and_split_the_students(
    tmp_path: Path, data_dir: Path
) -> None:
    spec = _six_cells(tmp_path, "shared")
    out = tmp_path / "sweeps" / "shared"
    command = [sys.executable, "-m", "attnless", "sweep", str(spec), "--out", str(out), "-q"]
    logs = [(tmp_path / f"shard{i}.log").open("w") for i in range(2)]
    procs = [
        subprocess.Popen([*command, "--shard", f"{i}/2"], cwd=REPO, env=_env(), stderr=log)
        for i, log in enumerate(logs)
    ]
    for proc, log in zip(procs, logs):
        proc.wait(timeout=170)
        log.close()
    errors = [(tmp_path / f"shard{i}.log").read_text()[-2000:] for i in range(2)]
    assert [proc.returncode for proc in procs] == [0, 0], errors
    records = read_results(out / "results.jsonl")
    cells = [r for r in records if r["kind"] == "cell"]
    assert len(cells) == 6 and len({c["cell_id"] for c in cells}) == 6
    assert {c["shard"] for c in cells} == {"0/2", "1/2"}
    assert sum(r["kind"] == "teacher" for r in records) == 1  # trained and scored once
    (run_dir,) = {c["run_dir"] for c in cells}
    markers = [json.loads(m.read_text()) for m in Path(run_dir).glob("students/*/*/*/sweep.json")]
    assert len(markers) == 6
    # each family distilled once, by the shard that needed it (one call per cell)
    assert len({m["call"] for m in markers}) == 6
    assert _free(list(Path(run_dir).parent.glob("*.lock")))


def test_sweep_with_other_distill_settings_never_reuses_students(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-running a sweep with ``--set distill.cross_causal=false`` or another learning rate
    distils new students in their own folders: it neither resumes nor relabels the old ones."""
    monkeypatch.setenv("ATTNLESS_DATA", str(data_dir))
    spec = tmp_path / "cross.yaml"
    grid = {"replace": [["decoder.cross=alr"]], "size": ["XS"], "layers": ["1"]}
    spec.write_text(json.dumps({"name": "cross", "preset": str(SMOKE), "grid": grid, "set": TINY}))
    out = tmp_path / "sweeps" / "cross"
    threads = torch.get_num_threads()

    def run(*overrides: str) -> dict:
        """The sweep's new cell record and its students' folder."""
        before = {r.get("cell_id") for r in read_results(out / "results.jsonl")}
        Sweep(load_spec(spec, overrides=list(overrides)), out, progress=False).run()
        (cell,) = [
            r
            for r in read_results(out / "results.jsonl")
            if r["kind"] == "cell" and r["cell_id"] not in before
        ]
        return cell["times"]["distill_calls"]["decoder.cross/alr/XS"]

    try:
        first = run()
        before = (Path(first["folder"]) / "layer1.pt").read_bytes()
        folders = {first["folder"]}
        for override, key, value in [
            ("distill.cross_causal=false", "cross_causal", False),
            ("distill.lr=3e-3", "lr", 0.003),
        ]:
            students = run(override)
            assert students["folder"] not in folders and students["call"] != first["call"]
            folders.add(students["folder"])
            folder = Path(students["folder"])
            assert json.loads((folder / "settings.json").read_text())["settings"][key] == value
            assert (folder / "layer1.pt").is_file()
    finally:
        torch.set_num_threads(threads)
    assert (Path(first["folder"]) / "layer1.pt").read_bytes() == before
    root = Path(first["folder"]).parent
    assert sorted(str(p.parent) for p in root.glob("*/layer1.pt")) == sorted(folders)


def test_together_shares_the_teacher_passes_and_distils_the_same_students(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--together``: one distill call for the students of all of a teacher's cells (one
    teacher pass per batch instead of one per family), bit-identical students and the same
    lines; cells with their own grid ``set`` get calls (and students) of their own."""
    from attnless.distill import Distiller

    monkeypatch.setenv("ATTNLESS_DATA", str(data_dir))
    passes: list[int] = []
    teacher_pass = Distiller._teacher_pass

    def counted(self: Distiller, batch: object) -> dict:
        passes.append(1)
        return teacher_pass(self, batch)

    monkeypatch.setattr(Distiller, "_teacher_pass", counted)
    cross = {"replace": [["decoder.cross=alr"]], "size": ["XS"], "layers": ["1"]}
    grids = [
        {**cross, "replace": [["decoder.self=alr"], ["decoder.cross=alr"]]},
        {**cross, "set": ["distill.cross_causal=false"]},
    ]
    spec = tmp_path / "dec.yaml"
    spec.write_text(json.dumps({"name": "dec", "preset": str(SMOKE), "grid": grids, "set": TINY}))
    threads = torch.get_num_threads()
    runs = {}
    try:
        separate = tmp_path / "separate"
        Sweep(load_spec(spec), separate / "dec", separate / "runs", progress=False).run()
        runs["separate"] = passes.copy()
        together = tmp_path / "together"
        shutil.copytree(separate / "teachers", together / "teachers")  # the same teacher
        passes.clear()
        out, runs_dir = together / "dec", together / "runs"
        Sweep(load_spec(spec), out, runs_dir, progress=False, together=True).run()
        runs["together"] = passes.copy()
    finally:
        torch.set_num_threads(threads)
    lines = {}
    for name in ("separate", "together"):
        records = read_results(tmp_path / name / "dec" / "results.jsonl")
        lines[name] = {r["cell_id"]: r for r in records if r["kind"] == "cell"}
    assert set(lines["separate"]) == set(lines["together"]) and len(lines["together"]) == 3
    calls = {}
    for name, cells_of in lines.items():
        calls[name] = {
            cell_id: next(iter(r["times"]["distill_calls"].values()))["call"]
            for cell_id, r in cells_of.items()
        }
    assert len(set(calls["separate"].values())) == 3  # a call (and teacher passes) per family
    assert len(set(calls["together"].values())) == 2  # one per grid set: causal / paper mode
    assert len(runs["together"]) * 3 == len(runs["separate"]) * 2
    for cell_id, line in lines["together"].items():
        alone = lines["separate"][cell_id]
        assert line["bleu"] == alone["bleu"] and line["variant"] == alone["variant"]
        mine = next(iter(line["times"]["distill_calls"].values()))["folder"]
        theirs = next(iter(alone["times"]["distill_calls"].values()))["folder"]
        assert Path(mine).name == Path(theirs).name  # the same settings, the same folder name
        weights = [torch.load(Path(f) / "layer1.pt", weights_only=False) for f in (mine, theirs)]
        assert set(weights[0]["student"]) == set(weights[1]["student"])
        for key, value in weights[0]["student"].items():
            assert torch.equal(value, weights[1]["student"][key]), key


# --------------------------------------------------------------------------- dry run, shards


def test_dry_run_lists_cells_and_estimates(tmp_path: Path) -> None:
    out = tmp_path / "encoder"
    result = CliRunner().invoke(
        app, ["sweep", "experiments/encoder.yaml", "--dry-run", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = result.output
    assert "sweep encoder: 64 cells, preset paper" in text
    assert text.count(" pending ") == 64
    assert "4 teacher(s) to train, 64 student families (384 students)" in text
    assert "estimate:" in text and "not a measurement" in text
    by_direction = next(line for line in text.splitlines() if line.startswith("by direction: "))
    parts = by_direction.removeprefix("by direction: ").split("; ")
    assert [p.split(" (")[0] for p in parts] == [
        f"multi30k {d} 0/16" for d in ("de-en", "en-de", "fr-en", "en-fr")
    ]
    assert all(p.endswith(" left)") for p in parts)
    assert not out.exists()  # a dry run writes nothing
    shard = CliRunner().invoke(
        app, ["sweep", "experiments/encoder.yaml", "--dry-run", "--shard", "1/3", "--out", str(out)]
    )
    assert shard.exit_code == 0 and "shard 1/3: 21 cells" in shard.output
    assert shard.output.count(" pending ") == 21
    only = ["--only", "direction=de-en", "--only", "replace=encoder.self=alr,encoder.self=elr"]
    some = CliRunner().invoke(
        app, ["sweep", "experiments/encoder.yaml", "--dry-run", "--out", str(out), *only]
    )
    assert some.exit_code == 0, some.output
    assert some.output.count(" pending ") == 8 and " en-de " not in some.output
    ids = {line.split()[1] for line in text.splitlines() if " de-en " in line and "alr " in line}
    assert ids and ids <= set(some.output.split())  # the same cell ids as the whole sweep
    bad = CliRunner().invoke(
        app, ["sweep", "experiments/encoder.yaml", "--dry-run", "--only", "direction=xx-yy"]
    )
    assert bad.exit_code == 2 and "direction=xx-yy: no cell has it" in bad.output


def test_shards_cover_every_cell_exactly_once() -> None:
    cells = expand(load_spec(REPO / "experiments" / "encoder.yaml"))
    assert len(cells) == 64
    for n in (1, 2, 3, 4, 5, 64, 70):
        seen = []
        for i in range(n):
            mine = shard_cells(cells, (i, n))
            assert all(c.index % n == i for c in mine)
            seen += [c.id for c in mine]
        assert sorted(seen) == sorted(c.id for c in cells)
    # four shards of four directions: each shard trains exactly one teacher
    for i in range(4):
        assert len({c.direction for c in shard_cells(cells, (i, 4))}) == 1
    assert parse_shard("2/8") == (2, 8)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(SpecError, match="--shard"):
            parse_shard(bad)


def test_cell_ids_are_stable_and_follow_the_settings() -> None:
    path = REPO / "experiments" / "encoder.yaml"
    ids = [c.id for c in expand(load_spec(path))]
    assert ids == [c.id for c in expand(load_spec(path), runs="elsewhere")]
    assert len(set(ids)) == 64
    operational = [c.id for c in expand(load_spec(path, overrides=["train.progress=false"]))]
    assert operational == ids
    changed = [c.id for c in expand(load_spec(path, overrides=["distill.epochs=5"]))]
    assert not set(changed) & set(ids)
    cells = expand(load_spec(path))
    assert len({c.teacher_dir for c in cells}) == 4
    assert len({c.teacher_dir for c in expand(load_spec(path, preset="quick"))}) == 4
    assert {c.teacher for c in cells}.isdisjoint(
        {c.teacher for c in expand(load_spec(path, preset="quick"))}
    )


# Before the test_group axis and lists of grids (main at 6f43ee7): a hash of the cell ids of
# each committed spec, in order (beyond: its first grid), and their teacher ids.
COMMITTED_IDS = {
    "beyond": ("fa4d5d678765d537", {"815c29b1"}),
    "decoder": ("094c0ceb74e89e0e", {"515c91a8", "815c29b1", "99b1f555", "a26e48c2"}),
    "demo": ("1a5868bcce605743", {"955e827d"}),
    "encoder": ("0d7b17f697e403e3", {"515c91a8", "815c29b1", "99b1f555", "a26e48c2"}),
    "layers": ("e25dbf1f9e72afb1", {"515c91a8", "815c29b1", "99b1f555", "a26e48c2"}),
}


def test_committed_specs_keep_their_cell_and_teacher_ids() -> None:
    """Ledgers are keyed by cell ids: a new grid key or a list of grids must not move them."""
    import hashlib

    assert {p.stem for p in (REPO / "experiments").glob("*.yaml")} >= set(COMMITTED_IDS)
    for name, (digest, teachers) in COMMITTED_IDS.items():
        cells = expand(load_spec(REPO / "experiments" / f"{name}.yaml"))
        if name == "beyond":
            cells = cells[:15]  # grid 1, as the spec was; grid 2 adds test_group cells
        if name == "decoder":
            cells = cells[:64]  # grid 1, as the spec was; grid 2 adds cross in paper mode
        ids = " ".join(c.id for c in cells)
        assert hashlib.sha1(ids.encode()).hexdigest()[:16] == digest, name
        assert {c.teacher for c in cells} == teachers, name
    # the committed ledgers' cells are the specs' cells
    for name in ("encoder", "layers"):
        ledger = REPO / "results" / "tables" / "multi30k" / name / "results.jsonl"
        recorded = {r["cell_id"] for r in read_results(ledger) if r["kind"] == "cell"}
        assert recorded and recorded <= {
            c.id for c in expand(load_spec(ledger.parent / "spec.yaml"))
        }


def test_test_group_axis_shares_the_teacher_and_keeps_the_ids_of_k1() -> None:
    from attnless.evaluate import output_tag
    from attnless.replacement import Family
    from attnless.sweep.cells import filter_cells, teacher_id
    from attnless.sweep.runner import _ungrouped
    from attnless.sweep.students import family_folder

    plain = _spec(grid_size=["XS", "M"])
    grouped = _spec(grid_size=["XS", "M"], grid_test_group=[1, 2, 4])
    before = expand(spec_from_dict(plain, "s.yaml", REPO / "experiments"))
    spec = spec_from_dict(grouped, "s.yaml", REPO / "experiments")
    cells = expand(spec)
    assert [(c.size, c.test_group) for c in cells] == [
        (size, k) for size in ("XS", "M") for k in (1, 2, 4)
    ]
    ones = [c for c in cells if c.test_group == 1]
    assert [c.id for c in ones] == [c.id for c in before]  # k = 1: the ids without the key
    assert len({c.id for c in cells}) == 6
    assert [c.config.data.test_group for c in cells] == [1, 2, 4, 1, 2, 4]
    assert "test_group" not in ones[0].grid_values() and cells[2].grid_values()["test_group"] == 4
    assert "groups of" not in ones[0].title() and "groups of 4" in cells[2].title()
    # evaluation only: one teacher (id and run folder) and the same students for every k
    assert {c.teacher for c in cells} == {before[0].teacher}
    assert len({c.teacher_dir for c in cells}) == 1
    family = Family("encoder.self", "alr", "M")
    folders = {family_folder(c.config, family, "sha").path for c in cells}
    assert len(folders) == 1
    assert teacher_id(cells[2].config) == teacher_id(cells[0].config)
    for free in ("data.eval_subset=7", "data.test_set=test_2017_mscoco", "data.test_group=3"):
        other = spec_from_dict(plain, "s.yaml", REPO / "experiments", overrides=[free])
        assert expand(other)[0].teacher == before[0].teacher, free
    # the teacher's scores on each grouping are cached apart; the teacher row is of k = 1
    assert output_tag(cells[0].config, "test") == "test.greedy"
    assert output_tag(cells[2].config, "test") == "test.group4.greedy"
    first = _ungrouped(cells[2])
    assert first.config.data.test_group == 1 and cells[2].config.data.test_group == 4
    assert first.teacher_dir == cells[2].teacher_dir and first.test_group == 1
    # --only, and spec.yaml round trips to the same cells
    assert [c.id for c in filter_cells(cells, ["test_group=2,4"])] == [
        c.id for c in cells if c.test_group != 1
    ]
    with pytest.raises(
        SpecError, match="--only test_group=3: no cell has it; the sweep has 1, 2, 4"
    ):
        filter_cells(cells, ["test_group=3"])
    again = spec_from_dict(spec.to_dict(), "spec.yaml", REPO / "experiments")
    assert [c.id for c in expand(again)] == [c.id for c in cells]


def test_a_list_of_grids_is_the_union_of_their_cells(tmp_path: Path) -> None:
    grids = [
        {"replace": [["encoder.self=alr"]], "size": ["XS", "S"]},
        {"replace": [["encoder.self=alr"], ["encoder.self=elr"]], "size": ["S", "M"]},
        {"replace": [["encoder.self=alr"]], "size": ["M"], "test_group": [1, 3]},
    ]
    spec = spec_from_dict(
        {"name": "u", "preset": "paper", "grid": grids}, "u.yaml", REPO / "experiments"
    )
    cells = expand(spec)
    assert [(c.label, c.size, c.test_group) for c in cells] == [
        ("ALR", "XS", 1),
        ("ALR", "S", 1),
        ("ALR", "M", 1),  # ALR S of grid 2 is grid 1's: kept once
        ("ELR", "S", 1),
        ("ELR", "M", 1),
        ("ALR", "M", 3),  # ALR M at k = 1 again: kept once
    ]
    assert [c.index for c in cells] == list(range(6))
    # each cell has the id it has in a single grid
    for grid in grids:
        single = expand(
            spec_from_dict(
                {"name": "u", "preset": "paper", "grid": grid}, "u.yaml", REPO / "experiments"
            )
        )
        assert {c.id for c in single} <= {c.id for c in cells}
    written = spec.to_dict()
    assert isinstance(written["grid"], list) and len(written["grid"]) == 3
    assert written["grid"][2]["test_group"] == [1, 3]
    again = spec_from_dict(
        yaml.safe_load(yaml.safe_dump(written)), "spec.yaml", REPO / "experiments"
    )
    assert [c.id for c in expand(again)] == [c.id for c in cells]
    one = spec_from_dict(_spec(), "s.yaml", REPO / "experiments")
    assert isinstance(one.to_dict()["grid"], dict)  # a single grid stays a mapping
    # the report orders by the grids' values together
    from attnless.report import _spec as report_spec

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(written))
    merged = report_spec(tmp_path)["grid"]
    assert merged["size"] == ["XS", "S", "M"] and merged["test_group"] == [1, 3]
    assert merged["replace"] == [["encoder.self=alr"], ["encoder.self=elr"]]


def test_a_grid_set_applies_to_its_own_cells_only(tmp_path: Path) -> None:
    """Table C's cross-attention in the paper's mode: a grid of its own whose ``set`` reaches
    only its cells, which get their own ids, label, students and plan entries."""
    from attnless.sweep.cells import filter_cells
    from attnless.sweep.costs import CostModel, family_key, make_plan
    from attnless.sweep.students import family_folder

    cross = {"replace": [["decoder.cross=alr"]], "size": ["M"]}
    grids = [cross, {**cross, "set": ["distill.cross_causal=false"]}]
    spec = spec_from_dict(
        {"name": "c", "preset": "paper", "grid": grids}, "c.yaml", REPO / "experiments"
    )
    causal, paper = expand(spec)
    single = expand(spec_from_dict({**_spec(), "grid": cross}, "c.yaml", REPO / "experiments"))
    assert causal.id == single[0].id and paper.id != causal.id
    assert causal.config.distill.cross_causal and not paper.config.distill.cross_causal
    assert (causal.label, paper.label) == ("ALR cross", "ALR cross (paper mode)")
    assert paper.described == "decoder.cross=alr [distill.cross_causal=false]"
    assert paper.title().endswith(", distill.cross_causal=false") and causal.overrides == ()
    assert spec.overrides == []  # the spec-wide overrides stay as they were
    (family,) = paper.families()
    assert family_key(paper.config, family) != family_key(causal.config, family)
    folders = {family_folder(c.config, family, "sha").path for c in (causal, paper)}
    assert len(folders) == 2
    plan = make_plan([causal, paper], set(), {}, CostModel.for_machine("cpu", 2))
    assert len(plan.families) == 2 and set(plan.cell_seconds) == {causal.id, paper.id}
    again = spec_from_dict(
        yaml.safe_load(yaml.safe_dump(spec.to_dict())), "spec.yaml", REPO / "experiments"
    )
    assert [c.id for c in expand(again)] == [causal.id, paper.id]
    from attnless.report import _spec as report_spec

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    assert report_spec(tmp_path)["variants"] == ["ALR cross", "ALR cross (paper mode)"]
    assert filter_cells([causal, paper], [f"cell={paper.id}"]) == [paper]  # one of the two
    with pytest.raises(SpecError, match="--only cell=0123: no cell has it"):
        filter_cells([causal, paper], ["cell=0123"])
    # the committed Table C: its 64 cells as before, then cross-attention in paper mode
    table = expand(load_spec(REPO / "experiments" / "decoder.yaml"))
    assert len(table) == 68 and {c.label for c in table[64:]} == {"ALR cross (paper mode)"}
    # teacher passes: one set per family's distill call, or one shared call with --together
    xs = [c for c in table if c.direction == "de-en" and c.size == "XS"]
    model = CostModel.for_machine("cpu", 2)
    alone, together = (make_plan(xs, set(), {}, model, shared) for shared in (False, True))
    assert len(alone.passes) == 3 and len(together.passes) == 1  # enc self, dec self, cross
    assert sum(together.passes.values()) < sum(alone.passes.values())
    assert sum(together.cell_seconds.values()) == pytest.approx(together.total())
    assert sum(alone.cell_seconds.values()) == pytest.approx(alone.total())
    # a line without its label gets it from its recorded config
    from attnless.results import ResultRow

    line = {"kind": "cell", "replace": ["decoder.cross=alr"], "size": "M", "bleu": 1.0}
    (row,) = ResultRow.from_record({**line, "config": paper.config.to_dict()})
    assert row.variant == "ALR cross (paper mode)"
    (row,) = ResultRow.from_record({**line, "config": causal.config.to_dict()})
    assert row.variant == "ALR cross"


def _fake_work(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Teachers, students and evaluations that only record which cells asked for them."""
    import attnless.evaluate
    from attnless.sweep import runner

    calls: dict[str, list[str]] = {"teacher": [], "students": [], "evaluate": []}

    def teacher(self, cell):
        calls["teacher"].append(cell.id)
        return {"kind": "teacher", "train_seconds": 1.0}

    def students(self, group, teacher):
        calls["students"] += [c.id for c in group]
        return {}

    def evaluate(cfg, progress=False, replacements=(), layers=None):
        calls["evaluate"].append(f"{replacements[0]}/{layers}/{cfg.data.test_group}")
        return [{"split": "test", "test_set": "t", "bleu": 20.0, "chrf": 40.0}]

    monkeypatch.setattr(runner.Sweep, "_ensure_teacher", teacher)
    monkeypatch.setattr(runner.Sweep, "_ensure_students", students)
    monkeypatch.setattr(attnless.evaluate, "evaluate", evaluate)
    return calls


def test_cells_in_a_sibling_ledger_are_copied_not_computed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_work(monkeypatch)
    spec = load_spec(_six_cells(tmp_path, "mine"))
    tables = tmp_path / "tables"
    out = tables / "mine"
    said: list[str] = []
    sweep = Sweep(spec, out, progress=False, say=said.append)
    cells = sweep.cells
    # a sibling ledger (another table of the corpus) with cell 1 finished, cell 3 copied there
    # from elsewhere, a teacher line and a torn line; a ledger two levels down is no sibling
    sibling = tables / "other" / "results.jsonl"
    sibling.parent.mkdir(parents=True)
    found = {"kind": "cell", "cell_id": cells[1].id, "sweep": "other", "index": 7, "bleu": 31.5}
    copy = {"kind": "cell", "cell_id": cells[3].id, "sweep": "other", "copied_from": "x", "bleu": 1}
    lines = [{"kind": "teacher", "teacher_id": cells[0].teacher}, found, copy]
    sibling.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"kind": "cell", "ce')
    deeper = tables / "a" / "b" / "results.jsonl"
    deeper.parent.mkdir(parents=True)
    deeper.write_text(json.dumps({"kind": "cell", "cell_id": cells[2].id, "bleu": 2}) + "\n")

    dry = sweep.dry_run()
    rows = {
        line.split()[1]: line.split()[2] for line in dry.splitlines() if line[:4].strip().isdigit()
    }
    assert rows == {c.id: "copied" if c.index in (1, 3) else "pending" for c in cells}
    assert (
        "done 0/6, 2 to copy from sibling ledgers; to do:" in dry and "4 cells to evaluate" in dry
    )
    assert all(line.split()[-1] == "-" for line in dry.splitlines() if " copied " in line)
    assert not out.exists()  # a dry run writes nothing

    counts = sweep.run()
    assert counts == {"cells": 6, "skipped": 0, "evaluated": 4, "copied": 2, "busy": 0}
    assert "0 finished (skipped), 2 to copy from sibling ledgers, 4 to run;" in said[0]
    computed = [c.id for c in cells if c.index not in (1, 3)]
    assert calls["students"] == computed and len(calls["evaluate"]) == 4
    records = read_results(out / "results.jsonl")
    by_id = {r["cell_id"]: r for r in records if r["kind"] == "cell"}
    assert sorted(by_id) == sorted(c.id for c in cells) and len(records) == 6
    assert by_id[cells[1].id] == {**found, "sweep": "mine", "index": 1, "copied_from": str(sibling)}
    assert by_id[cells[3].id]["copied_from"] == str(sibling) and by_id[cells[3].id]["bleu"] == 1
    assert all(
        "copied_from" not in by_id[cid] and by_id[cid]["test_group"] == 1 for cid in computed
    )
    assert f"cell {cells[1].id} ({cells[1].title()}): copied from {sibling}" in said

    # run again: everything is in this ledger now; nothing copied twice, nothing computed
    again = Sweep(spec, out, progress=False, say=said.append).run()
    assert again["skipped"] == 6 and again["copied"] == 0 and len(calls["evaluate"]) == 4

    # a sweep whose every cell a sibling holds needs no teacher: nothing is trained
    calls["teacher"].clear()
    copier = Sweep(spec, tables / "copier", progress=False, say=said.append)
    assert "done 0/6, 6 to copy" in copier.dry_run() and "0 cells to evaluate" in copier.dry_run()
    assert "by direction" not in copier.dry_run()  # one direction: the totals say it all
    assert copier.run()["copied"] == 6 and calls["teacher"] == [] and len(calls["evaluate"]) == 4
    copied = read_results(tables / "copier" / "results.jsonl")
    assert [r["kind"] for r in copied] == ["cell"] * 6
    # from the first ledger (mine < other) that computed them; a copy only if none did
    sources = {r["cell_id"]: r["copied_from"] for r in copied}
    assert sources[cells[0].id] == str(out / "results.jsonl")
    assert sources[cells[1].id] == str(sibling)  # mine only holds a copy
    assert sources[cells[3].id] == str(out / "results.jsonl")  # both hold copies


def test_grouped_cells_share_teacher_and_students_and_are_evaluated_grouped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_work(monkeypatch)
    path = tmp_path / "g.yaml"
    grid = {"replace": [["encoder.self=alr"]], "size": ["XS"], "test_group": [1, 4]}
    path.write_text(json.dumps({"name": "g", "preset": str(SMOKE), "grid": grid, "set": TINY}))
    sweep = Sweep(load_spec(path), tmp_path / "t" / "g", progress=False, say=lambda text: None)
    dry = sweep.dry_run()
    header = next(line for line in dry.splitlines() if line.strip().startswith("#"))
    assert header.split()[-2:] == ["group", "est."] and dry.count(" pending ") == 2
    assert sweep.run()["evaluated"] == 2
    assert calls["evaluate"] == ["encoder.self=alr:XS/all/1", "encoder.self=alr:XS/all/4"]
    assert len(calls["teacher"]) == 1  # one teacher folder for both
    records = read_results(tmp_path / "t" / "g" / "results.jsonl")
    assert [r["test_group"] for r in records] == [1, 4]
    filtered = Sweep(load_spec(path), tmp_path / "t" / "h", only=["test_group=4"])
    assert [c.test_group for c in filtered.mine] == [4]


# --------------------------------------------------------------------------- bad input


def _grids(second: dict) -> dict:
    """A spec with two grids, the second changed by ``second`` (None: key removed)."""
    grids = [{"replace": [["encoder.self=alr"]], "size": ["M"]} for _ in range(2)]
    grids[1].update(second)
    grids[1] = {k: v for k, v in grids[1].items() if v is not None}
    return {"name": "t", "preset": "paper", "grid": grids}


def _spec(**changes) -> dict:
    spec = {
        "name": "t",
        "preset": "paper",
        "grid": {"replace": [["encoder.self=alr"]], "size": ["M"]},
    }
    for key, value in changes.items():
        if key.startswith("grid_"):
            spec["grid"][key[5:]] = value
        else:
            spec[key] = value
    return spec


@pytest.mark.parametrize(
    ("spec", "overrides", "message"),
    [
        (_spec(grids={}), [], "unknown key 'grids'; expected one of name, description"),
        (_spec(grid_sizes=["M"]), [], "grid.sizes: unknown key; expected one of corpus"),
        (_spec(grid_size=[]), [], "grid.size: empty"),
        (_spec(grid_size=["XXL"]), [], "unknown size 'XXL'; expected one of"),
        (_spec(grid_size="M"), [], "grid.size: expected a list"),
        (_spec(grid_replace=[["encoder.self=foo"]]), [], "unknown replacement 'encoder.self=foo'"),
        (_spec(grid_replace=[["decoder.self=aslr"]]), [], "expected one of encoder.self=alr"),
        (_spec(grid_replace=[["encoder.self=alr:M"]]), [], "sizes go in grid.size"),
        (_spec(grid_replace=[]), [], "grid.replace: empty"),
        (_spec(grid_direction=["deen"]), [], "'deen' is not a direction"),
        (_spec(grid_corpus=["wmt"]), [], "unknown corpus 'wmt'"),
        (_spec(grid_layers=["0..5"]), [], "'0..5': expected all"),
        (_spec(grid_direction=["de-en"]), ["data.src=fr"], "data.src cannot be overridden"),
        (_spec(), ["distill.replace=[x]"], "the sweep sets it"),
        (_spec(), ["model.d_modell=3"], "unknown key model.d_modell"),
        (_spec(preset="nope"), [], "preset 'nope': no such preset"),
        (_spec(name="a b"), [], "must be a folder name"),
        (_spec(grid_test_group=[0]), [], "grid.test_group: 0 is not a positive whole number"),
        (_spec(grid_test_group=["2"]), [], "grid.test_group: '2' is not a positive"),
        (_spec(grid_test_group=[True]), [], "grid.test_group: True is not a positive"),
        (_spec(grid_test_group=2), [], r"grid.test_group: expected a list, e.g. \[1, 2, 3, 4\]"),
        (_spec(grid_test_group=[2, 2]), [], "grid.test_group: 2 is listed twice"),
        (_spec(grid_test_group=[2]), ["data.test_group=3"], "grid.test_group sets it"),
        (_spec(grid=[]), [], "grid: expected a mapping .* or a non-empty list"),
        (_spec(grid=[{"replace": ["encoder.self=alr"], "size": ["M"]}, 3]), [], r"grid\[1\]: "),
        (_grids({"size": ["XXL"]}), [], r"grid\[1\].size: unknown size 'XXL'"),
        (_grids({"sizes": ["M"]}), [], r"grid\[1\].sizes: unknown key; expected one of"),
        (_grids({"size": None}), [], r"grid\[1\].size: required"),
        (_grids({"layers": ["0..5"]}), [], r"grid\[1\].layers '0..5': expected all"),
        (_grids({"layers": ["0-1", "0,1"]}), [], r"grid\[1\].layers: two entries"),
        (_grids({"direction": ["de-en"]}), ["data.src=fr"], "data.src cannot be overridden"),
        (_grids({"set": "distill.lr=1"}), [], r"grid\[1\].set: expected a list"),
        (_grids({"set": [3]}), [], r"grid\[1\].set\[0\]: expected a string, got 3"),
        (_grids({"set": ["distill.replace=[x]"]}), [], r"grid\[1\].set: .*the sweep sets it"),
        (_grids({"set": ["distill.cross_causal=maybe"]}), [], r"grid\[1\].set: .*cross_causal"),
        (_grids({"set": ["distill.lrr=1"]}), [], r"grid\[1\].set: .*unknown key distill.lrr"),
        (_spec(grid_set=["data.test_group=2"], grid_test_group=[1]), [], "grid.test_group sets"),
    ],
)
def test_bad_specs_name_the_key_and_the_expected_values(spec, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        spec_from_dict(spec, "spec.yaml", REPO / "experiments", overrides=overrides)


def test_missing_preset_and_out_of_range_layers() -> None:
    with pytest.raises(SpecError, match="preset: missing"):
        spec_from_dict({"name": "x", "grid": {"replace": ["encoder.self=alr"], "size": ["M"]}})
    spec = spec_from_dict(_spec(grid_layers=["0-9"]), "s.yaml", REPO / "experiments")
    with pytest.raises(SpecError, match="grid.layers: '0-9'.*out of range"):
        expand(spec)


def test_cli_reports_spec_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\npreset: paper\ngrid: {replace: [[encoder.self=alr]], size: []}\n")
    result = CliRunner().invoke(app, ["sweep", str(bad), "--dry-run"])
    assert result.exit_code == 2
    assert "grid.size: empty" in " ".join(result.output.split())


# --------------------------------------------------------------------------- locks, reports


def test_locks_refuse_live_holders_and_free_themselves_when_the_holder_dies(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sub" / "x.lock"
    holder = Lock(path, "x")
    assert holder.try_acquire()
    other = Lock(path, "x")
    assert not other.try_acquire()  # held by a live holder (in this process)
    holder.release()
    holder.release()  # safe twice
    assert other.try_acquire()
    other.release()
    # a holder in another process: refused while it lives, free the moment it is killed
    proc = _hold(path)
    try:
        assert not other.try_acquire()
    finally:
        _kill(proc)
    assert other.try_acquire()
    other.release()


def test_distill_calls_fit_the_memory_budget_of_the_config() -> None:
    from attnless import config as config_mod
    from attnless.sweep.students import distill_calls, memory_budget

    assert memory_budget("cpu", 1.5) == 3 * 2**29
    from attnless.replacement import Family

    families = {
        Family("encoder.self", "alr", "XS"): [0, 1],
        Family("encoder.self", "alr", "S"): [0, 1],
    }
    said: list[str] = []
    roomy = config_mod.load(SMOKE, ["runtime.distill_memory_gb=8"])
    assert distill_calls(roomy, families, said.append) == [([0, 1], sorted(families))]
    tight = config_mod.load(SMOKE, ["runtime.distill_memory_gb=0.0001"])
    assert len(distill_calls(tight, families, said.append)) == 2
    assert said and "more than the budget of 0.0 GiB: 2 distillation calls" in said[-1]


def test_parameter_table_matches_the_paper() -> None:
    _, csv_text = params_table(Config())
    rows = {(r.split(",")[0], r.split(",")[1]): r.split(",") for r in csv_text.splitlines()[1:]}
    assert [int(rows[("encoder.self=alr", s)][2]) for s in ("XS", "S", "M", "L")] == [
        339_275,
        659_350,
        10_261_600,
        40_988_800,
    ]
    assert int(rows[("encoder.self=aslr", "XS")][2]) == 11_633_600
    assert int(rows[("decoder.cross=alr", "L")][2]) == 122_931_200
    assert int(rows[("encoder.self=alr", "M")][3]) == 49_536  # Q/K/V of one attention
    assert int(rows[("encoder.self=elr", "M")][3]) == 198_272  # one encoder layer


SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.0"


def _teacher_line(tid: str, direction: str, bleu: float, chrf: float) -> dict:
    score = {"test_set": "flickr", "bleu": bleu, "chrf": chrf, "bleu_signature": SIGNATURE}
    return {
        "kind": "teacher",
        "teacher_id": tid,
        "corpus": "multi30k",
        "direction": direction,
        "preset": "paper",
        "scores": {"test": score},
        "train_seconds": 100.0,
        "step": 2000,
    }


def _cell_line(cid: str, direction: str, method: str, size: str, *scores: float) -> dict:
    bleu, teacher, relative, chrf = scores
    score = {"test_set": "flickr", "bleu": bleu, "chrf": chrf, "teacher_bleu": teacher}
    score |= {"relative_bleu": relative, "bleu_signature": SIGNATURE}
    return {
        "kind": "cell",
        "cell_id": cid,
        "corpus": "multi30k",
        "direction": direction,
        "replace": [f"encoder.self={method}"],
        "variant": method.upper(),
        "size": size,
        "layers": "all",
        "teacher_id": f"t-{direction}",
        "student_params": 1000,
        "replaced_params": 500,
        "params_ratio": 2.0,
        "seed": 1,
        "times": {"teacher_train_seconds": 100.0, "distill_seconds": 10.0, "eval_seconds": 1.5},
        "config": {"model": {"encoder_layers": 6, "decoder_layers": 6}},
        "scores": {"test": score},
    }


def test_report_of_a_hand_written_results_file(tmp_path: Path) -> None:
    """Every table value and CSV row, from results typed in by hand: a teacher and a cell
    appear twice (their last lines win, in the place of their first), and one cell is missing
    (ELR S on de-en; ELR on en-de)."""
    sweep = tmp_path / "hand"
    sweep.mkdir()
    spec = {"name": "hand", "preset": "paper", "set": []}
    spec["grid"] = {"direction": ["de-en", "en-de"], "size": ["XS", "S"]}
    spec["grid"]["replace"] = [["encoder.self=alr"], ["encoder.self=elr"]]
    (sweep / "spec.yaml").write_text(json.dumps(spec))
    records = [
        _teacher_line("t-de-en", "de-en", 39.0, 59.0),
        _cell_line("c1", "de-en", "alr", "XS", 20.0, 40.0, 50.0, 45.0),
        _cell_line("c5", "en-de", "alr", "S", 12.0, 30.0, 40.0, 35.0),
        _cell_line("c2", "de-en", "alr", "S", 30.0, 40.0, 75.0, 52.5),
        _teacher_line("t-en-de", "en-de", 30.0, 55.0),
        _cell_line("c3", "de-en", "elr", "XS", 10.0, 40.0, 25.0, 30.0),
        _cell_line("c4", "en-de", "alr", "XS", 15.0, 30.0, 50.0, 40.0),
        _teacher_line("t-de-en", "de-en", 40.0, 60.0),
        _cell_line("c5", "en-de", "alr", "S", 21.0, 30.0, 70.0, 50.0),
    ]
    (sweep / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = report(sweep)
    assert (summary["cells"], summary["teachers"], summary["warnings"]) == (5, 2, [])
    out = sweep / "report"
    assert (out / "teacher_bleu.csv").read_text() == (
        "corpus,split,direction,test_set,bleu,chrf\n"
        "multi30k,test,de-en,flickr,40.0,60.0\n"
        "multi30k,test,en-de,flickr,30.0,55.0\n"
    )
    assert (out / "bleu_by_size.csv").read_text() == (
        "corpus,direction,split,layers,variant,size,bleu,relative_bleu,teacher_bleu,chrf\n"
        "multi30k,de-en,test,all,ALR,XS,20.0,50.0,40.0,45.0\n"
        "multi30k,de-en,test,all,ALR,S,30.0,75.0,40.0,52.5\n"
        "multi30k,de-en,test,all,ELR,XS,10.0,25.0,40.0,30.0\n"
        "multi30k,en-de,test,all,ALR,XS,15.0,50.0,30.0,40.0\n"
        "multi30k,en-de,test,all,ALR,S,21.0,70.0,30.0,50.0\n"
    )
    rows = [
        "c1,de-en,ALR,XS,20.0,45.0,40.0,50.0",
        "c5,en-de,ALR,S,21.0,50.0,30.0,70.0",
        "c2,de-en,ALR,S,30.0,52.5,40.0,75.0",
        "c3,de-en,ELR,XS,10.0,30.0,40.0,25.0",
        "c4,en-de,ALR,XS,15.0,40.0,30.0,50.0",
    ]
    expected = [
        "cell_id,corpus,direction,variant,replace,size,layers,split,test_set,bleu,chrf,"
        "teacher_bleu,relative_bleu,student_params,replaced_params,params_ratio,"
        "teacher_train_seconds,distill_seconds,eval_seconds,seed,bleu_signature"
    ]
    for row in rows:
        cid, direction, variant, size, *values = row.split(",")
        method = f"encoder.self={variant.lower()}"
        expected.append(
            f"{cid},multi30k,{direction},{variant},{method},{size},all,test,flickr,"
            + ",".join(values)
            + f",1000,500,2.0,100.0,10.0,1.5,1,{SIGNATURE}"
        )
    assert _lines(out / "results.csv") == expected
    md = (out / "report.md").read_text().splitlines()
    for line in [
        "| model | de-en | en-de |",
        "| Transformer (multi30k, test) | 40.00 / chrF 60.0 | 30.00 / chrF 55.0 |",
        "### multi30k de-en, layers all (teacher BLEU 40.00)",
        "| ALR | 20.00 (50.0%) | 30.00 (75.0%) |",
        "| ELR | 10.00 (25.0%) | - |",
        "### multi30k en-de, layers all (teacher BLEU 30.00)",
        "| ALR | 15.00 (50.0%) | 21.00 (70.0%) |",
        "### Mean % of the teacher's BLEU over 2 directions",
        "| ALR (multi30k, layers all) | 50.0% | 72.5% |",
        "| ELR (multi30k, layers all) | 25.0% (de-en only) | - |",
        f"Test set: flickr (split test). BLEU: sacreBLEU, signature `{SIGNATURE}`.",
    ]:
        assert line in md, line
    en_de = md[md.index("### multi30k en-de, layers all (teacher BLEU 30.00)") :]
    assert "| replaced \\ size | XS | S |" in en_de[:4] and not en_de[4].startswith("| ELR")


def test_layer_report_from_records(tmp_path: Path) -> None:
    sweep = tmp_path / "layers"
    sweep.mkdir()
    (sweep / "spec.yaml").write_text("name: layers\npreset: paper\n")
    records = []
    for i, layers in enumerate(["0", "0-1", "all", "5", "4-5", "1,3"]):
        result = {"split": "test", "test_set": "t", "bleu": 30.0 - i, "bleu_signature": "sig"}
        result.update(teacher_bleu=32.0, relative_bleu=100 * (30.0 - i) / 32)
        records.append(
            {
                "kind": "cell",
                "cell_id": f"c{i}",
                "corpus": "multi30k",
                "direction": "de-en",
                "replace": ["encoder.self=alr"],
                "size": "M",
                "layers": layers,
                "config": {"model": {"encoder_layers": 6, "decoder_layers": 6}},
                "scores": {"test": result},
                **result,
            }
        )
    (sweep / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = report(sweep)
    md = (sweep / "report" / "report.md").read_text()
    assert "Table E" in md and "layers 1,3" in md
    assert "layers.png" in summary["files"] and "layers.csv" in summary["files"]
    rows = _lines(sweep / "report" / "layers.csv")
    assert any(",bottom,6,all," in r for r in rows) and any(",top,6,all," in r for r in rows)
    assert any(",top,2,4-5," in r for r in rows)


def test_teacher_is_shipped_and_reused_and_only_missing_cells_run(
    demo_sweep: Path, tmp_path: Path
) -> None:
    """The sweep ships its teacher beside the tables; a sweep elsewhere with part of the ledger
    installs that teacher (no training) and computes only the missing cells, with the same
    scores as the first sweep."""
    shipped = demo_sweep.parent / "teachers" / "de-en"
    weights = shipped / "teacher.pt"
    assert weights.is_file() and (shipped / "spm.model").is_file()
    scores = json.loads((shipped / "scores.json").read_text())
    records = read_results(demo_sweep / "results.jsonl")
    teacher = next(r for r in records if r["kind"] == "teacher")
    assert scores["test"]["bleu"] == teacher["bleu"]
    # fp16 weights, compressed: less than 2 bytes per parameter
    assert weights.stat().st_size < 2 * teacher["params"] + 100_000

    out = tmp_path / "tables" / "demo"
    shutil.copytree(shipped, tmp_path / "tables" / "teachers" / "de-en")
    cells = [r for r in records if r["kind"] == "cell"]
    kept = [json.dumps(r) for r in cells[:5]]
    out.mkdir(parents=True)
    (out / "results.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    _assert_plans_no_teacher(out)
    done = _demo_sweep(out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5 finished (skipped), 3 to run" in done.stderr
    assert "shipped" in done.stderr
    lines = _lines(out / "results.jsonl")
    assert lines[:5] == kept  # the ledger only grows
    again = read_results(out / "results.jsonl")
    assert [r["kind"] for r in again[5:]] == ["teacher", "cell", "cell", "cell"]
    run_dir = Path(again[5]["run_dir"])
    assert not (run_dir / "checkpoints" / "last.pt").exists()  # installed, never trained
    first = {r["cell_id"]: r for r in cells}
    for cell in again[6:]:
        assert cell["cell_id"] in first and cell["cell_id"] not in {r["cell_id"] for r in cells[:5]}
        assert cell["teacher_bleu"] == first[cell["cell_id"]]["teacher_bleu"]
        assert cell["bleu"] == first[cell["cell_id"]]["bleu"]


def test_beyond_spec_dry_run_and_parameter_table(tmp_path: Path) -> None:
    """experiments/beyond.yaml (issue 18): the new methods go through the cost model, the
    parameter counts and the report."""
    out = tmp_path / "beyond"
    result = CliRunner().invoke(
        app, ["sweep", "experiments/beyond.yaml", "--dry-run", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "sweep beyond: 31 cells, preset paper" in result.output
    assert result.output.count(" pending ") == 31
    # grid 2 (test pairs joined 2, 3, 4 at a time) tests grid 1's M students; grid 3: ALR L
    assert "16 student families (96 students)" in result.output
    # beside the committed encoder table, its ALR XS/S/M/L de-en lines are copied
    tables = tmp_path / "tables"
    (tables / "encoder").mkdir(parents=True)
    shutil.copy(REPO / "results/tables/multi30k/encoder/results.jsonl", tables / "encoder")
    beside = CliRunner().invoke(
        app, ["sweep", "experiments/beyond.yaml", "--dry-run", "--out", str(tables / "beyond")]
    )
    assert beside.exit_code == 0, beside.output
    copied = [line.split() for line in beside.output.splitlines() if " copied " in line]
    assert [(row[5], row[6], row[8]) for row in copied] == [
        ("encoder.self=alr", size, "1") for size in ("XS", "S", "M", "L")
    ]
    assert beside.output.count(" pending ") == 27
    md, csv_text = params_table(
        Config(), ["XS", "S", "M"], ["encoder.self=mixer", "encoder.self=fnet"]
    )
    rows = {(r.split(",")[0], r.split(",")[1]): r.split(",") for r in csv_text.splitlines()[1:]}
    assert int(rows[("encoder.self=mixer", "M")][2]) == 53_936
    assert int(rows[("encoder.self=fnet", "XS")][2]) == 0
    assert ("encoder.self=alr", "M") in rows  # the paper's methods are always listed
    assert not any(key.startswith("encoder.self=toeplitz") for key, _ in rows)  # not asked for
    assert "53,936 (1x)" in md and "0 (0.00x)" in md and "37,360 (0.75x)" in md


def test_report_with_methods_beyond_the_paper(tmp_path: Path) -> None:
    sweep = tmp_path / "beyond"
    sweep.mkdir()
    (sweep / "spec.yaml").write_text(
        "name: beyond\npreset: paper\ngrid:\n  replace:\n    - [encoder.self=alr]\n"
        "    - [encoder.self=toeplitz]\n    - [encoder.self=meanpool]\n  size: [XS, M]\n"
    )
    records = []
    for i, (method, size) in enumerate(
        [(m, s) for m in ("alr", "toeplitz", "meanpool") for s in ("XS", "M")]
    ):
        result = {"split": "test", "test_set": "t", "bleu": 30.0 - i, "bleu_signature": "sig"}
        result.update(teacher_bleu=32.0, relative_bleu=100 * (30.0 - i) / 32)
        result.update(student_params=0 if method == "meanpool" else 1000, teacher_fallback=0)
        records.append(
            {
                "kind": "cell",
                "cell_id": f"c{i}",
                "corpus": "multi30k",
                "direction": "de-en",
                "replace": [f"encoder.self={method}"],
                "size": size,
                "layers": "all",
                "config": {"model": {"encoder_layers": 6, "decoder_layers": 6}},
                "scores": {"test": result},
                **result,
            }
        )
    (sweep / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = report(sweep)
    md = (sweep / "report" / "report.md").read_text()
    assert "TOEPLITZ" in md and "MEANPOOL" in md and not summary["warnings"]
    params = _lines(sweep / "report" / "params.csv")
    assert any(r.startswith("encoder.self=meanpool,M,0,") for r in params)
    assert "relative_bleu.png" in summary["files"]


def test_a_ledger_that_records_the_teacher_installs_it_on_a_fresh_machine(
    demo_sweep: Path, tmp_path: Path
) -> None:
    """The committed ledgers hold the teacher's line; on a machine whose run folders are empty
    the shipped teacher is installed all the same (not trained, not recorded twice)."""
    records = read_results(demo_sweep / "results.jsonl")
    teacher = next(r for r in records if r["kind"] == "teacher")
    cells = [r for r in records if r["kind"] == "cell"]
    shutil.copytree(demo_sweep.parent / "teachers" / "de-en", tmp_path / "teachers" / "de-en")
    out = tmp_path / "demo"
    out.mkdir()
    kept = [json.dumps(r) for r in [teacher, *cells[:7]]]
    (out / "results.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    _assert_plans_no_teacher(out)
    done = _demo_sweep(out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "7 finished (skipped), 1 to run" in done.stderr
    lines = _lines(out / "results.jsonl")
    assert lines[:8] == kept and len(lines) == 9
    added = json.loads(lines[8])
    assert added["kind"] == "cell" and added["cell_id"] == cells[7]["cell_id"]
    assert added["bleu"] == cells[7]["bleu"]
    run_dir = Path(added["run_dir"])
    assert run_dir.is_relative_to(tmp_path)
    assert not (run_dir / "checkpoints" / "last.pt").exists()  # installed, never trained


def test_students_only_distils_for_scored_cells_and_a_later_sweep_scores_them_alike(
    demo_sweep: Path, tmp_path: Path
) -> None:
    """`--students-only` distils the students of cells the ledger already scored and writes no
    line; the sweep that then scores such a cell distils nothing and gets the same BLEU as the
    sweep that distilled its students itself (the students are the same)."""
    records = read_results(demo_sweep / "results.jsonl")
    teacher = next(r for r in records if r["kind"] == "teacher")
    cell = next(r for r in records if r["kind"] == "cell" and r["size"] != "XS")
    shutil.copytree(demo_sweep.parent / "teachers" / "de-en", tmp_path / "teachers" / "de-en")
    out = tmp_path / "demo"
    out.mkdir()
    ledger = out / "results.jsonl"
    full = "".join(json.dumps(r) + "\n" for r in records)
    ledger.write_text(full, encoding="utf-8")
    only = ("--only", f"cell={cell['cell_id']}")
    done = _demo_sweep(out, "--students-only", *only)
    assert done.returncode == 0, done.stderr[-3000:]
    said = " ".join(done.stderr.split())
    assert "distilling" in said and "the students of 1 cells are distilled" in said, said
    assert ledger.read_text(encoding="utf-8") == full  # nothing scored, nothing lost
    markers = list((tmp_path / "runs").rglob("students/**/sweep.json"))
    assert markers, "no student family was distilled"

    ledger.write_text(json.dumps(teacher) + "\n", encoding="utf-8")
    scored = _demo_sweep(out, *only)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "distilling" not in scored.stderr
    (line,) = [r for r in read_results(ledger) if r["kind"] == "cell"]
    assert line["cell_id"] == cell["cell_id"] and line["bleu"] == cell["bleu"]
