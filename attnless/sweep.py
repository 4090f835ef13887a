"""``attnless sweep``: expand a grid spec into cells, run them resumably, record one line each.

A **spec** (``experiments/encoder.yaml`` ...) names a preset (the teacher and distillation
settings) and a grid::

    name: encoder
    preset: paper                 # experiments/<preset>.yaml, or a path; --preset overrides
    grid:
      corpus: [multi30k]          # optional; default: the preset's data.corpus
      direction: [de-en, en-de]   # optional; default: the preset's data.src-data.tgt
      replace:                    # required: each entry is one variant, a list of sites
        - [encoder.self=alr]      #   replaced together (one site=method per site)
        - [encoder.self=alr, decoder.self=alr]
      size: [XS, S, M, L]         # required
      layers: [all]               # optional; all | 0-5 | 0,2,4 (default: all)
    set: []                       # --set overrides applied to every cell

A **cell** is one combination of the grid values. Its id is a hash of its grid values and of
every setting that is not at its default in the resolved config (so a different preset or
``--set`` gives different cells, while folders, progress and logging settings do not count).

Layout. ``--out`` is the sweep folder (default ``sweeps/<name>``); teachers live in ``--runs``
(default: the folder ``runs`` beside the sweep folder, i.e. ``sweeps/runs``), one folder per
teacher configuration, ``<runs>/<corpus>.<src>-<tgt>/<preset>-<hash of the teacher settings>``,
holding the teacher, its students and their evaluations. All sweeps of one sweeps folder share
teachers and students (the encoder, decoder and layer sweeps need the same four teachers, and
the layer sweep's students are the encoder sweep's ALR students)::

    sweeps/
      runs/multi30k.de-en/paper-1a2b3c4d/   teacher run folder (+ students/, eval/)
      runs/multi30k.de-en/paper-1a2b3c4d.lock
      encoder/spec.yaml                     the spec as run (preset, grid, overrides)
      encoder/results.jsonl                 one line per teacher and per finished cell
      encoder/locks/<cell id>.lock          cells being evaluated
      encoder/report/                       ``attnless report sweeps/encoder``

Running. Cells are grouped by teacher. Per teacher: train it (a no-op when trained) and score
it, under the teacher's lock; distil the students of all its pending cells together, one
``distill`` call per distinct layer set (usually one), so teacher passes are shared; then
evaluate each cell and append its line to ``results.jsonl``. Re-running skips cells that have a
line; teacher training and distillation resume from their checkpoints, so a killed sweep loses
at most the cell being evaluated (and the unfinished epoch of a teacher or student).

Sharding. ``--shard i/n`` takes cells i, i+n, i+2n, ... (0-based). Cells are ordered with the
teacher (corpus, direction) varying fastest, so when n divides the number of teachers each
shard gets whole teachers. Shards sharing a teacher coordinate through lock files (see
:mod:`attnless.locks`): one trains the teacher while the others wait; each student family
(site, method, size) is distilled by one shard at a time, and a shard that finds a family
locked distils its other families first.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from attnless import config as config_mod
from attnless.config import Config, ConfigError
from attnless.locks import HOST, FileLock, describe_holder
from attnless.model.sites import METHODS, SITES, SIZES, ReplacementError, get_method
from attnless.runs import append_jsonl, read_json, versions, write_json, write_text

log = logging.getLogger(__name__)

SPEC_KEYS = ("name", "description", "preset", "grid", "set")
GRID_KEYS = ("corpus", "direction", "replace", "size", "layers")
REQUIRED_GRID = ("replace", "size")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DIRECTION_RE = re.compile(r"^([a-z]{2,3})-([a-z]{2,3})$")
LAYERS_RE = re.compile(r"^(all|\d+(-\d+)?(,\d+(-\d+)?)*)$")
# Keys the sweep sets itself; a --set on them would fight the grid.
SWEEP_KEYS = ("name", "dir", "run_root", "distill.replace", "distill.layers")
SWEEP_KEYS += ("eval.replace", "eval.layers")
GRID_CONFIG_KEYS = {"corpus": ("data.corpus",), "direction": ("data.src", "data.tgt")}
# Settings that say where and how verbosely a job runs, not what it computes.
OPERATIONAL = (
    "name",
    "dir",
    "run_root",
    "data.data_dir",
    "train.progress",
    "train.device",
    "train.threads",
    "train.log_every",
    "train.save_every",
    "distill.progress",
    "distill.log_every",
    "decode.batch_tokens",
)
TEACHER_SECTIONS = ("data", "tokenizer", "model", "train")
SITE_SHORT = {"encoder.self": "enc self", "decoder.self": "dec self", "decoder.cross": "cross"}
REPO = Path(__file__).resolve().parents[1]


class SpecError(ConfigError):
    """A sweep spec (or a --shard / --preset argument) is invalid."""


# --------------------------------------------------------------------------- the spec


@dataclass
class Spec:
    name: str
    preset: str
    preset_path: Path
    grid: dict[str, list[Any]]
    overrides: list[str]
    description: str = ""
    source: str = "<spec>"

    def to_dict(self) -> dict[str, Any]:
        grid = {
            k: [list(v) if isinstance(v, tuple) else v for v in vs] for k, vs in self.grid.items()
        }
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out.update({"preset": self.preset, "grid": grid, "set": list(self.overrides)})
        return out

    def base_values(self) -> dict[str, Any]:
        return config_mod.apply_overrides(config_mod.read_yaml(self.preset_path), self.overrides)

    def base_config(self) -> Config:
        return config_mod.from_dict(self.base_values(), f"{self.preset_path} (+ --set)")


def resolve_preset(preset: str, base_dir: Path | None) -> Path:
    """A preset name (``paper``) or path: beside the spec, then ./experiments, then the repo's."""
    given = Path(preset)
    candidates = []
    if given.suffix in (".yaml", ".yml") or "/" in preset:
        candidates.append(given)
        if base_dir is not None and not given.is_absolute():
            candidates.append(base_dir / given)
    else:
        if base_dir is not None:
            candidates.append(base_dir / f"{preset}.yaml")
        candidates += [
            Path("experiments") / f"{preset}.yaml",
            REPO / "experiments" / f"{preset}.yaml",
        ]
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in dict.fromkeys(candidates))
    raise SpecError(f"preset {preset!r}: no such preset (looked for {looked})")


def _list(value: Any, where: str, example: str) -> list[Any]:
    if not isinstance(value, list):
        raise SpecError(f"{where}: expected a list, e.g. {example}; got {value!r}")
    if not value:
        raise SpecError(f"{where}: empty; every grid key needs at least one value (no cells)")
    seen = set()
    for item in value:
        key = json.dumps(item, sort_keys=True, default=str)
        if key in seen:
            raise SpecError(f"{where}: {item!r} is listed twice")
        seen.add(key)
    return value


