"""Multi-process training with ``torchrun`` (PyTorch DDP): process group, sharding, reductions.

``torchrun --nproc_per_node N -m attnless train CONFIG`` starts N processes with the ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` environment variables;
:func:`setup` joins them into one process group (NCCL on CUDA, gloo on the CPU) and binds each
process to GPU ``LOCAL_RANK``. Without those variables (a plain ``attnless train``) everything
here is a no-op for a world of one process, so single-process code paths need no branches.

Conventions shared by training and distillation:

- every rank computes the same seeded epoch order; a global step consumes ``world * accumulate``
  consecutive batches, of which rank ``r`` takes ``r, r + world, ...`` (:func:`rank_share`);
- losses are normalised by the step's global token count, which every rank computes from the
  sentence lengths without communication, so N processes equal one process that accumulates
  the same batches;
- only rank 0 writes files (checkpoints, metrics, logs) and shows progress bars.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist

from attnless import hardware

if TYPE_CHECKING:
    from attnless.config import RuntimeConfig

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """This process's place in the job: ``rank`` of ``world`` processes (``local_rank`` on its
    machine). A default Context is a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_context() -> Context:
    """The Context that ``torchrun`` (or any launcher setting its variables) describes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    return Context(rank, world, local_rank)


def setup(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group of the environment (once per process) and pick this rank's device.

    On CUDA each process uses GPU ``LOCAL_RANK`` (``runtime.device: cuda:N`` is overridden, since
    a multi-process job must spread over the GPUs); on the CPU, gloo. Returns the Context and
    the device to use.
    """
    ctx = env_context()
    if not ctx.enabled:
        return ctx, device
    if not dist.is_available():  # pragma: no cover - every official build has it
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(minutes=60)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world, **kwargs)
        atexit.register(_teardown)
    elif dist.get_world_size() != ctx.world:
        raise RuntimeError(
            f"the process group has {dist.get_world_size()} processes, WORLD_SIZE says {ctx.world}"
        )
    return ctx, device


def setup_run(
    runtime: RuntimeConfig, recorded_precision: str | None
) -> tuple[Context, torch.device, torch.dtype | None]:
    """:func:`setup` for training or distillation: also sets the CPU threads (on the CPU) and
    picks the compute dtype (:func:`attnless.hardware.run_dtype`; ``recorded_precision``: the
    teacher's). Returns the Context, the device and the dtype."""
    ctx, device = setup(hardware.resolve_device(runtime.device))
    if device.type == "cpu":
        hardware.tune_cpu_runtime(runtime.threads or default_threads(ctx))
    return ctx, device, hardware.run_dtype(runtime.precision, recorded_precision, device)


def _teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def rank_share(items: Sequence[T], ctx: Context) -> list[T]:
    """The items of ``items`` this rank handles: ``r, r + world, ...``."""
    return list(items[ctx.rank :: ctx.world])


def groups(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive groups of ``size`` items (the last one may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def all_reduce_sum(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place (a no-op for one process); returns it."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_grads(params: Sequence[torch.nn.Parameter], ctx: Context) -> Any:
    """Start summing the gradients of ``params`` over all ranks (one flat, asynchronous
    all-reduce); call the returned function before using the gradients. Missing gradients
    count as zeros (a rank that had no batch for this step)."""
    if not ctx.enabled:
        return lambda: None
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    work = dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True)

    def finish() -> None:
        work.wait()
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    return finish


def gather_objects(obj: Any, ctx: Context) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_first(ctx: Context) -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks (e.g. preparing the run folder:
    rank 0 trains the tokenizer and writes the config, the others then only read)."""
    if ctx.enabled and not ctx.is_main:
        barrier(ctx)
    try:
        yield
    finally:
        if ctx.enabled and ctx.is_main:
            barrier(ctx)


def default_threads(ctx: Context) -> int | None:
    """CPU threads per process when several processes share a machine, or None (torch's default).

    torchrun sets ``OMP_NUM_THREADS=1`` for N > 1 processes unless the user set it, and that is
    respected; other launchers get the machine's cores split evenly. An explicit
    ``runtime.threads`` always wins (the caller applies it first)."""
    if not ctx.enabled or "OMP_NUM_THREADS" in os.environ:
        return None
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(ctx.world)))
    return max(1, (os.cpu_count() or 1) // max(local, 1))
