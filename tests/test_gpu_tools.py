"""tools/gpu: the bundle, the script a GPU machine runs, the merge of what comes back, and the
`run` call docs/gpu.md gives (all checked here without a GPU or the network)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers import REPO, tiny_config

TOOLS = REPO / "tools" / "gpu"
sys.path.insert(0, str(TOOLS))
import merge  # noqa: E402  (tools/gpu/merge.py)

SCRIPTS = ["bundle.sh", "run_cells.sh", "fake_machine.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_valid_bash(script: str) -> None:
    subprocess.run(["bash", "-n", str(TOOLS / script)], check=True, timeout=30)


def test_bundle_holds_the_files_the_loader_reads(tmp_path: Path, data_dir: Path, monkeypatch):
    """`bundle.sh data` copies exactly the Multi30k files that de-en and en-de read (train,
    valid and both test sets), and the loader finds them there, not in a cache."""
    from attnless.data import describe_source

    bundle = tmp_path / "bundle"
    env = os.environ | {"BUNDLE": str(bundle), "ATTNLESS_DATA": str(data_dir)}
    env |= {"PYTHON": sys.executable, "DIRECTIONS": "de-en en-de"}
    subprocess.run([str(TOOLS / "bundle.sh"), "data"], env=env, check=True, timeout=60)
    monkeypatch.setenv("ATTNLESS_CACHE", str(tmp_path / "empty-cache"))
    read = set()
    for src, tgt in (("de", "en"), ("en", "de")):
        for test_set in ("test_2016_flickr", "test_2017_mscoco"):
            sets = [f"data.src={src}", f"data.tgt={tgt}", f"data.test_set={test_set}"]
            cfg = tiny_config(tmp_path, bundle / "data", *sets)
            for split in ("train", "valid", "test"):
                paths = describe_source(cfg.data, split).split(": ", 1)[1].split(" | ")
                read |= {Path(p) for p in paths}
    bundled = {p for p in (bundle / "data").rglob("*") if p.is_file()}
    assert read == bundled
    assert (bundle / "commit").read_text().strip()


def test_run_cells_setup_versions_and_budget(tmp_path: Path) -> None:
    """With a Python that has every package and no budget left: nothing installed, versions
    recorded, no sweep started, an (empty) results tar left in $OUT."""
    out = tmp_path / "out"
    env = os.environ | {"OUT": str(out), "PYTHON": sys.executable, "BUNDLE": str(tmp_path / "b")}
    done = subprocess.run(
        [str(TOOLS / "run_cells.sh"), "0", "& experiments/decoder.yaml --students-only"]
        + ["experiments/encoder.yaml --only direction=de-en", "bench --quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "log.txt").read_text()
    assert "installing" not in log
    assert "budget spent; not started: experiments/decoder.yaml --students-only" in log
    assert "budget spent; not started: experiments/encoder.yaml --only direction=de-en" in log
    assert "budget spent; not started: bench --quick" in log
    assert "| torch " in (out / "versions.txt").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "results.tar.00", "versions.txt"]


def test_run_cells_keeps_a_runs_folder_it_is_given(tmp_path: Path) -> None:
    """RUNS (relative to the tree, as `RUNS=runs` there) outlives the call, so the next call on a
    warm machine resumes from its checkpoints; its small files come back in runs.tgz."""
    runs = tmp_path / "tree" / "runs"
    (runs / "t" / "students").mkdir(parents=True)
    (runs / "t" / "students" / "metrics.jsonl").write_text("{}\n")
    (runs / "t" / "students" / "layer0.pt").write_bytes(b"weights")
    out = tmp_path / "out"
    env = os.environ | {"OUT": str(out), "PYTHON": sys.executable, "BUNDLE": str(tmp_path / "b")}
    env |= {"RUNS": os.path.relpath(runs, REPO)}
    done = subprocess.run(
        [str(TOOLS / "run_cells.sh"), "0", "experiments/encoder.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with tarfile.open(out / "runs.tgz") as tar:
        assert tar.getnames() == ["t/students/metrics.jsonl"]
    assert (runs / "t" / "students" / "layer0.pt").read_bytes() == b"weights"


def test_the_sweep_does_not_import_pandas() -> None:
    """pandas is for `attnless report` alone (not bundled for the GPU machine)."""
    modules = "attnless.cli, attnless.sweep, attnless.train, attnless.distill, attnless.evaluate"
    code = f"import sys, {modules}; print('pandas' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "False"


def _tar(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_merge_appends_new_ledger_lines_and_keeps_local_files(tmp_path: Path) -> None:
    def line(kind: str, ident: str, **more) -> str:
        key = "cell_id" if kind == "cell" else "teacher_id"
        return json.dumps({"kind": kind, key: ident, **more})

    ledger = tmp_path / "results" / "t" / "enc" / "results.jsonl"
    ledger.parent.mkdir(parents=True)
    local = [line("teacher", "t1"), line("cell", "a"), line("cell", "here")]
    ledger.write_text("".join(f"{x}\n" for x in local))
    (ledger.parent / "spec.yaml").write_text("local\n")
    back = [
        line("teacher", "t1"),
        line("cell", "a", bleu=1),
        line("cell", "gpu1"),
        line("cell", "gpu2"),
    ]
    data = _tar(
        {
            "results/t/enc/results.jsonl": "".join(f"{x}\n" for x in back),
            "results/t/enc/spec.yaml": "theirs\n",
            "results/t/teachers/en-de/config.yaml": "new\n",
        }
    )
    (tmp_path / "results.tar.00").write_bytes(data[:700])
    (tmp_path / "results.tar.01").write_bytes(data[700:])
    parts = sorted(tmp_path.glob("results.tar.*"))
    report = merge.merge(parts, tmp_path)
    assert ledger.read_text().splitlines() == local + back[2:]
    assert (ledger.parent / "spec.yaml").read_text() == "local\n"
    assert (tmp_path / "results/t/teachers/en-de/config.yaml").read_text() == "new\n"
    assert "results/t/enc/results.jsonl: 2 new line(s) appended" in report
    assert merge.merge(parts, tmp_path)[0].endswith(": 0 new line(s) appended")


def test_the_documented_run_call_fits() -> None:
    """docs/gpu.md's `run` command is under the tool's 2,000 characters, runs run_cells.sh
    (after environment settings), carries the bundle and names specs and cells that exist."""
    from attnless.sweep import expand, load_spec

    text = (REPO / "docs" / "gpu.md").read_text(encoding="utf-8")
    call = re.search(r"<!-- run call -->\s*```json\n(.*?)```", text, re.S)
    assert call, "docs/gpu.md: no run call block"
    args = json.loads(call.group(1))
    command = re.sub(r"^(\w+=\S+ )*", "", args["command"])
    assert len(args["command"]) < 2000 and command.startswith("tools/gpu/run_cells.sh ")
    assert args["carry"] == ["gpu-bundle"] and args["timeout_s"] <= 600
    budget = int(command.split()[1])
    assert budget + 60 <= args["timeout_s"]
    sweeps = re.findall(r"'(?:& )?(experiments/\w+\.yaml)([^']*)'", command)
    benches = re.findall(r"'bench[^']*'", command)
    assert sweeps and len(sweeps) + len(benches) == command.count("'") // 2
    for spec, options in sweeps:
        assert (REPO / spec).is_file(), spec
        ids = {c.id for c in expand(load_spec(REPO / spec))}
        for named in re.findall(r"cell=([\w,]+)", options):
            assert set(named.split(",")) <= ids, (spec, named)


def test_commit_of_a_copied_tree_comes_from_the_environment(monkeypatch) -> None:
    """A copy of the tree (the GPU machine's) names $ATTNLESS_COMMIT, with or without a .git:
    on 2026-12-04 the copy there carried the session's starting .git, a commit behind."""
    from attnless import runs

    monkeypatch.delenv("ATTNLESS_COMMIT", raising=False)
    here = runs.git_revision()
    assert here != "unknown"  # this checkout is a git checkout
    monkeypatch.setenv("ATTNLESS_COMMIT", "abc1234")
    assert runs.git_revision() == "abc1234"

    def no_git(*args, **kwargs):
        raise OSError("git: not a git repository")

    monkeypatch.setattr(runs.subprocess, "run", no_git)
    assert runs.git_revision() == "abc1234"
    monkeypatch.delenv("ATTNLESS_COMMIT")
    assert runs.git_revision() == "unknown"


def test_a_growing_ledger_does_not_mark_the_code_changed(tmp_path: Path, monkeypatch) -> None:
    """A sweep appends to the tracked ledgers under results/ while it runs: the lines it writes
    after the first must still name the clean commit; a change to the code does not."""
    from attnless import runs

    monkeypatch.delenv("ATTNLESS_COMMIT", raising=False)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, timeout=30)

    (tmp_path / "attnless").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "attnless" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "results.jsonl").write_text("{}\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    clean = runs.git_revision(tmp_path)
    assert clean != "unknown" and not clean.endswith("+changes")
    with (tmp_path / "results" / "results.jsonl").open("a") as ledger:
        ledger.write("{}\n")
    assert runs.git_revision(tmp_path) == clean
    (tmp_path / "attnless" / "code.py").write_text("x = 2\n")
    assert runs.git_revision(tmp_path) == clean + "+changes"