def _variant(value: Any, where: str) -> tuple[str, ...]:
    """One replace entry: a list of ``site=method`` (or one such string)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise SpecError(
            f"{where}: expected a non-empty list of site=method, e.g. [encoder.self=alr]; "
            f"got {value!r}"
        )
    known = ", ".join(METHODS)
    out: dict[str, str] = {}
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        if not isinstance(item, str) or "=" not in item:
            raise SpecError(f"{here}: expected site=method (one of {known}); got {item!r}")
        if ":" in item:
            raise SpecError(
                f"{here}: {item!r} gives a size; sizes go in grid.size, the variant is "
                f"{item.split(':')[0]!r}"
            )
        site, _, method = (part.strip() for part in item.partition("="))
        try:
            get_method(site, method)
        except ReplacementError:
            raise SpecError(
                f"{here}: unknown replacement {item!r}; expected one of {known}"
            ) from None
        if site in out:
            raise SpecError(f"{here}: site {site} is replaced twice in one variant")
        out[site] = f"{site}={method}"
    return tuple(out[s] for s in SITES if s in out)


def _normalize_grid(grid: Any, source: str) -> dict[str, list[Any]]:
    if not isinstance(grid, dict):
        raise SpecError(f"{source}: grid: expected a mapping with keys {', '.join(GRID_KEYS)}")
    for key in grid:
        if key not in GRID_KEYS:
            raise SpecError(
                f"{source}: grid.{key}: unknown key; expected one of {', '.join(GRID_KEYS)}"
            )
    for key in REQUIRED_GRID:
        if key not in grid:
            raise SpecError(f"{source}: grid.{key}: required (e.g. {key}: {_EXAMPLES[key]})")
    out: dict[str, list[Any]] = {}
    for key in GRID_KEYS:
        if key not in grid:
            continue
        where = f"{source}: grid.{key}"
        values = _list(grid[key], where, _EXAMPLES[key])
        if key == "corpus":
            choices = config_mod.CHOICES["data.corpus"]
            for v in values:
                if v not in choices:
                    raise SpecError(f"{where}: unknown corpus {v!r}; expected one of {choices}")
        elif key == "direction":
            for v in values:
                match = DIRECTION_RE.match(str(v))
                if not match or match.group(1) == match.group(2):
                    raise SpecError(
                        f"{where}: {v!r} is not a direction; expected src-tgt, e.g. de-en"
                    )
            values = [str(v) for v in values]
        elif key == "replace":
            values = [_variant(v, f"{where}[{i}]") for i, v in enumerate(values)]
            if len(set(values)) != len(values):
                raise SpecError(f"{where}: two entries name the same variant")
        elif key == "size":
            upper = [str(v).upper() for v in values]
            for v, u in zip(values, upper):
                if u not in SIZES:
                    raise SpecError(f"{where}: unknown size {v!r}; expected one of {SIZES}")
            values = upper
        elif key == "layers":
            values = [str(v).replace(" ", "") for v in values]
            for v in values:
                if not LAYERS_RE.match(v):
                    raise SpecError(f"{where}: {v!r}: expected all, a range 0-5 or a list 0,2,4")
        out[key] = values
    return out


_EXAMPLES = {
    "corpus": "[multi30k]",
    "direction": "[de-en, en-de]",
    "replace": "[[encoder.self=alr]]",
    "size": "[XS, S, M, L]",
    "layers": "[all]",
}


def _check_overrides(overrides: list[str], grid: dict[str, list[Any]], source: str) -> None:
    controlled = set(SWEEP_KEYS)
    for key, config_keys in GRID_CONFIG_KEYS.items():
        if key in grid:
            controlled.update(config_keys)
    for text in overrides:
        path, _ = config_mod.parse_override(text)
        key = ".".join(path)
        if key in controlled:
            owner = next((g for g, ks in GRID_CONFIG_KEYS.items() if key in ks), None)
            why = f"grid.{owner} sets it" if owner else "the sweep sets it for each cell"
            raise SpecError(f"{source}: --set {text!r}: {key} cannot be overridden ({why})")


def spec_from_dict(
    values: Any,
    source: str = "<spec>",
    base_dir: Path | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
    default_name: str | None = None,
) -> Spec:
    """Validate a spec mapping; ``preset`` and ``overrides`` come from the command line."""
    if not isinstance(values, dict):
        raise SpecError(f"{source}: expected a mapping with keys {', '.join(SPEC_KEYS)}")
    for key in values:
        if key not in SPEC_KEYS:
            raise SpecError(
                f"{source}: unknown key {key!r}; expected one of {', '.join(SPEC_KEYS)}"
            )
    name = values.get("name", default_name)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError(
            f"{source}: name: {name!r} must be a folder name (letters, digits, '.', '_', '-')"
        )
    description = values.get("description", "")
    if not isinstance(description, str):
        raise SpecError(f"{source}: description: expected text, got {description!r}")
    preset = preset or values.get("preset")
    if not isinstance(preset, str) or not preset:
        raise SpecError(f"{source}: preset: missing; name one (preset: paper) or pass --preset")
    spec_set = values.get("set", [])
    if spec_set is None:
        spec_set = []
    if not isinstance(spec_set, list) or not all(isinstance(s, str) for s in spec_set):
        raise SpecError(f"{source}: set: expected a list of section.key=value, got {spec_set!r}")
    if "grid" not in values:
        raise SpecError(f"{source}: grid: required (a mapping of {', '.join(GRID_KEYS)})")
    grid = _normalize_grid(values["grid"], source)
    all_overrides = list(spec_set) + list(overrides or [])
    _check_overrides(all_overrides, grid, source)
    spec = Spec(
        name=name,
        preset=preset,
        preset_path=resolve_preset(preset, base_dir),
        grid=grid,
        overrides=all_overrides,
        description=description,
        source=source,
    )
    spec.base_config()  # every override must make a valid config
    return spec


def load_spec(
    path: str | Path, preset: str | None = None, overrides: list[str] | None = None
) -> Spec:
    """Read and validate the spec file ``path``."""
    path = Path(path)
    values = config_mod.read_yaml(path)
    if not values:
        raise SpecError(f"{path}: empty spec; expected keys {', '.join(SPEC_KEYS)}")
    return spec_from_dict(values, str(path), path.parent, preset, overrides, path.stem)


# --------------------------------------------------------------------------- cells


def _nondefault(values: Any, defaults: Any) -> Any:
    """The parts of ``values`` that differ from ``defaults`` (nested dicts)."""
    if isinstance(values, dict) and isinstance(defaults, dict):
        out = {}
        for key, value in values.items():
            sub = _nondefault(value, defaults.get(key))
            if sub is not _SAME:
                out[key] = sub
        return out if out else _SAME
    return _SAME if values == defaults else values


_SAME = object()


def _drop(values: dict[str, Any], keys: tuple[str, ...] | set[str]) -> dict[str, Any]:
    out = copy.deepcopy(values)
    for key in keys:
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def settings(cfg: Config, sections: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The non-default, non-operational settings of ``cfg`` (optionally only some sections)."""
    values = _drop(cfg.to_dict(), set(OPERATIONAL) | set(SWEEP_KEYS))
    defaults = Config().to_dict()
    if sections is not None:
        values = {k: v for k, v in values.items() if k in sections or k == "seed"}
    diff = _nondefault(values, defaults)
    return {} if diff is _SAME else diff


