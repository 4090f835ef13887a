"""Student families on disk: folders, locks, completion markers, and how to batch distillation.

A family is one (site, method, size); its students (one per layer) distilled with one set of
settings from one teacher live in ``<teacher run>/students/<site>/<method>-<size>/<key>/``
(:meth:`attnless.rundir.RunDir.student_folder`), beside a lock file, with a ``sweep.json`` marker
naming the layers a sweep distilled there. A sweep with other settings (``--set
distill.lr=...``) or a retrained teacher gets other folders, so it never reuses students
trained otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from attnless.config import Config
from attnless.params import student_params
from attnless.replacement import Family
from attnless.rundir import RunDir, StudentFolder
from attnless.students import student_settings
from attnless.sweep.locks import Lock

# weights, gradients and Adam's two moments in fp32
BYTES_PER_STUDENT_PARAM = 16


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


def family_folder(cfg: Config, family: Family, teacher: str) -> StudentFolder:
    """The folder of ``family``'s students distilled with ``cfg`` from the teacher whose
    weights hash to ``teacher``."""
    return RunDir.of(cfg).student_folder(student_settings(cfg, family, teacher))


def family_lock(folder: StudentFolder, family: Family) -> Lock:
    return lock_beside(folder.path, f"students {'/'.join(family)}")


def family_done(folder: StudentFolder, layers: list[int]) -> bool:
    """Whether a sweep already distilled the students of ``layers`` in ``folder``."""
    marker = folder.read_marker()
    if not marker or not set(layers) <= set(marker.get("layers", [])):
        return False
    return folder.has(layers)


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
            params = student_params(fam.key, fam.size, cfg.distill.n, m.d_model, m.heads)
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
