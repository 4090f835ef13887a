"""Sweep specs: the schema (pydantic models), its validation and the preset a spec names."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from attnless import config as config_mod
from attnless.config import Config, ConfigError, Text, dotted, error_line, resolve_preset
from attnless.model.sites import METHODS, SITES, SIZES, ReplacementError, get_method
from attnless.replacement import LayerSet, Replacement

SPEC_KEYS = ("name", "description", "preset", "grid", "set")
GRID_KEYS = ("corpus", "direction", "replace", "size", "layers", "test_group", "set")
GRID_EXAMPLES = {
    "corpus": "[multi30k]",
    "direction": "[de-en, en-de]",
    "replace": "[[encoder.self=alr]]",
    "size": "[XS, S, M, L]",
    "layers": "[all]",
    "test_group": "[1, 2, 3, 4]",
    "set": "[distill.cross_causal=false]",
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
GRID_CONFIG_KEYS = {
    "corpus": ("data.corpus",),
    "direction": ("data.src", "data.tgt"),
    "test_group": ("data.test_group",),
}


class SpecError(ConfigError):
    """A sweep spec (or a --shard / --preset argument) is invalid."""


@dataclass
class Spec:
    """A validated spec: its preset, normalised grids and ``--set`` overrides.

    ``grids`` holds one grid for a spec whose ``grid`` is a mapping (``listed`` false), else
    the grids of its list, in order; the cells are the union of their products."""

    name: str
    preset: str
    preset_path: Path
    grids: list[dict[str, list[Any]]]  # a grid's "set": overrides of its cells only
    overrides: list[str]
    description: str = ""
    source: str = "<spec>"
    listed: bool = False  # the spec's grid is a list of grids

    def to_dict(self) -> dict[str, Any]:
        grids = [{k: [_plain(v) for v in vs] for k, vs in g.items()} for g in self.grids]
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        grid: Any = grids if self.listed else grids[0]
        out.update({"preset": self.preset, "grid": grid, "set": list(self.overrides)})
        return out

    def base_values(self) -> dict[str, Any]:
        return config_mod.apply_overrides(config_mod.read_yaml(self.preset_path), self.overrides)

    def base_config(self) -> Config:
        """The preset with the overrides; an error names the override or the preset."""
        values = config_mod.read_yaml(self.preset_path)
        return config_mod.from_dict(values, str(self.preset_path), self.overrides)


def _fail(text: str, kind: str = "spec") -> PydanticCustomError:
    """A validation error: ``text`` says what is wrong with the value at the error's location
    (``kind`` "located": ``text`` names the location itself)."""
    return PydanticCustomError(kind, "{text}", {"text": text})


def _entry(item: Any) -> str:
    """One ``site=method`` of a variant, checked against the method registry."""
    known = ", ".join(METHODS)
    if not isinstance(item, str) or "=" not in item:
        raise _fail(f"expected site=method (one of {known}); got {item!r}")
    if ":" in item:
        variant = item.split(":")[0]
        raise _fail(f"{item!r} gives a size; sizes go in grid.size, the variant is {variant!r}")
    site, _, method = (part.strip() for part in item.partition("="))
    try:
        get_method(site, method)
    except ReplacementError:
        raise _fail(f"unknown replacement {item!r}; expected one of {known}") from None
    return f"{site}={method}"


def _as_entries(value: Any) -> Any:
    """A variant: a non-empty list of ``site=method`` (or one such string)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _fail(
            f"expected a non-empty list of site=method, e.g. [encoder.self=alr]; got {value!r}"
        )
    return items


def _one_per_site(entries: tuple[str, ...]) -> tuple[str, ...]:
    """The entries in the order of the sites, each site once."""
    sites = [entry.partition("=")[0] for entry in entries]
    for site in sites:
        if sites.count(site) > 1:
            raise _fail(f"site {site} is replaced twice in one variant")
    return tuple(sorted(entries, key=lambda entry: SITES.index(entry.partition("=")[0])))


Variant = Annotated[
    tuple[Annotated[str, PlainValidator(_entry)], ...],
    BeforeValidator(_as_entries),
    AfterValidator(_one_per_site),
]


