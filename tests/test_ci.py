"""CI cannot pass by skipping: ``.ci/run`` requires the corpora, and with that requirement a
test whose corpora are missing fails instead of being skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, REQUIRE_DATA

# a test behind the ``data_dir`` fixture, and two behind test_data's ``needs_data`` marker
DATA_TESTS = (
    "tests/test_distill.py::test_shared_pass_students_equal_separately_distilled_ones",
    "tests/test_data.py::test_iwslt_de_en_matches_hf",
)


def _pytest(tmp_path: Path, require: str | None, *tests: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_DATA}
    env["ATTNLESS_DATA"] = str(tmp_path / "no-corpora")
    if require is not None:
        env[REQUIRE_DATA] = require
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *tests]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_ci_script_requires_the_corpora(tmp_path: Path) -> None:
    """``.ci/run`` runs ``make test`` with ATTNLESS_REQUIRE_DATA=1 (a stand-in ``make`` on the
    PATH records what it was given)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make = bin_dir / "make"
    make.write_text(f'#!/bin/sh\necho "${REQUIRE_DATA} $*" > {tmp_path / "make.txt"}\n')
    make.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_DATA}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    subprocess.run([str(REPO / ".ci" / "run")], env=env, check=True, timeout=60)
    assert (tmp_path / "make.txt").read_text() == "1 test\n"


def test_missing_corpora_fail_when_required(tmp_path: Path) -> None:
    skipped = _pytest(tmp_path, None, *DATA_TESTS)
    assert skipped.returncode == 0, skipped.stdout[-2000:]
    assert "3 skipped" in skipped.stdout and "error" not in skipped.stdout
    required = _pytest(tmp_path, "1", *DATA_TESTS)
    assert required.returncode == 1, required.stdout[-2000:]
    assert "3 errors" in required.stdout and "skipped" not in required.stdout
    assert f"{REQUIRE_DATA}=1 forbids skipping it" in required.stdout