def fingerprint(obj: Any, length: int = 12) -> str:
    text = json.dumps(obj, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def teacher_id(cfg: Config) -> str:
    """A hash of everything that defines a teacher: data, tokenizer, model, training, seed."""
    pair = [cfg.data.corpus, cfg.data.src, cfg.data.tgt]
    return fingerprint({"pair": pair, "settings": settings(cfg, TEACHER_SECTIONS)}, 8)


def variant_label(replace: tuple[str, ...] | list[str]) -> str:
    """``ALR`` for encoder-only variants, else ``ALR dec self + ALR cross`` etc."""
    parts = [entry.partition("=") for entry in replace]
    if all(site == "encoder.self" for site, _, _ in parts):
        return " + ".join(method.upper() for _, _, method in parts)
    return " + ".join(f"{method.upper()} {SITE_SHORT.get(site, site)}" for site, _, method in parts)


@dataclass
class Cell:
    index: int
    id: str
    corpus: str
    direction: str
    replace: tuple[str, ...]
    size: str
    layers: str
    teacher: str  # teacher id
    config: Config = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        return variant_label(self.replace)

    @property
    def teacher_dir(self) -> Path:
        return self.config.run_dir()

    def grid_values(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "direction": self.direction,
            "replace": list(self.replace),
            "size": self.size,
            "layers": self.layers,
        }

    def families(self) -> dict[tuple[str, str, str], list[int]]:
        """(site, method, size) -> the layers this cell needs students for."""
        from attnless.distill import parse_layers

        out = {}
        for entry in self.replace:
            site, _, method = entry.partition("=")
            count = layer_count(self.config, site)
            out[(site, method, self.size)] = parse_layers(self.layers, count)
        return out

    def title(self) -> str:
        return f"{self.corpus} {self.direction} {self.label} {self.size} layers {self.layers}"


def layer_count(cfg: Config, site: str) -> int:
    return cfg.model.encoder_layers if site.startswith("encoder") else cfg.model.decoder_layers


def expand(spec: Spec, runs: str | Path = "sweeps/runs") -> list[Cell]:
    """All cells of ``spec``, teacher (corpus, direction) varying fastest; ids are stable."""
    from attnless.distill import parse_layers

    base_values = spec.base_values()
    base = config_mod.from_dict(base_values, str(spec.preset_path))
    grid = spec.grid
    corpora = grid.get("corpus") or [base.data.corpus]
    directions = grid.get("direction") or [f"{base.data.src}-{base.data.tgt}"]
    layer_values = grid.get("layers") or ["all"]
    preset_name = base.name
    cells: list[Cell] = []
    combos = itertools.product(grid["replace"], grid["size"], layer_values, corpora, directions)
    for replace, size, layers, corpus, direction in combos:
        src, tgt = direction.split("-")
        values = copy.deepcopy(base_values)
        data = values.setdefault("data", {})
        data.update({"corpus": corpus, "src": src, "tgt": tgt})
        cfg = config_mod.from_dict(values, f"{spec.source} (cell {direction})")
        for entry in replace:
            site = entry.partition("=")[0]
            try:
                parse_layers(layers, layer_count(cfg, site))
            except ReplacementError as err:
                raise SpecError(f"{spec.source}: grid.layers: {layers!r}: {err}") from None
        tid = teacher_id(cfg)
        cfg.name = f"{preset_name}-{tid}"
        cfg.run_root = str(runs)
        cfg.dir = None
        cfg.distill.replace = [f"{entry}:{size}" for entry in replace]
        cfg.distill.layers = layers
        cfg.eval.replace = list(cfg.distill.replace)
        cfg.eval.layers = layers
        content = {
            "corpus": corpus,
            "direction": direction,
            "replace": list(replace),
            "size": size,
            "layers": layers,
            "settings": settings(cfg),
        }
        cells.append(
            Cell(
                len(cells), fingerprint(content), corpus, direction, replace, size, layers, tid, cfg
            )
        )
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):  # pragma: no cover - the grid rejects duplicates
        raise SpecError(f"{spec.source}: two cells have the same content")
    return cells


def parse_shard(text: str | None) -> tuple[int, int]:
    """``i/n`` -> (i, n), 0 <= i < n."""
    if not text:
        return 0, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise SpecError(f"--shard {text!r}: expected i/n, e.g. 0/4 (0-based)")
    i, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 0 <= i < n:
        raise SpecError(f"--shard {text!r}: need 0 <= i < n (shards are numbered from 0)")
    return i, n


def shard_cells(cells: list[Cell], shard: tuple[int, int]) -> list[Cell]:
    i, n = shard
    return [c for c in cells if c.index % n == i]


# --------------------------------------------------------------------------- results


