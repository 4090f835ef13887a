"""Shipped teachers: the teacher of every committed table, in the repository.

Every cell of a table must be measured against the same teacher, whichever machine and day it
runs on, so a sweep ships the teacher it trained to ``<teachers>/<src>-<tgt>/`` (for ``make
tables``: ``results/tables/<corpus>/teachers/``), and a later sweep, anywhere, installs that
teacher into its run folder instead of training one, when the settings that define a teacher
(its id: data, tokenizer, model, training, seed) are the same.

A shipped teacher is its weights rounded to fp16 and stored as two byte planes, each
lzma-compressed (the high bytes, sign and exponent, compress to a third; the paper teacher's
5.9M weights take under 10 MB), plus the run folder's small files (config, tokenizer, data
summary, training metrics) and ``scores.json``: its test scores computed from the rounded
weights. The run that ships a teacher continues with the rounded weights too, so the shipping
machine's cells use exactly the teacher every other machine installs.
"""

from __future__ import annotations

import lzma
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnless import checkpoint
from attnless.rundir import RunDir
from attnless.runs import read_json, write_json

WEIGHTS = "teacher.pt"
SCORES = "scores.json"
FORMAT = "fp16-byte-planes-lzma"


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def pack_weights(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Float tensors rounded to fp16, as compressed high- and low-byte planes; other tensors
    as they are."""
    floats = {k: v for k, v in state.items() if v.is_floating_point()}
    flat = torch.cat([v.detach().cpu().to(torch.float16).flatten() for v in floats.values()])
    planes = flat.view(torch.int16).numpy().view(np.uint8).reshape(-1, 2)
    return {
        "format": FORMAT,
        "names": list(floats),
        "shapes": [list(v.shape) for v in floats.values()],
        "dtypes": [str(v.dtype).removeprefix("torch.") for v in floats.values()],
        # uint8 tensors, not bytes: torch.save's pickle protocol 2 stores bytes as latin-1
        # text, 1.5x larger
        "low": _bytes_tensor(lzma.compress(planes[:, 0].tobytes())),
        "high": _bytes_tensor(lzma.compress(planes[:, 1].tobytes())),
        "other": {k: v.cpu() for k, v in state.items() if not v.is_floating_point()},
    }


def unpack_weights(packed: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict of :func:`pack_weights` (fp16 values in the original dtypes)."""
    if packed.get("format") != FORMAT:
        raise ValueError(f"unknown shipped weights format {packed.get('format')!r}")
    low = np.frombuffer(lzma.decompress(packed["low"].numpy().tobytes()), dtype=np.uint8)
    high = np.frombuffer(lzma.decompress(packed["high"].numpy().tobytes()), dtype=np.uint8)
    values = torch.from_numpy(np.stack([low, high], 1).copy().view(np.int16).reshape(-1))
    values = values.view(torch.float16)
    state: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape, dtype in zip(packed["names"], packed["shapes"], packed["dtypes"], strict=True):
        count = int(np.prod(shape)) if shape else 1
        chunk = values[offset : offset + count].reshape(shape)
        state[name] = chunk.to(getattr(torch, dtype))
        offset += count
    if offset != values.numel():
        raise ValueError(f"shipped weights hold {values.numel()} values, names cover {offset}")
    state.update(packed["other"])
    return state


def read(folder: Path) -> dict[str, Any] | None:
    """The metadata of the teacher shipped in ``folder`` (None if there is none)."""
    path = folder / WEIGHTS
    if not path.is_file():
        return None
    payload = checkpoint.load(path)
    scores = read_json(folder / SCORES) if (folder / SCORES).is_file() else None
    return {k: v for k, v in payload.items() if k != "weights"} | {"scores": scores}


def installable(meta: dict[str, Any] | None, teacher_id: str) -> bool:
    """Whether the shipped teacher ``meta`` (:func:`read`) is teacher ``teacher_id`` with its
    scores: a sweep installs it rather than training one."""
    return meta is not None and meta.get("teacher_id") == teacher_id and bool(meta.get("scores"))


def ship(run_dir: Path, which: str, folder: Path, meta: dict[str, Any]) -> None:
    """Ship checkpoint ``which`` of ``run_dir`` to ``folder`` and make the run's checkpoint the
    rounded one. ``meta`` (teacher id, training summary) is stored with the weights; the
    scores are added by :func:`write_scores` once computed from the rounded weights."""
    run = RunDir(run_dir)
    payload = run.load_checkpoint(which)
    packed = pack_weights(payload["model"])
    payload["model"] = unpack_weights(packed)
    payload["shipped"] = str(folder)
    run.save_checkpoint(which, payload)
    shutil.rmtree(run.evaluations, ignore_errors=True)  # scores of the unrounded weights
    folder.mkdir(parents=True, exist_ok=True)
    for item in run_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, folder / item.name)
    keep = ("config", "state", "precision", "versions")  # the tokenizer ships as its files
    shipped = {k: payload[k] for k in keep if k in payload}
    checkpoint.save(folder / WEIGHTS, {"weights": packed, "checkpoint": which, **meta, **shipped})
    (folder / SCORES).unlink(missing_ok=True)


def write_scores(folder: Path, scores: dict[str, Any]) -> None:
    write_json(folder / SCORES, scores)


def install(folder: Path, run_dir: Path, which: str) -> dict[str, Any]:
    """Make ``run_dir`` hold the teacher shipped in ``folder`` as checkpoint ``which`` (with its
    tokenizer and config); returns the shipped metadata."""
    payload = checkpoint.load(folder / WEIGHTS)
    run_dir.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        if item.is_file() and item.name not in (WEIGHTS, SCORES):
            shutil.copy2(item, run_dir / item.name)
    model = {k: payload[k] for k in ("config", "state", "precision", "versions")}
    RunDir(run_dir).save_checkpoint(
        which, {"model": unpack_weights(payload["weights"]), "shipped": str(folder), **model}
    )
    return read(folder) or {}
