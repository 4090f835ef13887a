"""Student families on disk: folders, locks, completion markers, and how to batch distillation.

A family is one (site, method, size); its students (one per layer) distilled with one set of
settings from one teacher live in ``<teacher run>/students/<site>/<method>-<size>/<key>/``
(:func:`attnless.students.student_dir`), beside a lock file, with a ``sweep.json`` marker naming
the layers a sweep distilled there. A sweep with other settings (``--set distill.lr=...``) or a
retrained teacher gets other folders, so it never reuses students trained otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnless import checkpoint
from attnless.config import Config
from attnless.runs import read_json
from attnless.students import state_fingerprint, student_dir, student_settings
from attnless.sweep.cells import Family
from attnless.sweep.locks import Lock
from attnless.sweep.params import student_params

# weights, gradients and Adam's two moments in fp32
BYTES_PER_STUDENT_PARAM = 16

_TEACHER_HASHES: dict[tuple[str, int, int], str] = {}


def teacher_hash(run_dir: Path, which: str) -> str | None:
    """The :func:`~attnless.students.state_fingerprint` of the weights in the teacher checkpoint
    ``which`` of ``run_dir`` (None while there is none), computed once per file version."""
    path = Path(run_dir) / "checkpoints" / f"{which}.pt"
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _TEACHER_HASHES:
        _TEACHER_HASHES[key] = state_fingerprint(checkpoint.load(path)["model"])
    return _TEACHER_HASHES[key]


def memory_budget(device: str = "auto", gigabytes: float | None = None) -> int:
    """Bytes the students of one distill call may use: ``gigabytes`` (the setting
    ``runtime.distill_memory_gb``), else half of the GPU's memory (CUDA) or of the machine's
    RAM."""
    if gigabytes:
        return int(float(gigabytes) * 2**30)
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_properties(0).total_memory // 2
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def lock_beside(folder: Path, what: str) -> Lock:
    """The lock file ``<folder>.lock`` guarding ``folder``."""
    return Lock(folder.with_name(folder.name + ".lock"), what)


def family_dir(cfg: Config, family: Family, teacher: str) -> Path:
    """The folder of ``family``'s students distilled with ``cfg`` from the teacher whose
    weights hash to ``teacher``."""
    site, method, size = family
    return student_dir(cfg.run_dir(), student_settings(cfg, site, method, size, teacher))


def family_lock(folder: Path, family: Family) -> Lock:
    return lock_beside(folder, f"students {'/'.join(family)}")


def read_json_quiet(path: Path) -> Any:
    """The JSON in ``path``; None if it is missing or corrupt."""
    try:
        return read_json(path)
    except ValueError:
        return None


def family_done(folder: Path, layers: list[int]) -> bool:
    """Whether a sweep already distilled the students of ``layers`` in ``folder``."""
    marker = read_json_quiet(folder / "sweep.json")
    if not marker or not set(layers) <= set(marker.get("layers", [])):
        return False
    return all((folder / f"layer{i}.pt").is_file() for i in layers)


def distill_calls(
    cfg: Config, families: dict[Family, list[int]], say: Callable[[str], None]
) -> list[tuple[list[int], list[Family]]]:
    """Split the families into distill calls: one per distinct layer set, further split
    (largest first, first fit) so the students of one call fit ``memory_budget()``."""
    budget = memory_budget(cfg.runtime.device, cfg.runtime.distill_memory_gb)
    m = cfg.model
    calls = []
    by_layers: dict[tuple[int, ...], list[Family]] = {}
    for fam, layers in families.items():
        by_layers.setdefault(tuple(layers), []).append(fam)
    for layers, fams in by_layers.items():

        def need(fam: Family, count: int = len(layers)) -> int:
            site, method, size = fam
            params = student_params(f"{site}={method}", size, cfg.distill.n, m.d_model, m.heads)
            return params * count * BYTES_PER_STUDENT_PARAM

        bins: list[tuple[int, list[Family]]] = []
        for fam in sorted(fams, key=need, reverse=True):
            for i, (used, members) in enumerate(bins):
                if used + need(fam) <= budget:
                    bins[i] = (used + need(fam), members + [fam])
                    break
            else:
                bins.append((need(fam), [fam]))
        if len(bins) > 1:
            say(
                f"the students of layers {list(layers)} need "
                f"{sum(u for u, _ in bins) / 2**30:.1f} GiB, more than the budget of "
                f"{budget / 2**30:.1f} GiB: {len(bins)} distillation calls"
            )
        calls += [(list(layers), sorted(members)) for _, members in bins]
    return calls