def read_results(path: str | Path, warn: Callable[[str], None] | None = None) -> list[dict]:
    """Records of a results file; a corrupt line is skipped with a warning naming it."""
    path = Path(path)
    if not path.exists():
        return []
    warn = warn or log.warning
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
                warn(f"{path}:{number}: corrupt line skipped ({err}): {line.strip()[:80]!r}")
                continue
            records.append(record)
    return records


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Append a record; first end a line a killed writer may have left unterminated."""
    if path.exists() and path.stat().st_size:
        with path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                try:
                    os.write(fd, b"\n")
                finally:
                    os.close(fd)
    append_jsonl(path, record)


# --------------------------------------------------------------------------- parameters


@functools.cache
def student_shape(key: str, size: str, n: int, d_model: int, heads: int) -> tuple[int, int]:
    """(parameters, LayerNorm/bias vector elements) of one student of method ``key`` (one
    layer), built on the meta device, so even XL students cost no memory."""
    import torch

    with torch.device("meta"):
        net = METHODS[key].build(n, d_model, size, {"heads": heads, "causal": True})
    total = vectors = 0
    for name, param in net.named_parameters():
        total += param.numel()
        if "norm" in name or "bias" in name:
            vectors += param.numel()
    return total, vectors


def student_params(key: str, size: str, n: int, d_model: int, heads: int) -> int:
    """Parameters of one student (one layer) of method ``key``."""
    return student_shape(key, size, n, d_model, heads)[0]


@functools.cache
def replaced_params(key: str, d_model: int, heads: int, ffn_dim: int) -> int:
    """Parameters of the teacher module a student of method ``key`` replaces (one layer)."""
    import torch

    from attnless.model import build_model, count_parameters
    from attnless.model.sites import get_module

    cfg = Config()
    cfg.model.d_model, cfg.model.heads, cfg.model.ffn_dim = d_model, heads, ffn_dim
    cfg.model.encoder_layers = cfg.model.decoder_layers = 1
    with torch.device("meta"):
        model = build_model(cfg, 8, 8)
    return count_parameters(get_module(model, METHODS[key].path(0)))


@functools.cache
def teacher_params(d_model: int, heads: int, ffn_dim: int, enc: int, dec: int, vocab: int) -> dict:
    """Teacher parameters: encoder and decoder stacks (no embeddings) and the generator."""
    import torch

    from attnless.model import build_model, count_parameters

    cfg = Config()
    cfg.model.d_model, cfg.model.heads, cfg.model.ffn_dim = d_model, heads, ffn_dim
    cfg.model.encoder_layers, cfg.model.decoder_layers = enc, dec
    with torch.device("meta"):
        model = build_model(cfg, vocab, vocab)

    def body(stack) -> int:
        return sum(p.numel() for n, p in stack.named_parameters() if not n.startswith("embed"))

    return {
        "encoder": body(model.encoder),
        "decoder": body(model.decoder),
        "generator": count_parameters(model.generator),
    }


# --------------------------------------------------------------------------- cost model

# Corpus sizes for estimates before a teacher's run folder exists (then data.json is used).
# Token counts per sentence are for an 8k joint BPE (measured on Multi30k de-en; IWSLT assumed).
CORPUS_SIZES = {
    "multi30k": {"train": 29_000, "valid": 1_014, "test": 1_000, "src": 14.8, "tgt": 14.3},
    "iwslt2017": {"train": 206_112, "valid": 888, "test": 8_079, "src": 24.0, "tgt": 23.0},
    "text": {"train": 100_000, "valid": 1_000, "test": 1_000, "src": 25.0, "tgt": 25.0},
}
IWSLT_FR = {"train": 232_825, "valid": 890, "test": 8_597}
MULTI30K_TESTS = {"test": 1_000, "test_2016_flickr": 1_000, "test_2017_mscoco": 461}


# The paper's teacher (6+6 layers, d 128, 8k vocabulary): decoding rates refer to its size.
REFERENCE_TEACHER_PARAMS = 3_809_600


@dataclass(frozen=True)
class CostModel:
    """Seconds from FLOP counts and effective rates: an estimate, not a measurement.

    - teacher training: ``6 x params x tokens`` FLOPs per epoch (encoder params x source tokens,
      decoder + generator params x target tokens) at ``teacher_flops``, plus 3% validation;
    - distillation: per epoch, one teacher forward pass (``2 x params x tokens``) at
      ``forward_flops``; per student, ``6 x its params`` FLOPs per training sentence (the
      flattened sentence is one input vector) at ``student_flops``, ``vector_seconds`` per
      element of its LayerNorm/bias vectors per sentence (the elementwise work that dominates
      the XS and S students), ``adam_seconds`` per parameter per optimizer step, and a third of
      the per-sentence cost per validation sentence;
    - evaluation: greedy decoding of the test set at ``decode_sentences`` per second for a
      teacher of the paper's size (scaled by teacher parameters), per cell and once per teacher;
    - ``step_overhead`` seconds per optimizer step (kernel launches; matters on GPUs).

    CPU rates were measured on a 2-core AMD EPYC (AVX512-BF16, bf16 autocast) on a shared,
    sometimes busy machine: the paper's teacher trained at 4,170 target tokens/s (9.6e10
    FLOP/s); students' forward + backward ran at 3e11 FLOP/s (ALR-M, batch 256), their
    elementwise work at about 1.2 ns per vector element and sentence, Adam (foreach) at 2.1 ns
    per parameter and step; the teacher's forward pass and greedy decoding (about 200
    sentences/s on Multi30k) are rounded from runs on the busy machine. Rates are scaled
    linearly by the number of threads (optimistic beyond a few cores). The GPU rates are
    assumptions for one H100-class GPU, not measurements.
    """

    device: str
    threads: int
    teacher_flops: float
    forward_flops: float
    student_flops: float
    vector_seconds: float
    adam_seconds: float
    decode_sentences: float
    step_overhead: float

    @classmethod
    def for_machine(cls, device: str = "auto", threads: int | None = None) -> CostModel:
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda"):
            return cls("cuda", 0, 1.0e12, 5.0e12, 2.0e14, 5e-12, 1e-11, 1500.0, 0.02)
        threads = threads or torch.get_num_threads()
        k = threads / 2
        teacher, forward, students, vector, adam, decode = 9.6e10, 8e10, 2.5e11, 1.5e-9, 2.1e-9, 200
        return cls(
            "cpu",
            threads,
            teacher * k,
            forward * k,
            students * k,
            vector / k,
            adam / k,
            decode * k,
            0.0,
        )

    def describe(self) -> str:
        where = f"cpu, {self.threads} threads" if self.device == "cpu" else "one GPU (assumed)"
        return (
            f"{where}: teacher training {self.teacher_flops:.2g} FLOP/s, teacher forward "
            f"{self.forward_flops:.2g} FLOP/s, students {self.student_flops:.2g} FLOP/s + "
            f"{self.vector_seconds:.2g} s per vector element + Adam {self.adam_seconds:.2g} s "
            "per parameter and step, decoding "
            f"{self.decode_sentences:.0f} sentences/s (paper-size teacher)"
        )


def corpus_sizes(cfg: Config, run_dir: Path | None = None) -> dict[str, float]:
    """Train/valid/test sentence counts and tokens per sentence for ``cfg``'s data."""
    d = cfg.data
    sizes = dict(CORPUS_SIZES.get(d.corpus, CORPUS_SIZES["text"]))
    if d.corpus == "iwslt2017" and "fr" in (d.src, d.tgt):
        sizes.update(IWSLT_FR)
    if d.corpus == "multi30k":
        sizes["test"] = MULTI30K_TESTS.get(d.test_set, 1_000)
    stats = read_json(run_dir / "data.json") if run_dir is not None else None
    if isinstance(stats, dict) and stats.get("train_pairs_kept"):
        kept = stats["train_pairs_kept"]
        sizes.update(
            train=kept,
            valid=stats.get("valid_pairs", sizes["valid"]),
            src=stats.get("train_src_tokens", 0) / kept or sizes["src"],
            tgt=stats.get("train_tgt_tokens", 0) / kept or sizes["tgt"],
        )
    else:
        if d.train_subset:
            sizes["train"] = min(sizes["train"], d.train_subset)
        if d.eval_subset:
            sizes["valid"] = min(sizes["valid"], d.eval_subset)
    if d.eval_subset:
        sizes["test"] = min(sizes["test"], d.eval_subset)
    return sizes


