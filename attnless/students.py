"""Students: what a student is (a method and size at one layer of a site), how it is built,
and the settings that decide its weights.

Students live in ``<run>/students/<site>/<method>-<size>/<settings key>/layer<i>.pt``
(:class:`attnless.rundir.RunDir`); the key is a hash of :func:`student_settings` (method, size,
n, learning rate, batch size, epochs, seed, precision, the cross-attention causal flag, the
teacher weights' hash), so students trained with other settings are never resumed or reused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnless.config import Config
from attnless.model.sites import ReplacementError, get_method, layer_count
from attnless.replacement import Family, LayerSet, Replacement


@dataclass(frozen=True)
class StudentSpec:
    """One student: a method with a size at one layer."""

    site: str
    method: str
    size: str
    layer: int

    @property
    def key(self) -> str:
        return f"{self.site}.{self.method}-{self.size}.{self.layer}"

    @property
    def family(self) -> Family:
        return Family(self.site, self.method, self.size)


def expand_specs(
    replacements: Sequence[Replacement], layers: LayerSet, model: nn.Module
) -> list[StudentSpec]:
    """Every student of ``replacements`` at ``layers`` of ``model`` (each once)."""
    if not replacements:
        raise ReplacementError("nothing to replace: give at least one site=method:size")
    specs: list[StudentSpec] = []
    for r in replacements:
        chosen = layers.resolve(layer_count(model, r.site))
        specs += [StudentSpec(r.site, r.method, size, i) for size in r.sizes for i in chosen]
    return list(dict.fromkeys(specs))


def build_student(spec: StudentSpec, cfg: Config) -> nn.Module:
    method = get_method(spec.site, spec.method)
    options = {"heads": cfg.model.heads, "causal": cfg.distill.cross_causal}
    return method.build(cfg.distill.n, cfg.model.d_model, spec.size, options)


# --------------------------------------------------------------------------- settings

# 2: issue 15 (the hidden LeakyReLU before its LayerNorm, as the paper; students keyed by their
# settings).
# Bump it whenever the networks compute something else from the same weights.
STUDENT_VERSION = 2


def state_fingerprint(state: Mapping[str, Tensor]) -> str:
    """SHA-256 (16 hex digits) of a state dict's names, dtypes, shapes and bytes: equal for
    equal weights wherever they were loaded, different for any other weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def student_settings(cfg: Config, family: Family, teacher: str) -> dict[str, Any]:
    """Everything that decides the weights of the students of ``family`` besides their layer:
    the network's shape, the optimiser, the batches, the schedule, the seed, the
    precision, the cross-attention causal flag, and the teacher (``teacher``: the
    :func:`state_fingerprint` of its weights). Students of other settings live in other folders.

    ``distill.batch_size`` and ``distill.accumulate`` are per process: the number of processes
    is checked when a student is resumed (:meth:`attnless.rundir.RunDir.load_student`)."""
    site, method, size = family
    d = cfg.distill
    settings: dict[str, Any] = {
        "version": STUDENT_VERSION,
        "site": site,
        "method": method,
        "size": size,
        "n": d.n,
        "d_model": cfg.model.d_model,
        "heads": cfg.model.heads,
        "lr": d.lr or get_method(site, method).lr,
        "betas": list(d.betas),
        "eps": d.eps,
        "batch_size": d.batch_size,
        "accumulate": d.accumulate,
        "epochs": d.epochs,
        "max_steps": d.max_steps,
        "seed": cfg.seed,
        "precision": cfg.runtime.precision,  # the setting (auto ...), as keys have always held
        "teacher": teacher,
    }
    if site == "decoder.cross":  # the only network the flag changes
        settings["cross_causal"] = d.cross_causal
    return settings


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key old -> new`` for every key whose value differs (missing keys read as None)."""
    return [
        f"{key} {old.get(key)!r} -> {new.get(key)!r}"
        for key in dict.fromkeys([*new, *old])
        if old.get(key) != new.get(key)
    ]
