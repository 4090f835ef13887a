"""Device, precision and CPU runtime settings (the ``runtime`` section of a config).

A run's precision is decided once, when its teacher is trained (``auto``: bf16 where measured
faster), and recorded in the run folder (``runtime.json``); distillation and evaluation of the
run use the recorded precision instead of measuring again (a busy machine could measure
otherwise)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
import os
import platform
import time
from pathlib import Path

import torch

# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"runtime.device: {name!r} requested but CUDA is not available")
    return device


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul instructions (AVX512-BF16 or AMX)."""
    with contextlib.suppress(AttributeError, RuntimeError):
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    flags = Path("/proc/cpuinfo")
    if flags.exists():
        text = flags.read_text(errors="ignore")
        return "avx512_bf16" in text or "amx_bf16" in text
    return False


@functools.cache
def cpu_bf16_speedup(threads: int) -> float:
    """Measured speed of a bf16 matmul over an fp32 one on this CPU (>1: bf16 is faster).

    Having the instructions is not enough: on an AMD Zen 4 here bf16 ran about 5x faster than
    fp32, while on an Intel Xeon whose hypervisor hides AMX it ran 0.6x as fast. About 50 ms,
    once per process and thread count."""
    rng = torch.Generator().manual_seed(0)  # leaves the global random stream alone
    a, b = torch.randn(1024, 512, generator=rng), torch.randn(512, 1024, generator=rng)
    times = []
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        for _ in range(3):
            x @ y
        best = math.inf
        for _ in range(5):
            start = time.perf_counter()
            x @ y
            best = min(best, time.perf_counter() - start)
        times.append(best)
    return times[0] / times[1]


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a ``runtime.precision`` setting (None = fp32, no autocast).

    ``auto`` takes bf16 on CUDA devices that support it, and on CPUs with bf16 instructions
    where a bf16 matmul measures at least 1.2x faster than fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        supported = cpu_supports_bf16() and cpu_bf16_speedup(torch.get_num_threads()) >= 1.2
    else:
        supported = False
    return torch.bfloat16 if supported else None


def compute_text(dtype: torch.dtype | None) -> str:
    """How a model computes under autocast ``dtype``, for reports."""
    return "bf16 autocast" if dtype == torch.bfloat16 else "fp32 (no autocast)"


def dtype_name(dtype: torch.dtype | None) -> str:
    """``bf16`` or ``fp32``: the ``runtime.precision`` value that gives ``dtype``."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def run_dtype(precision: str, recorded: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for work on a run: ``precision`` (a ``runtime.precision`` setting)
    when it is bf16 or fp32; for ``auto``, ``recorded``, the precision the run's teacher was
    trained in (:meth:`attnless.rundir.RunDir.recorded_precision`), measured only if None."""
    if precision == "auto":
        precision = recorded or "auto"
    return autocast_dtype(precision, device)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for ``dtype``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def tune_cpu_runtime(threads: int | None = None) -> None:
    """Process-wide CPU settings for training: thread count and the glibc allocator.

    By default glibc returns every freed block over 32 MB (and heap tops over 64 MB) to the
    operating system, so each training step page-faults its large tensors in again; measured
    here, that alone made some elementwise ops 5-10x slower. Raising the thresholds keeps those
    pages in the process. Denormal floats are flushed to zero: Adam's moment estimates of rarely
    seen embedding rows decay into the denormal range, where each CPU operation on them costs
    about a hundred times more. The flag is per thread and this sets the caller's only; setting
    it on torch's OpenMP worker too (through a ``GOMP_parallel`` region) measured no gain in
    training (0.98x, paper preset, epoch-20 checkpoint), so the workers keep theirs. Called by
    the training and distillation entry points, never on import.
    """
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    name = ctypes.util.find_library("c")
    if not name:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (``/proc/cpuinfo``; virtual
    machines often show only "AMD EPYC", and family/model tell Zen 3 from Zen 4)."""
    info = Path("/proc/cpuinfo")
    if not info.exists():
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in info.read_text(errors="ignore").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    name = fields.get("model name") or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']} model {fields['model']})"
    return name


def cpu_flags() -> list[str]:
    """The vector extensions that matter for bf16 matmuls, if the CPU lists them."""
    info = Path("/proc/cpuinfo")
    if not info.exists():
        return []
    text = info.read_text(errors="ignore")
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return [flag for flag in wanted if f" {flag}" in text]


def describe_machine(device: torch.device | None = None) -> str:
    """One line naming what computed a result: the GPU, else the CPU, its cores and flags."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    flags = ", ".join(cpu_flags()) or "no AVX2"
    return f"{cpu_model()}, {os.cpu_count()} cores ({flags})"
