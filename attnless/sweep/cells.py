"""Sweep cells: expanding a spec's grid into cells with stable ids, and sharding them."""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnless import config as config_mod
from attnless.config import Config
from attnless.model.sites import ReplacementError
from attnless.prepare import FREE_KEYS
from attnless.replacement import ALL, Family, LayerSet, Replacement, to_config
from attnless.results import variant_label
from attnless.runs import fingerprint
from attnless.sweep.spec import SWEEP_KEYS, Spec, SpecError

# Settings that say where and how verbosely a job runs, not what it computes (besides the
# runtime section, which is all such settings).
OPERATIONAL = (
    "name",
    "dir",
    "run_root",
    "data.data_dir",
    "train.progress",
    "train.log_every",
    "train.save_every",
    "distill.progress",
    "distill.log_every",
    "decode.batch_tokens",
)
TEACHER_SECTIONS = ("data", "tokenizer", "model", "train")

_SAME = object()  # marks a value equal to its default


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


def _drop(values: dict[str, Any], keys: tuple[str, ...] | set[str]) -> dict[str, Any]:
    """A deep copy of ``values`` without the dotted ``keys``."""
    out = copy.deepcopy(values)
    for key in keys:
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def settings(
    cfg: Config, sections: tuple[str, ...] | None = None, drop: tuple[str, ...] | set[str] = ()
) -> dict[str, Any]:
    """The non-default, non-operational settings of ``cfg`` (optionally only some sections,
    without the dotted keys ``drop``)."""
    values = _drop(cfg.to_dict(), {"runtime", *OPERATIONAL, *SWEEP_KEYS, *drop})
    defaults = Config().to_dict()
    if sections is not None:
        values = {k: v for k, v in values.items() if k in sections or k == "seed"}
    diff = _nondefault(values, defaults)
    return {} if diff is _SAME else diff


def teacher_id(cfg: Config) -> str:
    """A hash of everything that defines a teacher: data, tokenizer, model, training, seed;
    not what is evaluated (:data:`attnless.prepare.FREE_KEYS`: the test set, its grouping and
    subset), so cells that only test differently share the teacher and its students."""
    pair = [cfg.data.corpus, cfg.data.src, cfg.data.tgt]
    values = settings(cfg, TEACHER_SECTIONS, FREE_KEYS)
    return fingerprint({"pair": pair, "settings": values}, 8)


def layer_count(cfg: Config, site: str) -> int:
    """The number of layers that have ``site`` (encoder or decoder layers)."""
    return cfg.model.encoder_layers if site.startswith("encoder") else cfg.model.decoder_layers


@dataclass
class Cell:
    """One combination of grid values, with the resolved config that runs it."""

    index: int
    id: str
    corpus: str
    direction: str
    replace: tuple[Replacement, ...]  # the variant: its sites and methods, without sizes
    size: str
    layers: LayerSet
    teacher: str  # teacher id
    config: Config = field(repr=False, compare=False)
    test_group: int = 1  # data.test_group: the test split's pairs joined k at a time
    overrides: tuple[str, ...] = ()  # its grid's "set" (on top of the spec's)

    @property
    def replacements(self) -> tuple[Replacement, ...]:
        """The variant's replacements, of the cell's size."""
        return tuple(r.with_sizes(self.size) for r in self.replace)

    @property
    def variant(self) -> str:
        """The variant as ``--only replace=`` names it: ``site=method`` joined by ``+``."""
        return "+".join(r.key for r in self.replace)

    @property
    def described(self) -> str:
        """The variant with its grid's overrides, if any (``decoder.cross=alr
        [distill.cross_causal=false]``)."""
        return self.variant + (f" [{', '.join(self.overrides)}]" if self.overrides else "")

    @property
    def label(self) -> str:
        return variant_label(self.replace, self.config.distill.cross_causal)

    @property
    def teacher_dir(self) -> Path:
        return self.config.run_dir()

    def grid_values(self) -> dict[str, Any]:
        """The cell's grid values (``test_group`` only when not 1, so cells without grouping
        keep the ids they had before the key existed)."""
        values = {
            "corpus": self.corpus,
            "direction": self.direction,
            "replace": [r.key for r in self.replace],
            "size": self.size,
            "layers": str(self.layers),
        }
        if self.test_group != 1:
            values["test_group"] = self.test_group
        return values

    def families(self) -> dict[Family, list[int]]:
        """(site, method, size) -> the layers this cell needs students for."""
        return {
            family: self.layers.resolve(layer_count(self.config, r.site))
            for r in self.replacements
            for family in r.families()
        }

    def title(self) -> str:
        text = f"{self.corpus} {self.direction} {self.label} {self.size} layers {self.layers}"
        if self.test_group != 1:
            text += f", test pairs in groups of {self.test_group}"
        if self.overrides:
            text += f", {', '.join(self.overrides)}"
        return text


