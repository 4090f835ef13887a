"""Checkpoint files: written atomically, loaded with errors that name the file; RNG states and
weight averaging. Which file holds what is :class:`attnless.rundir.RunDir`'s business."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from attnless.runs import atomic_open


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`; its tensors may have been loaded onto a GPU (``map_location``),
    but generators take their states as CPU byte tensors."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves a broken file."""
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


def average_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the ``model`` weights in ``paths`` (fairseq's
    ``average_checkpoints``), summed in float64; non-float tensors are taken from the last file."""
    if not paths:
        raise ValueError("no checkpoints to average")
    states = [load(path)["model"] for path in paths]
    mean: dict[str, torch.Tensor] = {}
    for name, last in states[-1].items():
        if not last.is_floating_point():
            mean[name] = last.clone()
            continue
        total = torch.zeros_like(last, dtype=torch.float64)
        for state in states:
            total += state[name].double()
        mean[name] = (total / len(states)).to(last.dtype)
    return mean


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from None
