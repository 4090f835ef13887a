"""Sweep specs: the schema, its validation and the preset a spec names."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnless import config as config_mod
from attnless.config import Config, ConfigError
from attnless.model.sites import METHODS, SITES, SIZES, ReplacementError, get_method
from attnless.replacement import LayerSet, Replacement

SPEC_KEYS = ("name", "description", "preset", "grid", "set")
GRID_KEYS = ("corpus", "direction", "replace", "size", "layers")
REQUIRED_GRID = ("replace", "size")
GRID_EXAMPLES = {
    "corpus": "[multi30k]",
    "direction": "[de-en, en-de]",
    "replace": "[[encoder.self=alr]]",
    "size": "[XS, S, M, L]",
    "layers": "[all]",
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DIRECTION_RE = re.compile(r"^([a-z]{2,3})-([a-z]{2,3})$")
# Keys the sweep sets itself; a --set on them would fight the grid.
SWEEP_KEYS = (
    "name",
    "dir",
    "run_root",
    "distill.replace",
    "distill.layers",
    "eval.replace",
    "eval.layers",
)
GRID_CONFIG_KEYS = {"corpus": ("data.corpus",), "direction": ("data.src", "data.tgt")}
REPO = Path(__file__).resolve().parents[2]


class SpecError(ConfigError):
    """A sweep spec (or a --shard / --preset argument) is invalid."""


@dataclass
class Spec:
    """A validated spec: its preset, normalised grid and ``--set`` overrides."""

    name: str
    preset: str
    preset_path: Path
    grid: dict[str, list[Any]]
    overrides: list[str]
    description: str = ""
    source: str = "<spec>"

    def to_dict(self) -> dict[str, Any]:
        grid = {k: [_plain(v) for v in vs] for k, vs in self.grid.items()}
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out.update({"preset": self.preset, "grid": grid, "set": list(self.overrides)})
        return out

    def base_values(self) -> dict[str, Any]:
        return config_mod.apply_overrides(config_mod.read_yaml(self.preset_path), self.overrides)

    def base_config(self) -> Config:
        """The preset with the overrides; an error names the override or the preset."""
        values = config_mod.read_yaml(self.preset_path)
        return config_mod.from_dict(values, str(self.preset_path), self.overrides)


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
    """``value`` checked to be a non-empty list without repeated items."""
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


def _plain(value: Any) -> Any:
    """A grid value as YAML writes it: a variant as a list of ``site=method``, layers as text."""
    if isinstance(value, tuple):
        return [str(v) for v in value]
    return str(value) if isinstance(value, LayerSet) else value


def _variant(value: Any, where: str) -> tuple[Replacement, ...]:
    """One replace entry: a list of ``site=method`` (or one such string)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise SpecError(
            f"{where}: expected a non-empty list of site=method, e.g. [encoder.self=alr]; "
            f"got {value!r}"
        )
    known = ", ".join(METHODS)
    out: dict[str, Replacement] = {}
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
        out[site] = Replacement(site, method)
    return tuple(out[s] for s in SITES if s in out)


def _normalize_grid(grid: Any, source: str) -> dict[str, list[Any]]:
    """The validated grid: known keys in ``GRID_KEYS`` order, values in canonical form."""
    if not isinstance(grid, dict):
        raise SpecError(f"{source}: grid: expected a mapping with keys {', '.join(GRID_KEYS)}")
    for key in grid:
        if key not in GRID_KEYS:
            raise SpecError(
                f"{source}: grid.{key}: unknown key; expected one of {', '.join(GRID_KEYS)}"
            )
    for key in REQUIRED_GRID:
        if key not in grid:
            raise SpecError(f"{source}: grid.{key}: required (e.g. {key}: {GRID_EXAMPLES[key]})")
    out: dict[str, list[Any]] = {}
    for key in GRID_KEYS:
        if key not in grid:
            continue
        where = f"{source}: grid.{key}"
        values = _list(grid[key], where, GRID_EXAMPLES[key])
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
            try:
                values = [LayerSet.parse(str(v), where) for v in values]
            except ConfigError as err:
                raise SpecError(str(err)) from None
            if len(set(values)) != len(values):
                raise SpecError(f"{where}: two entries name the same layers")
        out[key] = values
    return out


def _check_overrides(overrides: list[str], grid: dict[str, list[Any]], source: str) -> None:
    """Reject ``--set`` overrides of keys the grid or the sweep sets for each cell."""
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
