"""Shared pieces of the benchmarks: the machine description, timing, markdown tables."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from attnless.allocator import active_allocator
from attnless.hardware import cpu_flags, cpu_model
from attnless.runs import git_revision

REPO = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA work is asynchronous); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()``, including the device work it queued."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def best_time(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls: on a shared machine the minimum is the figure
    least disturbed by other processes."""
    return min(timed(fn, device) for _ in range(max(repeats, 1)))


def machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    out: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "torch_threads": torch.get_num_threads(),
        "allocator": active_allocator(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "revision": git_revision(),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
        out["cuda"] = torch.version.cuda
    return out


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; floats are rounded for reading."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
