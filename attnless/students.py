"""Students: what a student is (a method and size at one layer of a site), how it is built,
and where it lives on disk, keyed by every setting that changes it.

Students live in ``<run>/students/<site>/<method>-<size>/<settings key>/layer<i>.pt``; the key
is a hash of the student's settings (method, size, n, learning rate, batch size, epochs, seed,
precision, the cross-attention causal flag, the teacher weights' hash), so students trained
with other settings are never resumed or reused. Distillation writes them, hybrids and sweeps
read them; all three go through this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnless.config import Config, ConfigError, layer_indices
from attnless.model.sites import (
    SIZES,
    ReplacementError,
    check_layers,
    get_method,
    layer_count,
)
from attnless.runs import fingerprint, read_json


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


def parse_layers(text: str, count: int) -> list[int]:
    """``all``, ``0-5`` or ``0,2,4`` -> sorted layer indices, checked against ``count``."""
    try:
        layers = layer_indices(text)  # an empty or reversed range is an error
    except ConfigError as err:
        raise ReplacementError(str(err)) from None
    if layers is None:
        return list(range(count))
    bad = [i for i in layers if not 0 <= i < count]
    if bad:
        raise ReplacementError(
            f"layer {bad[0]} is out of range: the teacher has {count} layers (0-{count - 1})"
        )
    return layers


def parse_replace(text: str) -> tuple[str, str, list[str]]:
    """``encoder.self=alr:S,M`` -> (site, method, sizes), every part checked."""
    site, eq, rest = text.partition("=")
    method, colon, sizes = rest.partition(":")
    if not eq or not colon or not sizes:
        raise ReplacementError(
            f"--replace {text!r}: expected site=method:size[,size], e.g. encoder.self=alr:M"
        )
    get_method(site.strip(), method.strip())
    size_list = [s.strip().upper() for s in sizes.split(",") if s.strip()]
    for size in size_list:
        if size not in SIZES:
            raise ReplacementError(f"--replace {text!r}: unknown size {size!r}; expected {SIZES}")
    return site.strip(), method.strip(), size_list


def expand_specs(replace: list[str], layers: str, model: nn.Module) -> list[StudentSpec]:
    """All students named by ``--replace`` specs and ``--layers``."""
    if not replace:
        raise ReplacementError("nothing to replace: give at least one site=method:size")
    specs: list[StudentSpec] = []
    for text in replace:
        site, method, sizes = parse_replace(text)
        chosen = parse_layers(layers, layer_count(model, site))
        check_layers(model, site, chosen)
        specs += [StudentSpec(site, method, size, i) for size in sizes for i in chosen]
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
SETTINGS_FILE = "settings.json"


def state_fingerprint(state: Mapping[str, Tensor]) -> str:
    """SHA-256 (16 hex digits) of a state dict's names, dtypes, shapes and bytes: equal for
    equal weights wherever they were loaded, different for any other weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def student_settings(
    cfg: Config, site: str, method: str, size: str, teacher: str
) -> dict[str, Any]:
    """Everything that decides the weights of the students of one (site, method, size) besides
    their layer: the network's shape, the optimiser, the batches, the schedule, the seed, the
    precision, the cross-attention causal flag, and the teacher (``teacher``: the
    :func:`state_fingerprint` of its weights). Students of other settings live in other folders.

    ``distill.batch_size`` and ``distill.accumulate`` are per process: the number of processes
    is checked when a student is resumed (see :meth:`Distiller._check_meta`)."""
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


def family_root(run_dir: Path, site: str, method: str, size: str) -> Path:
    """The folder of every student of (site, method, size), one sub-folder per setting."""
    return Path(run_dir) / "students" / site / f"{method}-{size}"


def student_dir(run_dir: Path, settings: dict[str, Any]) -> Path:
    """The folder of the students with ``settings`` (one file per layer)."""
    root = family_root(run_dir, settings["site"], settings["method"], settings["size"])
    return root / fingerprint(settings, 10)


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key old -> new`` for every key whose value differs (missing keys read as None)."""
    return [
        f"{key} {old.get(key)!r} -> {new.get(key)!r}"
        for key in dict.fromkeys([*new, *old])
        if old.get(key) != new.get(key)
    ]


def other_settings(run_dir: Path, settings: dict[str, Any]) -> list[str]:
    """Lines naming the folders of the same (site, method, size) distilled with other settings
    and how those settings differ from ``settings`` (old -> new)."""
    root = family_root(run_dir, settings["site"], settings["method"], settings["size"])
    lines = []
    if any(root.glob("layer*.pt")):
        lines.append(f"{root}: students from before settings were recorded (not used)")
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        try:
            saved = (read_json(folder / SETTINGS_FILE) or {}).get("settings")
        except ValueError:
            saved = None
        if isinstance(saved, dict) and saved != settings:
            lines.append(f"{folder}: {', '.join(settings_diff(saved, settings))}")
    return lines