class Estimator:
    """Estimated seconds of teachers, student families and cell evaluations."""

    def __init__(self, model: CostModel) -> None:
        self.model = model

    def _teacher_params(self, cfg: Config) -> dict[str, int]:
        m = cfg.model
        return teacher_params(
            m.d_model,
            m.heads,
            m.ffn_dim,
            m.encoder_layers,
            m.decoder_layers,
            cfg.tokenizer.vocab_size,
        )

    def teacher(self, cfg: Config, run_dir: Path | None = None) -> float:
        s = corpus_sizes(cfg, run_dir)
        p = self._teacher_params(cfg)
        per_sentence = 6 * (p["encoder"] * s["src"] + (p["decoder"] + p["generator"]) * s["tgt"])
        steps = s["train"] * s["tgt"] / max(cfg.train.max_tokens / 1.6, 1)  # padding, batch fn
        epochs = cfg.train.epochs
        if cfg.train.max_steps is not None:
            epochs = min(epochs, cfg.train.max_steps / max(steps, 1))
        seconds = 1.03 * epochs * (s["train"] * per_sentence / self.model.teacher_flops)
        seconds += epochs * steps * self.model.step_overhead
        return seconds + self.evaluation(cfg, run_dir)

    def _distill_epochs(self, cfg: Config, sentences: float) -> float:
        d = cfg.distill
        epochs = float(d.epochs)
        if d.max_steps is not None:
            epochs = min(epochs, d.max_steps / max(math.ceil(sentences / d.batch_size), 1))
        return epochs

    def teacher_passes(self, cfg: Config, decoder: bool, run_dir: Path | None = None) -> float:
        """The teacher forward passes of one distillation call (shared by its students)."""
        s = corpus_sizes(cfg, run_dir)
        p = self._teacher_params(cfg)
        per_sentence = 2 * p["encoder"] * s["src"]
        if decoder:
            per_sentence += 2 * p["decoder"] * s["tgt"]
        sentences = s["train"] + (s["valid"] if cfg.distill.validate_every_epoch else 0)
        epochs = self._distill_epochs(cfg, s["train"])
        return epochs * sentences * per_sentence / self.model.forward_flops

    def family(self, cfg: Config, family: tuple[str, str, str], layers: int, run_dir=None) -> float:
        """Distilling one (site, method, size) at ``layers`` layers, without teacher passes."""
        site, method, size = family
        s = corpus_sizes(cfg, run_dir)
        m = cfg.model
        params, vectors = student_shape(f"{site}={method}", size, cfg.distill.n, m.d_model, m.heads)
        per_sentence = 6 * params / self.model.student_flops + vectors * self.model.vector_seconds
        epochs = self._distill_epochs(cfg, s["train"])
        valid = s["valid"] if cfg.distill.validate_every_epoch else 0
        steps = epochs * math.ceil(s["train"] / cfg.distill.batch_size) * layers
        per_step = self.model.step_overhead + params * self.model.adam_seconds
        return epochs * layers * per_sentence * (s["train"] + valid / 3) + steps * per_step

    def evaluation(self, cfg: Config, run_dir: Path | None = None, flops: float = 0) -> float:
        """Greedy decoding of the test set(s), plus ``flops`` per sentence for students."""
        s = corpus_sizes(cfg, run_dir)
        p = self._teacher_params(cfg)
        rate = self.model.decode_sentences * REFERENCE_TEACHER_PARAMS / max(sum(p.values()), 1)
        sentences = s["test"] * len(cfg.eval.splits)
        return sentences / rate + sentences * flops / self.model.student_flops

    def cell_eval(self, cell: Cell) -> float:
        cfg = cell.config
        m = cfg.model
        flops = 0.0
        for (site, method, size), layers in cell.families().items():
            p = student_params(f"{site}={method}", size, cfg.distill.n, m.d_model, m.heads)
            # decoder-side students also run one position per decoding step
            flops += 2 * p * len(layers) * (1.0 if site == "encoder.self" else 1.4)
        return self.evaluation(cfg, None, flops)


@dataclass
class Plan:
    """What a sweep (or one shard) still has to do, with estimated seconds."""

    cells: list[Cell]
    done: set[str]
    teachers: dict[Path, float]  # run folder -> seconds (0 when trained)
    families: dict[tuple[Path, tuple[str, str, str]], float]  # seconds (0 when distilled)
    students: dict[tuple[Path, tuple[str, str, str]], int]  # students (layers) per family
    passes: dict[Path, float]  # teacher passes of distillation, per teacher
    evals: dict[str, float]  # cell id -> seconds
    cell_seconds: dict[str, float]  # each cell's share of everything it needs

    @property
    def pending(self) -> list[Cell]:
        return [c for c in self.cells if c.id not in self.done]

    def total(self) -> float:
        return (
            sum(self.teachers.values())
            + sum(self.families.values())
            + sum(self.passes.values())
            + sum(self.evals.values())
        )


def make_plan(
    cells: list[Cell], done: set[str], teacher_steps: dict[str, int | None], model: CostModel
) -> Plan:
    """Estimate the work left; ``teacher_steps``: teacher id -> step, for trained teachers."""
    est = Estimator(model)
    pending = [c for c in cells if c.id not in done]
    teachers: dict[Path, float] = {}
    needed: dict[tuple[Path, tuple[str, str, str]], set[int]] = {}
    users: dict[tuple[Path, tuple[str, str, str]], list[Cell]] = {}
    config_of: dict[Path, Cell] = {}
    for cell in pending:
        run_dir = cell.teacher_dir
        config_of.setdefault(run_dir, cell)
        if run_dir not in teachers:
            trained = cell.teacher in teacher_steps or (run_dir / "eval" / "teacher").is_dir()
            teachers[run_dir] = 0.0 if trained else est.teacher(cell.config, run_dir)
        for fam, layers in cell.families().items():
            needed.setdefault((run_dir, fam), set()).update(layers)
            users.setdefault((run_dir, fam), []).append(cell)
    families: dict[tuple[Path, tuple[str, str, str]], float] = {}
    students: dict[tuple[Path, tuple[str, str, str]], int] = {}
    decoder_side: dict[Path, bool] = {}
    for (run_dir, fam), layers in needed.items():
        cell = config_of[run_dir]
        step = teacher_steps.get(cell.teacher)
        wanted = distill_settings(cell.config)
        if family_done(run_dir, fam, sorted(layers), wanted, step):
            families[(run_dir, fam)] = 0.0
            continue
        families[(run_dir, fam)] = est.family(cell.config, fam, len(layers), run_dir)
        students[(run_dir, fam)] = len(layers)
        decoder_side[run_dir] = decoder_side.get(run_dir, False) or fam[0] != "encoder.self"
    passes = {
        run_dir: est.teacher_passes(config_of[run_dir].config, decoder, run_dir)
        for run_dir, decoder in decoder_side.items()
    }
    evals = {c.id: est.cell_eval(c) for c in pending}
    per_teacher: dict[Path, int] = {}
    for c in pending:
        per_teacher[c.teacher_dir] = per_teacher.get(c.teacher_dir, 0) + 1
    cell_seconds = {}
    for c in pending:
        run_dir = c.teacher_dir
        share = evals[c.id]
        share += (teachers[run_dir] + passes.get(run_dir, 0.0)) / per_teacher[run_dir]
        for fam in c.families():
            share += families[(run_dir, fam)] / len(users[(run_dir, fam)])
        cell_seconds[c.id] = share
    return Plan(cells, done, teachers, families, students, passes, evals, cell_seconds)


def fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours / 24:.1f} days"


# --------------------------------------------------------------------------- students


