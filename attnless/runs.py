"""Run folders: atomic file writes, JSONL logs, versions, seeding."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds.

    A crash or exception inside the block leaves any existing ``path`` untouched and removes the
    temporary file, so readers never see a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write a JSON file (indented, UTF-8)."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single write, so a crash never leaves half a record behind
    except possibly an unterminated last line, which :func:`read_jsonl` skips."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(
    path: str | Path,
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Read a JSONL file of JSON objects. A corrupt line raises in strict mode, else it is
    skipped (with a message naming it passed to ``warn``, when given)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as err:
                if strict:
                    raise ValueError(f"{path}:{number}: corrupt line ({err})") from None
                if warn is not None:
                    warn(f"{path}:{number}: corrupt line skipped ({err}): {line.strip()[:80]!r}")
                continue
            records.append(record)
    return records


def _metric_key(record: dict[str, Any]) -> tuple | None:
    """What identifies a metrics record: its kind, student (distillation) and step; None for
    records without a step, which are all kept."""
    if "step" not in record:
        return None
    return record.get("kind"), record.get("student"), record["step"]


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (training or distillation), each step once.

    A run killed between checkpoints replays the steps after its last checkpoint when it
    resumes, logging them again; the record logged last for a (kind, student, step) wins and
    stands where it was logged, so the records stay in training order. Reports and plots read
    metrics with this function."""
    records = read_jsonl(path)
    last = {key: i for i, key in enumerate(map(_metric_key, records)) if key is not None}
    return [r for i, r in enumerate(records) if last.get(_metric_key(r), i) == i]


def drop_metrics_after(path: str | Path, step: int) -> None:
    """Remove the records of steps after ``step`` from a ``metrics.jsonl`` (atomically): a run
    resumed from a checkpoint at ``step`` will log those steps again."""
    path = Path(path)
    records = read_jsonl(path)
    kept = [r for r in records if not isinstance(r.get("step"), int) or r["step"] <= step]
    if len(kept) < len(records):
        write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages a result depends on."""
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    out["commit"] = git_revision()
    for package in ("attnless", "torch", "sacrebleu", "sentencepiece", "numpy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    try:
        import torch

        out["cuda"] = torch.version.cuda or "none"
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (if present) and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(seed)


def read_json(path: str | Path) -> Any:
    """Read a JSON file; None if it does not exist. A corrupt file raises ValueError naming it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def git_revision(repo: Path | None = None) -> str:
    """The commit of the attnless checkout ``repo`` (default: this one), with ``+changes`` when
    tracked files other than ``results/`` differ from it: the ledgers there grow while a sweep
    runs, and a result is about the code that produced it.

    ``$ATTNLESS_COMMIT`` wins when set: a copy of a checkout (a GPU machine's, set by
    tools/gpu/run_cells.sh) may have no ``.git`` or a stale one. Without either, ``unknown``.
    """
    if pinned := os.environ.get("ATTNLESS_COMMIT"):
        return pinned
    repo = repo or Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def fingerprint(obj: Any, length: int = 12) -> str:
    """A short, stable hash of ``obj``'s JSON form."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]
