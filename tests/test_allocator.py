"""The faster-allocator relaunch: library search, the relaunched environment, errors, and a real
relaunch in a child process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from attnless import allocator
from attnless.allocator import (
    HUGE_PAGES_TUNABLE,
    RELAUNCHED_VARIABLE,
    AllocatorError,
    find_allocator,
    relaunch_environment,
)


def _touch(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"")
    return path


def test_find_allocator_prefers_tcmalloc(tmp_path):
    jemalloc = _touch(tmp_path / "a", "libjemalloc.so.2")
    tcmalloc = _touch(tmp_path / "b", "libtcmalloc_minimal.so.4")
    dirs = [tmp_path / "a", tmp_path / "b"]
    assert find_allocator("auto", dirs) == tcmalloc
    assert find_allocator("jemalloc", dirs) == jemalloc
    assert find_allocator("tcmalloc", [tmp_path / "a"]) is None
    assert find_allocator("auto", [tmp_path / "missing"]) is None


def test_relaunch_environment_preloads_and_marks():
    library = Path("/opt/lib/libtcmalloc_minimal.so.4")
    env = relaunch_environment({"LD_PRELOAD": "/x/libother.so", "HOME": "/h"}, library, "2.36")
    assert env["LD_PRELOAD"] == f"{library}:/x/libother.so"
    assert env[RELAUNCHED_VARIABLE] == "1"
    assert env["HOME"] == "/h"
    assert "GLIBC_TUNABLES" not in env


def test_relaunch_environment_without_library_uses_huge_pages():
    env = relaunch_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, None, "2.36")
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{HUGE_PAGES_TUNABLE}"
    assert "LD_PRELOAD" not in env
    old_glibc = relaunch_environment({}, None, "2.31")
    assert "GLIBC_TUNABLES" not in old_glibc and old_glibc[RELAUNCHED_VARIABLE] == "1"


def test_bad_choice_and_missing_library_are_clear_errors(monkeypatch, tmp_path):
    monkeypatch.delenv(RELAUNCHED_VARIABLE, raising=False)
    monkeypatch.setenv("ATTNLESS_ALLOCATOR", "mimalloc")
    with pytest.raises(AllocatorError, match="ATTNLESS_ALLOCATOR='mimalloc': expected one of"):
        allocator.relaunch_with_fast_allocator()
    if sys.platform != "linux" or allocator.active_allocator() != "system":
        return  # no relaunch would be attempted
    monkeypatch.setenv("ATTNLESS_ALLOCATOR", "jemalloc")
    monkeypatch.setattr(allocator, "library_dirs", lambda: [tmp_path])
    expected = f"none of libjemalloc.so.2, libjemalloc.so.1, libjemalloc.so found in {tmp_path}"
    with pytest.raises(AllocatorError, match=re.escape(expected)):
        allocator.relaunch_with_fast_allocator()


@pytest.mark.skipif(sys.platform != "linux", reason="relaunching is Linux-only")
@pytest.mark.parametrize("choice", ["auto", "system"])
def test_real_relaunch(choice):
    """A child process relaunches itself once and then runs with the allocator found."""
    code = (
        "import os; from attnless.allocator import relaunch_with_fast_allocator, "
        "active_allocator; relaunch_with_fast_allocator(); "
        "print(active_allocator(), os.environ.get('GLIBC_TUNABLES', ''), "
        f"os.environ.get('{RELAUNCHED_VARIABLE}', '-'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", RELAUNCHED_VARIABLE)}
    env["ATTNLESS_ALLOCATOR"] = choice
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    active, *rest = out.stdout.split()
    library = find_allocator()
    if choice == "system":
        assert active == "system" and rest[-1] == "-"
    elif library is not None:
        assert library.name.startswith(f"lib{active}") and rest[-1] == "1"
    else:
        assert active == "system" and rest[-1] == "1"
        glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
        if glibc.startswith("glibc 2.") and int(glibc.split(".")[1]) >= 35:
            assert HUGE_PAGES_TUNABLE in rest[0]
