"""Replacement requests as values: which attention blocks to replace, at which layers.

A request is written ``site=method:size[,size]`` (``--replace``, ``distill.replace``,
``eval.replace``; a sweep's grid names ``site=method`` and the sizes apart) with a layer set
(``--layers``, ``distill.layers``, ``eval.layers``, ``grid.layers``: ``all``, ``0-5``,
``0,2,4``). The text is parsed once, where it enters (the command line and configs, through
:func:`from_config`; a sweep spec), into :class:`Replacement` and :class:`LayerSet` values, and
everything after works with those values; where text is needed again (a config record, a
folder name, a table) it is their ``str``, the one canonical spelling.

(The replacement *networks* are in :mod:`attnless.model.replacements`, the registry of sites,
methods and sizes in :mod:`attnless.model.sites`.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from attnless.config import ConfigError
from attnless.model.sites import SIZES, ReplacementError, get_method

LAYER_PART = re.compile(r"(\d+)(?:-(\d+))?")


@dataclass(frozen=True)
class LayerSet:
    """Every layer (``indices`` None), or the given layer indices (sorted, distinct)."""

    indices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.indices is not None:
            if not self.indices or list(self.indices) != sorted(set(self.indices)):
                raise ValueError(f"LayerSet: expected sorted distinct indices, got {self.indices}")
            if self.indices[0] < 0:
                raise ValueError(f"LayerSet: negative layer {self.indices[0]}")

    @classmethod
    def parse(cls, text: str | LayerSet, where: str = "layers") -> LayerSet:
        """``all``, ``0-5``, ``0,2,4`` or a mix (``0-2,5``); spaces are ignored. An empty,
        malformed or reversed range is a ConfigError that names ``where`` and the text."""
        if isinstance(text, LayerSet):
            return text
        text = str(text).replace(" ", "")
        if text == "all":
            return cls()
        layers: set[int] = set()
        for part in text.split(","):
            match = LAYER_PART.fullmatch(part)
            if not match:
                raise ConfigError(f"{where} {text!r}: expected all, 0-5 or 0,2,4", (where,))
            first = int(match.group(1))
            last = int(match.group(2) or first)
            if last < first:
                raise ConfigError(
                    f"{where} {text!r}: the range {part} is reversed and names no layer; write "
                    f"the lower layer first ({last}-{first})",
                    (where,),
                )
            layers.update(range(first, last + 1))
        return cls(tuple(sorted(layers)))

    @property
    def is_all(self) -> bool:
        return self.indices is None

    def resolve(self, count: int) -> list[int]:
        """The layer indices in a stack of ``count`` layers; a ReplacementError if one is not
        there."""
        if self.indices is None:
            return list(range(count))
        bad = [i for i in self.indices if i >= count]
        if bad:
            raise ReplacementError(
                f"layer {bad[0]} is out of range: the teacher has {count} layers (0-{count - 1})"
            )
        return list(self.indices)

    def __str__(self) -> str:
        """The canonical text: ``all``, or runs of consecutive layers as ``a-b`` and single
        layers as numbers, comma-separated in order (``0-2,5``)."""
        if self.indices is None:
            return "all"
        parts: list[str] = []
        start = prev = self.indices[0]
        for i in [*self.indices[1:], None]:
            if i is not None and i == prev + 1:
                prev = i
                continue
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            if i is not None:
                start = prev = i
        return ",".join(parts)


ALL = LayerSet()


class Family(NamedTuple):
    """The students of one (site, method, size), one per layer."""

    site: str
    method: str
    size: str

    @property
    def key(self) -> str:
        """``site=method``: the registry key (:data:`attnless.model.sites.METHODS`)."""
        return f"{self.site}={self.method}"


@dataclass(frozen=True)
class Replacement:
    """A method at a site, with the sizes of its networks (none in a sweep's variants, whose
    sizes come from ``grid.size``)."""

    site: str
    method: str
    sizes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Replacement:
        """``encoder.self=alr:S,M`` (sizes in any case, spaces ignored), every part checked."""
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
                raise ReplacementError(
                    f"--replace {text!r}: unknown size {size!r}; expected {SIZES}"
                )
        return cls(site.strip(), method.strip(), tuple(size_list))

    @classmethod
    def of(cls, value: Replacement | str) -> Replacement:
        """``value`` itself, or the replacement a ``site=method[:sizes]`` text names (as
        recorded in a sweep's results), unchecked."""
        if isinstance(value, Replacement):
            return value
        site, _, rest = value.partition("=")
        method, _, sizes = rest.partition(":")
        return cls(site.strip(), method.strip(), tuple(s for s in sizes.split(",") if s))

    @property
    def key(self) -> str:
        """``site=method``: the registry key (:data:`attnless.model.sites.METHODS`)."""
        return f"{self.site}={self.method}"

    def with_sizes(self, *sizes: str) -> Replacement:
        return Replacement(self.site, self.method, tuple(sizes))

    def families(self) -> list[Family]:
        return [Family(self.site, self.method, size) for size in self.sizes]

    def __str__(self) -> str:
        return self.key + (f":{','.join(self.sizes)}" if self.sizes else "")


class _Request(Protocol):
    replace: list[str]
    layers: str


def from_config(section: _Request) -> tuple[list[Replacement], LayerSet]:
    """The replacements and layers of a config section (``cfg.distill`` or ``cfg.eval``)."""
    return [Replacement.parse(text) for text in section.replace], LayerSet.parse(section.layers)


def to_config(section: _Request, replacements: Iterable[Replacement], layers: LayerSet) -> None:
    """Write replacements and layers into a config section, as their canonical text."""
    section.replace = [str(r) for r in replacements]
    section.layers = str(layers)


def variant_name(replacements: Sequence[Replacement], layers: LayerSet) -> str:
    """A file-system-safe name of a request (its evaluation folder), e.g.
    ``encoder.self-alr-M.L0-5`` or ``encoder.self-alr-M+decoder.self-alr-S.Lall``."""
    parts = [f"{r.site}-{r.method}-{'_'.join(r.sizes)}" for r in replacements]
    return "+".join(parts) + f".L{str(layers).replace(',', '_')}"