def distill_settings(cfg: Config) -> dict[str, Any]:
    """What decides a student's training (a finished student is reused only if these match)."""
    d = cfg.to_dict()["distill"]
    for key in ("replace", "layers", "progress", "log_every", "validate_every_epoch"):
        d.pop(key, None)
    return {"distill": d, "seed": cfg.seed, "precision": cfg.train.precision}


# weights, gradients and Adam's two moments in fp32
BYTES_PER_STUDENT_PARAM = 16


def memory_budget(device: str = "auto") -> int:
    """Bytes the students of one distill call may use: ``$ATTNLESS_DISTILL_MEMORY_GB``, else
    half of the GPU's memory (CUDA) or of the machine's RAM."""
    env = os.environ.get("ATTNLESS_DISTILL_MEMORY_GB")
    if env:
        return int(float(env) * 2**30)
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_properties(0).total_memory // 2
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def family_dir(run_dir: Path, family: tuple[str, str, str]) -> Path:
    site, method, size = family
    return run_dir / "students" / site / f"{method}-{size}"


def family_lock(run_dir: Path, family: tuple[str, str, str]) -> FileLock:
    folder = family_dir(run_dir, family)
    return FileLock(folder.with_name(folder.name + ".lock"), f"students {'/'.join(family)}")


def family_done(
    run_dir: Path,
    family: tuple[str, str, str],
    layers: list[int],
    wanted: dict[str, Any],
    teacher_step: int | None = None,
) -> bool:
    """Whether a sweep already distilled this family at ``layers`` with these settings (from
    the teacher checkpoint at ``teacher_step``, when given)."""
    folder = family_dir(run_dir, family)
    marker = read_json_quiet(folder / "sweep.json")
    if not marker or marker.get("settings") != wanted:
        return False
    if teacher_step is not None and marker.get("teacher_step") != teacher_step:
        return False
    if not set(layers) <= set(marker.get("layers", [])):
        return False
    return all((folder / f"layer{i}.pt").is_file() for i in layers)


def read_json_quiet(path: Path) -> Any:
    try:
        return read_json(path)
    except ValueError:
        return None


# --------------------------------------------------------------------------- running