class Grid(BaseModel):
    """A spec's grid: for each key a non-empty list of distinct values, in canonical form."""

    model_config = ConfigDict(extra="forbid")

    corpus: list[Text] | None = None
    direction: list[Text] | None = None
    replace: list[Variant]
    size: list[Text]
    layers: list[Text] | None = None
    test_group: list[Any] | None = None
    set: list[Annotated[str, Strict()]] | None = None  # overrides for this grid's cells only

    @field_validator("*", mode="before")
    @classmethod
    def _distinct(cls, values: Any, info: ValidationInfo) -> Any:
        if not isinstance(values, list):
            example = GRID_EXAMPLES[info.field_name]
            raise _fail(f"expected a list, e.g. {example}; got {values!r}")
        if not values:
            raise _fail("empty; every grid key needs at least one value (no cells)")
        seen = set()
        for item in values:
            key = json.dumps(item, sort_keys=True, default=str)
            if key in seen:
                raise _fail(f"{item!r} is listed twice")
            seen.add(key)
        return values

    @field_validator("corpus")
    @classmethod
    def _corpora(cls, values: list[str]) -> list[str]:
        choices = config_mod.CHOICES["data.corpus"]
        for v in values:
            if v not in choices:
                raise _fail(f"unknown corpus {v!r}; expected one of {choices}")
        return values

    @field_validator("direction")
    @classmethod
    def _directions(cls, values: list[str]) -> list[str]:
        for v in values:
            match = DIRECTION_RE.match(v)
            if not match or match.group(1) == match.group(2):
                raise _fail(f"{v!r} is not a direction; expected src-tgt, e.g. de-en")
        return values

    @field_validator("replace")
    @classmethod
    def _variants(cls, values: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        if len(set(values)) != len(values):
            raise _fail("two entries name the same variant")
        return values

    @field_validator("size")
    @classmethod
    def _sizes(cls, values: list[str]) -> list[str]:
        for v in values:
            if v.upper() not in SIZES:
                raise _fail(f"unknown size {v!r}; expected one of {SIZES}")
        return [v.upper() for v in values]

    @field_validator("layers")
    @classmethod
    def _layers(cls, values: list[str]) -> list[str]:
        values = [v.replace(" ", "") for v in values]
        for v in values:
            try:
                config_mod.layer_indices(v, "grid.layers")
            except ConfigError as err:
                raise _fail(str(err), "located") from None
        return values

    @field_validator("test_group")
    @classmethod
    def _groups(cls, values: list[Any]) -> list[int]:
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise _fail(
                    f"{v!r} is not a positive whole number (k joins each k consecutive test "
                    "pairs into one; 1: the test set as it is)"
                )
        return values


class SpecFile(BaseModel):
    """What a spec file holds (``name`` and ``preset`` may come from the command line)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Strict()] | None = None
    description: Annotated[str, Strict()] = ""
    preset: Annotated[str, Strict()] | None = None
    grid: list[Grid]
    set: list[str] = []

    @field_validator("grid", mode="before")
    @classmethod
    def _grids(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return [value]
        if not isinstance(value, list) or not value:
            raise _fail(
                f"expected a mapping with keys {', '.join(GRID_KEYS)}, or a non-empty list of "
                f"such mappings; got {value!r}"
            )
        return value

    @field_validator("set", mode="before")
    @classmethod
    def _overrides(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise _fail(f"expected a list of section.key=value, got {value!r}")
        return value


def _spec_error(err: ValidationError, source: str, listed: bool) -> SpecError:
    """The first problem pydantic found in a spec (unknown, then missing keys first), as one
    line naming ``source`` and the key (``grid[1].size`` in a list of grids, ``grid.size`` in
    a single grid)."""
    rank = {"extra_forbidden": 0, "missing": 1}
    error = min(err.errors(), key=lambda e: rank.get(e["type"], 2))
    return SpecError(f"{source}: {_problem(error, listed)}")


def _problem(error: Any, listed: bool) -> str:
    """What one pydantic ``error`` of a spec means, in the spec's terms (the key first)."""
    loc, kind = tuple(error["loc"]), error["type"]
    if not listed and loc[:2] == ("grid", 0):
        loc = ("grid", *loc[2:])
    where = dotted(loc)
    match kind, loc:
        case "extra_forbidden", (key,):
            return f"unknown key {key!r}; expected one of {', '.join(SPEC_KEYS)}"
        case "extra_forbidden", _:
            return f"{where}: unknown key; expected one of {', '.join(GRID_KEYS)}"
        case "missing", ("grid",):
            return f"grid: required (a mapping of {', '.join(GRID_KEYS)})"
        case "missing", _:
            return f"{where}: required (e.g. {loc[-1]}: {GRID_EXAMPLES[loc[-1]]})"
        case "located", _:  # the message names grid.<key>; in a list of grids, grid[i].<key>
            text, named = error["msg"], f"grid.{loc[-1]}"
            return f"{where}{text[len(named) :]}" if text.startswith(named) else text
        case "model_type", ("grid",) | ("grid", _):
            return f"{where}: expected a mapping with keys {', '.join(GRID_KEYS)}"
        case "spec", _:
            return f"{where}: {error['msg']}"
    return error_line(error)[1]


def _plain(value: Any) -> Any:
    """A grid value as YAML writes it: a variant as a list of ``site=method``, layers as text."""
    if isinstance(value, tuple):
        return [str(v) for v in value]
    return str(value) if isinstance(value, LayerSet) else value


def _typed(grid: dict[str, list[Any]], where: str) -> dict[str, list[Any]]:
    """The validated grid with its variants as :class:`Replacement` tuples and its layer sets
    as :class:`LayerSet` values (parsed once, here); ``where``: ``<source>: grid`` or
    ``<source>: grid[i]``, for errors."""
    out = dict(grid)
    out["replace"] = [
        tuple(Replacement(*entry.split("=", 1)) for entry in variant) for variant in grid["replace"]
    ]
    if "layers" in grid:
        out["layers"] = [LayerSet.parse(v, f"{where}.layers") for v in grid["layers"]]
        if len(set(out["layers"])) != len(out["layers"]):
            raise SpecError(f"{where}.layers: two entries name the same layers")
    return out


def _check_overrides(overrides: list[str], grids: list[dict[str, list[Any]]], source: str) -> None:
    """Reject ``--set`` overrides of keys a grid or the sweep sets for each cell."""
    controlled = set(SWEEP_KEYS)
    for key, config_keys in GRID_CONFIG_KEYS.items():
        if any(key in grid for grid in grids):
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
    listed = isinstance(values.get("grid"), list)
    try:
        spec = SpecFile.model_validate(values)
    except ValidationError as err:
        raise _spec_error(err, source, listed) from None
    name = spec.name if spec.name is not None else default_name
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError(
            f"{source}: name: {name!r} must be a folder name (letters, digits, '.', '_', '-')"
        )
    preset = preset or spec.preset
    if not preset:
        raise SpecError(f"{source}: preset: missing; name one (preset: paper) or pass --preset")
    grids = []
    for i, one in enumerate(spec.grid):
        grid = {key: getattr(one, key) for key in GRID_KEYS}
        where = f"{source}: grid[{i}]" if listed else f"{source}: grid"
        grids.append(_typed({k: v for k, v in grid.items() if v is not None}, where))
    all_overrides = spec.set + list(overrides or [])
    _check_overrides(all_overrides, grids, source)
    result = Spec(
        name=name,
        preset=preset,
        preset_path=resolve_preset(preset, base_dir),
        grids=grids,
        overrides=all_overrides,
        description=spec.description,
        source=source,
        listed=listed,
    )
    result.base_config()  # every override must make a valid config
    for i, grid in enumerate(grids):  # a grid's own overrides: the same rules, its cells only
        if grid.get("set"):
            where = f"{source}: grid[{i}].set" if listed else f"{source}: grid.set"
            _check_overrides(grid["set"], grids, where)
            try:
                config_mod.from_dict(result.base_values(), where, grid["set"])
            except ConfigError as err:
                raise SpecError(f"{where}: {err}") from None
    return result


def load_spec(
    path: str | Path, preset: str | None = None, overrides: list[str] | None = None
) -> Spec:
    """Read and validate the spec file ``path``."""
    path = Path(path)
    values = config_mod.read_yaml(path)
    if not values:
        raise SpecError(f"{path}: empty spec; expected keys {', '.join(SPEC_KEYS)}")
    return spec_from_dict(values, str(path), path.parent, preset, overrides, path.stem)
