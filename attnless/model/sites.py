"""Where each replacement method cuts the teacher: one registry of methods.

A method is defined by three things only: the module it replaces (its site and path in the
teacher), how to build the student network for a size, and its default learning rate. Capture
(distillation), installation (evaluation), sweeps and reports all go through this table and
never branch on method names, so a new replacement type is one entry here plus its module.

Sites: ``encoder.self`` (encoder self-attention), ``decoder.self`` (decoder self-attention),
``decoder.cross`` (cross-attention). A student's input is whatever the replaced module receives
and its target is what that module returns, captured from the frozen teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn

from attnless.model.replacements import CausalFixedLengthFF, CrossFixedLengthFF, FixedLengthFF

SIZES = ("XS", "S", "M", "L", "XL")
SITES = ("encoder.self", "decoder.self", "decoder.cross")

# Hidden width = input width / divisor (XL: x2), as in the official code (paper-spec.md §3).
FLAT_DIVISORS = {"XS": 1 / 256, "S": 1 / 128, "M": 1 / 8, "L": 1 / 2, "XL": 2.0}
HEAD_DIVISORS = {"XS": 1 / 32, "S": 1 / 16, "M": 1 / 8, "L": 1 / 4, "XL": 1 / 4}


class ReplacementError(ValueError):
    """An unknown method, size, site or layer, or a student that does not fit its teacher."""


def hidden_width(in_width: int, size: str, per_head: bool = False) -> int:
    """The hidden width of a replacement network of ``size`` for an input of ``in_width``."""
    table = HEAD_DIVISORS if per_head else FLAT_DIVISORS
    if size not in table:
        raise ReplacementError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    return max(1, round(in_width * table[size]))


@dataclass(frozen=True)
class Method:
    """One replacement type at one site."""

    site: str
    name: str
    path: Callable[[int], str]  # layer index -> module path in the teacher
    build: Callable[[int, int, str, dict], nn.Module]  # (n, d_model, size, options) -> student
    lr: float  # the paper's Adam learning rate for this method
    summary: str

    @property
    def key(self) -> str:
        return f"{self.site}={self.name}"


def _flat(heads: int) -> Callable[[int, int, str, dict], nn.Module]:
    def build(n: int, d: int, size: str, options: dict) -> nn.Module:
        h = options.get("heads", 8) if heads else 1
        return FixedLengthFF(n, d, hidden_width(n * d, size, per_head=h > 1), heads=h)

    return build


def _decoder_self(n: int, d: int, size: str, options: dict) -> nn.Module:
    return CausalFixedLengthFF(n, d, hidden_width(n * d, size))


def _cross(n: int, d: int, size: str, options: dict) -> nn.Module:
    return CrossFixedLengthFF(n, d, hidden_width(2 * n * d, size), options.get("causal", True))


_METHODS = [
    Method(
        "encoder.self",
        "alr",
        lambda i: f"encoder.layers.{i}.self_attn.core",
        _flat(heads=0),
        1e-4,
        "attention core (QKV + softmax, all heads); W_O, LN, residual kept",
    ),
    Method(
        "encoder.self",
        "aslr",
        lambda i: f"encoder.layers.{i}.self_attn.core",
        _flat(heads=1),
        1e-3,
        "attention core, one network per head; W_O, LN, residual kept",
    ),
    Method(
        "encoder.self",
        "alrr",
        lambda i: f"encoder.layers.{i}.self_attn",
        _flat(heads=0),
        1e-3,
        "whole self-attention sublayer (LN, attention, W_O, residual)",
    ),
    Method(
        "encoder.self",
        "elr",
        lambda i: f"encoder.layers.{i}",
        _flat(heads=0),
        1e-3,
        "whole encoder layer",
    ),
    Method(
        "decoder.self",
        "alr",
        lambda i: f"decoder.layers.{i}.self_attn.core",
        _decoder_self,
        1e-4,
        "causal decoder self-attention core; one network per position, prefix-masked input",
    ),
    Method(
        "decoder.cross",
        "alr",
        lambda i: f"decoder.layers.{i}.cross_attn.core",
        _cross,
        1e-4,
        "cross-attention core; input [encoder output ; decoder input]",
    ),
]

METHODS: MappingProxyType[str, Method] = MappingProxyType({m.key: m for m in _METHODS})


def get_method(site: str, name: str) -> Method:
    """The registry entry for ``site=name``, or a ReplacementError listing the known ones."""
    method = METHODS.get(f"{site}={name}")
    if method is None:
        known = ", ".join(METHODS)
        raise ReplacementError(f"unknown replacement {site}={name}; known: {known}")
    return method


def layer_count(model: nn.Module, site: str) -> int:
    stack = model.encoder if site.startswith("encoder") else model.decoder
    return len(stack.layers)


def check_layers(model: nn.Module, site: str, layers: list[int]) -> None:
    count = layer_count(model, site)
    bad = [i for i in layers if not 0 <= i < count]
    if bad:
        raise ReplacementError(
            f"layer {bad[0]} is out of range for {site}: the teacher has {count} layers "
            f"(0-{count - 1})"
        )


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def install(model: nn.Module, path: str, student: nn.Module) -> nn.Module:
    """Put ``student`` where ``path`` is in ``model``; returns the module it replaced."""
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    if attr.isdigit():
        original = parent[int(attr)]
        parent[int(attr)] = student
    else:
        original = getattr(parent, attr)
        setattr(parent, attr, student)
    return original