class Sweep:
    """Runs the cells of one shard of a spec; see the module docstring."""

    def __init__(
        self,
        spec: Spec,
        out: str | Path | None = None,
        runs: str | Path | None = None,
        shard: tuple[int, int] = (0, 1),
        progress: bool = True,
        poll: float | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.out = Path(out) if out is not None else Path("sweeps") / spec.name
        self.runs = Path(runs) if runs is not None else self.out.parent / "runs"
        self.shard = shard
        self.progress = progress
        self.poll = (
            poll if poll is not None else float(os.environ.get("ATTNLESS_SWEEP_POLL_S", "5"))
        )
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.cells = expand(spec, self.runs)
        self.mine = shard_cells(self.cells, shard)
        self.results_path = self.out / "results.jsonl"

    # ---------------------------------------------------------------- state

    def records(self) -> list[dict[str, Any]]:
        return read_results(self.results_path)

    def done_ids(self, records: list[dict] | None = None) -> set[str]:
        records = self.records() if records is None else records
        return {r.get("cell_id") for r in records if r.get("kind") == "cell"}

    def teacher_records(self, records: list[dict] | None = None) -> dict[str, dict]:
        records = self.records() if records is None else records
        return {r.get("teacher_id"): r for r in records if r.get("kind") == "teacher"}

    def teacher_steps(self, records: list[dict] | None = None) -> dict[str, int | None]:
        return {tid: r.get("step") for tid, r in self.teacher_records(records).items()}

    def cost_model(self) -> CostModel:
        return CostModel.for_machine(self.cells[0].config.train.device if self.cells else "auto")

    def plan(self, model: CostModel | None = None) -> Plan:
        records = self.records()
        model = model or self.cost_model()
        return make_plan(self.mine, self.done_ids(records), self.teacher_steps(records), model)

    # ---------------------------------------------------------------- dry run

    def dry_run(self, model: CostModel | None = None) -> str:
        model = model or self.cost_model()
        plan = self.plan(model)
        i, n = self.shard
        lines = [
            f"sweep {self.spec.name}: {len(self.cells)} cells, preset {self.spec.preset} "
            f"({self.spec.preset_path})"
            + (f", shard {i}/{n}: {len(self.mine)} cells" if n > 1 else ""),
            f"results: {self.results_path}   teachers: {self.runs}",
        ]
        if self.spec.overrides:
            lines.append("overrides: " + " ".join(f"--set {o}" for o in self.spec.overrides))
        header = f"{'#':>4}  {'cell':12}  {'status':7}  {'corpus':9}  {'dir':5}  "
        header += f"{'replace':32}  {'size':4}  {'layers':8}  {'est.':>8}"
        lines += ["", header]
        for cell in self.mine:
            status = "done" if cell.id in plan.done else "pending"
            est = fmt_seconds(plan.cell_seconds[cell.id]) if status == "pending" else "-"
            lines.append(
                f"{cell.index:>4}  {cell.id:12}  {status:7}  {cell.corpus:9}  "
                f"{cell.direction:5}  {'+'.join(cell.replace):32}  {cell.size:4}  "
                f"{cell.layers:8}  {est:>8}"
            )
        to_train = [d for d, s in plan.teachers.items() if s > 0]
        to_distill = [k for k, s in plan.families.items() if s > 0]
        students = sum(plan.students.values())
        lines += [
            "",
            f"done {len(self.mine) - len(plan.pending)}/{len(self.mine)}; to do: "
            f"{len(to_train)} teacher(s) to train, {len(to_distill)} student families "
            f"({students} students) to distil, {len(plan.pending)} cells to evaluate",
            f"estimate: teachers {fmt_seconds(sum(plan.teachers.values()))}, distillation "
            f"{fmt_seconds(sum(plan.families.values()))} (+ teacher passes "
            f"{fmt_seconds(sum(plan.passes.values()))}), evaluation "
            f"{fmt_seconds(sum(plan.evals.values()))}; total {fmt_seconds(plan.total())}",
            f"(an estimate from FLOP counts, not a measurement; cost model: {model.describe()})",
        ]
        return "\n".join(lines)

    # ---------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        """Run every pending cell of this shard; returns counts."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_text(self.out / "spec.yaml", yaml.safe_dump(self.spec.to_dict(), sort_keys=False))
        previous = _install_sigterm()
        try:
            return self._run()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _run(self) -> dict[str, Any]:
        records = self.records()
        done = self.done_ids(records)
        pending = [c for c in self.mine if c.id not in done]
        i, n = self.shard
        where = f" (shard {i}/{n})" if n > 1 else ""
        self.say(
            f"sweep {self.spec.name}{where}: {len(self.mine)} cells, "
            f"{len(self.mine) - len(pending)} finished (skipped), {len(pending)} to run; "
            f"results in {self.results_path}"
        )
        self.counts = {"cells": len(self.mine), "skipped": len(self.mine) - len(pending)}
        self.counts.update(evaluated=0, busy=0)
        if not pending:
            return self.counts
        plan = make_plan(self.mine, done, self.teacher_steps(records), self.cost_model())
        self._clock = {"start": time.monotonic(), "estimated_done": 0.0, "plan": plan}
        self._finished = len(self.mine) - len(pending)
        groups: dict[Path, list[Cell]] = {}
        for cell in pending:
            groups.setdefault(cell.teacher_dir, []).append(cell)
        _in_turn(
            list(groups.values()),
            lambda group: self._teacher_lock(group[0]),
            self._run_group,
            self.poll,
        )
        return self.counts

    def _teacher_lock(self, cell: Cell) -> FileLock:
        run_dir = cell.teacher_dir
        return FileLock(run_dir.with_name(run_dir.name + ".lock"), f"teacher {run_dir}")

    def _run_group(self, group: list[Cell], lock: FileLock) -> None:
        cell = group[0]
        teacher = self._ensure_teacher(cell)
        lock.release()
        students = self._ensure_students(group, teacher)
        for cell in group:
            self._evaluate(cell, teacher, students)

    # ---------------------------------------------------------------- teacher

    def _ensure_teacher(self, cell: Cell) -> dict[str, Any]:
        from attnless.evaluate import teacher_scores
        from attnless.train import train

        known = self.teacher_records().get(cell.teacher)
        if known is not None:
            return known
        cfg = cell.config
        self.say(f"teacher {cell.corpus} {cell.direction}: {cfg.run_dir()}")
        start = time.perf_counter()
        summary = train(cfg, progress=self.progress)
        trained = time.perf_counter() - start
        which = cfg.distill.teacher_checkpoint
        scores = {s: teacher_scores(cfg, s, which, self.progress) for s in cfg.eval.splits}
        main = scores[cfg.eval.splits[0]]
        record = {
            "kind": "teacher",
            "teacher_id": cell.teacher,
            "sweep": self.spec.name,
            "preset": self.spec.preset,
            "corpus": cell.corpus,
            "direction": cell.direction,
            "run_dir": str(cfg.run_dir()),
            "checkpoint": which,
            "step": main.get("step", summary["step"]),
            "epochs": summary["epoch"],
            "params": summary["params"],
            "device": summary["device"],
            "precision": summary["precision"],
            "tokens_per_s": summary["tokens_per_s"],
            "train_seconds": summary["train_seconds"],
            "wall_seconds": time.perf_counter() - start,
            "train_wall_seconds": trained,
            **_metrics(main),
            "scores": {s: _metrics(v) for s, v in scores.items()},
            "seed": cfg.seed,
            "config": _config_record(cfg),
            "versions": versions(),
            "finished_at": _now(),
            "host": HOST,
            "pid": os.getpid(),
        }
        if cell.teacher not in self.teacher_records():  # we hold the teacher lock
            append_result(self.results_path, record)
        self.say(
            f"teacher {cell.corpus} {cell.direction}: BLEU {record['bleu']:.2f} on "
            f"{record['test_set']} (trained {fmt_seconds(record['train_seconds'])})"
        )
        self._advance_estimate(self._clock["plan"].teachers.get(cfg.run_dir(), 0.0))
        return record

    # ---------------------------------------------------------------- students

    def _ensure_students(self, group: list[Cell], teacher: dict[str, Any]) -> dict:
        """Distil every student the cells of ``group`` need; returns the family markers."""
        cfg = group[0].config
        run_dir = cfg.run_dir()
        wanted = distill_settings(cfg)
        step = teacher.get("step")
        needed: dict[tuple[str, str, str], set[int]] = {}
        for cell in group:
            for fam, layers in cell.families().items():
                needed.setdefault(fam, set()).update(layers)
        remaining = {fam: sorted(layers) for fam, layers in needed.items()}
        announced: set[str] = set()
        while remaining:
            taken: dict[tuple[str, str, str], FileLock] = {}
            try:
                for fam in list(remaining):
                    if family_done(run_dir, fam, remaining[fam], wanted, step):
                        del remaining[fam]
                        continue
                    lock = family_lock(run_dir, fam)
                    if not lock.try_acquire():
                        info, _ = lock.read()
                        holder = describe_holder(info)
                        if holder not in announced:
                            self.say(f"students {'/'.join(fam)}: being distilled by {holder}")
                            announced.add(holder)
                        continue
                    taken[fam] = lock
                    if family_done(run_dir, fam, remaining[fam], wanted, step):
                        lock.release()
                        del taken[fam], remaining[fam]
                if taken:
                    self._distill(cfg, {fam: remaining[fam] for fam in taken}, wanted, step)
                    for fam in taken:
                        del remaining[fam]
            finally:
                for lock in taken.values():
                    lock.release()
            if remaining and not taken:
                time.sleep(self.poll)
        return {
            fam: read_json_quiet(family_dir(run_dir, fam) / "sweep.json") or {} for fam in needed
        }

    def _distill(
        self,
        cfg: Config,
        families: dict[tuple[str, str, str], list[int]],
        wanted: dict,
        teacher_step: int | None,
    ) -> None:
        from attnless.distill import distill

        for layers, fams in self._distill_calls(cfg, families):
            methods: dict[tuple[str, str], list[str]] = {}
            for site, method, size in fams:
                methods.setdefault((site, method), []).append(size)
            dcfg = copy.deepcopy(cfg)
            dcfg.distill.replace = [
                f"{site}={method}:{','.join(sizes)}" for (site, method), sizes in methods.items()
            ]
            dcfg.distill.layers = ",".join(map(str, layers))
            count = len(fams) * len(layers)
            self.say(
                f"distilling {count} students ({', '.join(dcfg.distill.replace)}; layers "
                f"{dcfg.distill.layers}) in {cfg.run_dir()}"
            )
            call = uuid.uuid4().hex[:12]
            start = time.perf_counter()
            distill(dcfg, progress=self.progress)
            seconds = time.perf_counter() - start
            for fam in fams:
                folder = family_dir(cfg.run_dir(), fam)
                old = read_json_quiet(folder / "sweep.json") or {}
                merged = set(layers)
                if old.get("settings") == wanted and old.get("teacher_step") == teacher_step:
                    merged |= set(old.get("layers", []))
                write_json(
                    folder / "sweep.json",
                    {
                        "family": list(fam),
                        "layers": sorted(merged),
                        "settings": wanted,
                        "teacher_step": teacher_step,
                        "call": call,
                        "seconds": seconds,
                        "students_in_call": count,
                        "finished_at": _now(),
                    },
                )
                cost = self._clock["plan"].families.get((cfg.run_dir(), fam), 0.0)
                self._advance_estimate(cost)
            self._advance_estimate(self._clock["plan"].passes.pop(cfg.run_dir(), 0.0))

    def _distill_calls(
        self, cfg: Config, families: dict[tuple[str, str, str], list[int]]
    ) -> list[tuple[list[int], list[tuple[str, str, str]]]]:
        """Split the families into distill calls: one per distinct layer set, further split
        (largest first, first fit) so the students of one call fit ``memory_budget()``."""
        budget = memory_budget(cfg.train.device)
        m = cfg.model
        calls = []
        by_layers: dict[tuple[int, ...], list[tuple[str, str, str]]] = {}
        for fam, layers in families.items():
            by_layers.setdefault(tuple(layers), []).append(fam)
        for layers, fams in by_layers.items():

            def need(fam: tuple[str, str, str], count: int = len(layers)) -> int:
                site, method, size = fam
                params = student_params(f"{site}={method}", size, cfg.distill.n, m.d_model, m.heads)
                return params * count * BYTES_PER_STUDENT_PARAM

            bins: list[tuple[int, list[tuple[str, str, str]]]] = []
            for fam in sorted(fams, key=need, reverse=True):
                for i, (used, members) in enumerate(bins):
                    if used + need(fam) <= budget:
                        bins[i] = (used + need(fam), members + [fam])
                        break
                else:
                    bins.append((need(fam), [fam]))
            if len(bins) > 1:
                self.say(
                    f"the students of layers {list(layers)} need "
                    f"{sum(u for u, _ in bins) / 2**30:.1f} GiB, more than the budget of "
                    f"{budget / 2**30:.1f} GiB: {len(bins)} distillation calls"
                )
            calls += [(list(layers), sorted(members)) for _, members in bins]
        return calls

    # ---------------------------------------------------------------- cells

    def _evaluate(self, cell: Cell, teacher: dict[str, Any], students: dict) -> None:
        from attnless.evaluate import evaluate

        lock = FileLock(self.out / "locks" / f"{cell.id}.lock", f"cell {cell.id}")
        if not lock.try_acquire():
            info, _ = lock.read()
            self.say(
                f"cell {cell.id} ({cell.title()}): being run by {describe_holder(info)}; skipped"
            )
            self.counts["busy"] += 1
            return
        try:
            if cell.id in self.done_ids():
                return
            start = time.perf_counter()
            results = evaluate(cell.config, progress=self.progress)
            eval_seconds = time.perf_counter() - start
            record = self._cell_record(cell, teacher, students, results, eval_seconds)
            append_result(self.results_path, record)
        finally:
            lock.release()
        self.counts["evaluated"] += 1
        self._finished += 1
        self._advance_estimate(self._clock["plan"].evals.get(cell.id, 0.0))
        elapsed = time.monotonic() - self._clock["start"]
        eta = self._eta(elapsed)
        rel = record.get("relative_bleu")
        self.say(
            f"[{self._finished}/{len(self.mine)}] {cell.title()}: BLEU {record['bleu']:.2f}"
            + (f" ({rel:.1f}% of the teacher's {record['teacher_bleu']:.2f})" if rel else "")
            + f"  elapsed {fmt_seconds(elapsed)}, eta {eta}"
        )

    def _cell_record(self, cell, teacher, students, results, eval_seconds) -> dict[str, Any]:
        main = results[0]
        calls: dict[str, float] = {}
        fam_info = {}
        for fam in cell.families():
            marker = students.get(fam) or {}
            fam_info["/".join(fam)] = {
                k: marker.get(k) for k in ("call", "seconds", "students_in_call", "layers")
            }
            if marker.get("call"):
                calls[marker["call"]] = marker.get("seconds", 0.0)
        return {
            "kind": "cell",
            "cell_id": cell.id,
            "sweep": self.spec.name,
            "preset": self.spec.preset,
            "index": cell.index,
            **cell.grid_values(),
            "variant": cell.label,
            "teacher_id": cell.teacher,
            "run_dir": str(cell.teacher_dir),
            "hybrid": main.get("variant"),
            **_metrics(main),
            "teacher_bleu": main.get("teacher_bleu"),
            "teacher_chrf": main.get("teacher_chrf"),
            "relative_bleu": main.get("relative_bleu"),
            "scores": {r["split"]: _metrics(r, hybrid=True) for r in results},
            "student_params": main.get("student_params"),
            "replaced_params": main.get("replaced_params"),
            "params_ratio": main.get("params_ratio"),
            "replacements": main.get("replacements"),
            "n": main.get("n"),
            "teacher_fallback": main.get("teacher_fallback"),
            "length_capped": main.get("length_capped"),
            "sentences_per_s": main.get("sentences_per_s"),
            "teacher_sentences_per_s": main.get("teacher_sentences_per_s"),
            "times": {
                "teacher_train_seconds": teacher.get("train_seconds"),
                "distill_seconds": sum(calls.values()),
                "distill_calls": fam_info,
                "eval_seconds": eval_seconds,
            },
            "seed": cell.config.seed,
            "config": _config_record(cell.config),
            "versions": main.get("versions") or versions(),
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "finished_at": _now(),
            "host": HOST,
            "pid": os.getpid(),
        }

    # ---------------------------------------------------------------- ETA

    def _advance_estimate(self, seconds: float) -> None:
        self._clock["estimated_done"] += seconds

    def _eta(self, elapsed: float) -> str:
        plan: Plan = self._clock["plan"]
        remaining = max(plan.total() - self._clock["estimated_done"], 0.0)
        done = self._clock["estimated_done"]
        factor = elapsed / done if done > 0 else 1.0
        return fmt_seconds(remaining * factor)


def _in_turn(items: list, lock_for: Callable, work: Callable, poll: float) -> None:
    """Do ``work(item, lock)`` for every item once its lock is ours; busy items wait their turn
    (other items go first), and each holder we wait for is named once."""
    pending = list(items)
    announced: set[tuple[str, str]] = set()
    while pending:
        took = False
        for item in list(pending):
            lock = lock_for(item)
            if not lock.try_acquire():
                continue
            took = True
            pending.remove(item)
            try:
                work(item, lock)
            finally:
                lock.release()
        if pending and not took:
            for item in pending:
                lock = lock_for(item)
                info, _ = lock.read()
                holder = describe_holder(info)
                if info is not None and (lock.what, holder) not in announced:
                    announced.add((lock.what, holder))
                    log.warning("waiting for %s: held by %s", lock.what, holder)
            time.sleep(poll)


def _metrics(result: dict[str, Any], hybrid: bool = False) -> dict[str, Any]:
    keys = ["split", "test_set", "bleu", "chrf", "bleu_signature", "chrf_signature"]
    keys += ["sentences", "sentences_per_s"]
    if hybrid:
        keys += ["teacher_bleu", "teacher_chrf", "relative_bleu", "teacher_fallback"]
        keys += ["length_capped"]
    return {k: result.get(k) for k in keys if k in result}


def _config_record(cfg: Config) -> dict[str, Any]:
    values = cfg.to_dict()
    values.pop("dir", None)
    return values


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _install_sigterm():
    """Turn SIGTERM (SLURM's time limit, ``kill``) into SystemExit so locks are released."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def sweep(
    spec: Spec,
    out: str | Path | None = None,
    runs: str | Path | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or continue) a sweep; see the module docstring."""
    return Sweep(spec, out, runs, shard, progress).run()


def iter_specs(folder: str | Path = "experiments") -> Iterator[Path]:
    """Spec files in ``folder`` (YAML files with a ``grid`` key)."""
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(values, dict) and "grid" in values:
            yield path