def expand(spec: Spec, runs: str | Path = "sweeps/runs") -> list[Cell]:
    """All cells of ``spec``, teacher (corpus, direction) varying fastest; ids are stable. A
    list of grids gives the cells of each grid in turn, a cell an earlier grid has (same id)
    once."""
    base_values = spec.base_values()
    base = config_mod.from_dict(base_values, str(spec.preset_path))
    preset_name = base.name
    cells: list[Cell] = []
    seen: set[str] = set()
    for i, grid in enumerate(spec.grids):
        where = f"{spec.source}: grid[{i}]" if spec.listed else f"{spec.source}: grid"
        corpora = grid.get("corpus") or [base.data.corpus]
        directions = grid.get("direction") or [f"{base.data.src}-{base.data.tgt}"]
        layer_values = grid.get("layers") or [ALL]
        groups = grid.get("test_group") or [base.data.test_group]
        combos = itertools.product(
            grid["replace"], grid["size"], layer_values, groups, corpora, directions
        )
        for replace, size, layers, group, corpus, direction in combos:
            src, tgt = direction.split("-")
            values = config_mod.apply_overrides(base_values, grid.get("set") or [])
            data = values.setdefault("data", {})
            data.update({"corpus": corpus, "src": src, "tgt": tgt, "test_group": group})
            cfg = config_mod.from_dict(values, f"{spec.source} (cell {direction})")
            for r in replace:
                try:
                    layers.resolve(layer_count(cfg, r.site))
                except ReplacementError as err:
                    raise SpecError(f"{where}.layers: {str(layers)!r}: {err}") from None
            tid = teacher_id(cfg)
            cfg.name = f"{preset_name}-{tid}"
            cfg.run_root = str(runs)
            cfg.dir = None
            own = tuple(grid.get("set") or ())  # the grid's own overrides
            cell = Cell(
                len(cells), "", corpus, direction, replace, size, layers, tid, cfg, group, own
            )
            to_config(cfg.distill, cell.replacements, layers)  # the config a results line records
            to_config(cfg.eval, cell.replacements, layers)
            # the id hashes the grid values as text (the spec's spelling, canonical for layers)
            cell.id = fingerprint({**cell.grid_values(), "settings": settings(cfg)})
            if cell.id not in seen:  # a cell of an earlier grid: kept once, where it came first
                seen.add(cell.id)
                cells.append(cell)
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
    """The cells of shard ``(i, n)``: indices i, i+n, i+2n, ..."""
    i, n = shard
    return [c for c in cells if c.index % n == i]


FILTER_KEYS = ("corpus", "direction", "replace", "size", "layers", "test_group", "cell")


def filter_cells(cells: list[Cell], only: list[str]) -> list[Cell]:
    """The cells matching every ``key=value[,value]`` of ``only`` (keys: corpus, direction,
    replace, size, layers, test_group, cell; ``replace`` values join a variant's entries with
    ``+``, e.g. ``replace=encoder.self=alr``; ``cell`` takes ids as ``--dry-run`` lists them).
    Cell ids do not change, so a filtered run fills the same ledger as the whole sweep."""
    wanted: dict[str, set[str]] = {}
    for text in only:
        key, eq, values = text.partition("=")
        key = key.strip()
        if not eq or key not in FILTER_KEYS or not values.strip():
            raise SpecError(
                f"--only {text!r}: expected key=value[,value] with key one of "
                f"{', '.join(FILTER_KEYS)}, e.g. direction=de-en"
            )
        wanted.setdefault(key, set()).update(v.strip() for v in values.split(","))

    if "layers" in wanted:  # any spelling of the cells' layer sets
        wanted["layers"] = {str(LayerSet.parse(v, "--only layers")) for v in wanted["layers"]}
    if "test_group" in wanted:  # 02 is 2
        wanted["test_group"] = {str(int(v)) if v.isdigit() else v for v in wanted["test_group"]}

    def value(cell: Cell, key: str) -> str:
        if key == "cell":
            return cell.id
        return cell.variant if key == "replace" else str(getattr(cell, key))

    kept = [c for c in cells if all(value(c, k) in v for k, v in wanted.items())]
    for key, values in wanted.items():
        known = {value(c, key) for c in cells}
        unknown = sorted(values - known)
        if unknown:
            raise SpecError(
                f"--only {key}={','.join(unknown)}: no cell has it; the sweep has "
                f"{', '.join(sorted(known))}"
            )
    return kept
