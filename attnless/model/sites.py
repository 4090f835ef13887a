"""Where each replacement method cuts the teacher: one registry of methods.

A method is defined by the module it replaces (its site and path in the teacher), how to build
the student network for a size, and its default learning rate; it also says whether it is
length-capped at ``n`` (hybrid evaluation then translates longer sources with the teacher) and
whether it is one of the paper's. Capture (distillation), installation (evaluation), sweeps and
reports all go through this table and never branch on method names, so a new replacement type
is one entry here plus its module.

Methods beyond the paper (:mod:`attnless.model.mixers`; d = d_model, h = heads, n = distill.n,
H = d x CHANNEL_FACTORS[size] rounded to a multiple of h, w = TOEPLITZ_WINDOWS[size]):

- ``mixer`` (encoder.self, decoder.self causal, decoder.cross): ``h*n*C + h*n + 2dH + 3H + 3d``
  parameters, ``C = n`` (``2n`` for cross-attention); length-capped at n.
- ``toeplitz`` (encoder.self, decoder.self causal): ``3dH + 5H + 3d + h*K``, ``K = 2w + 1``
  (``w + 1`` causal); any length.
- ``fnet`` (encoder.self) and ``meanpool`` (encoder.self, decoder.self, decoder.cross): no
  parameters, any length. They accept every size name and ignore it (a sweep grid crosses
  variants with sizes); an unknown size is still an error.

With d = 128, h = 8, n = 50, sizes XS/S/M/L/XL: encoder ``mixer`` 29,072 / 37,360 / 53,936 /
87,088 / 153,392 and ``toeplitz`` 12,872 / 25,352 / 50,312 / 100,232 / 200,072 per layer (the
attention core they replace has 49,536).

Sites: ``encoder.self`` (encoder self-attention), ``decoder.self`` (decoder self-attention),
``decoder.cross`` (cross-attention). A student's input is whatever the replaced module receives
and its target is what that module returns, captured from the frozen teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn

from attnless.model.mixers import (
    CrossMeanPool,
    CrossTokenMixer,
    FourierMixer,
    MeanPool,
    SelfTokenMixer,
    ToeplitzMixer,
)
from attnless.model.replacements import CausalFixedLengthFF, CrossFixedLengthFF, FixedLengthFF

SIZES = ("XS", "S", "M", "L", "XL")
SITES = ("encoder.self", "decoder.self", "decoder.cross")

# Hidden width = input width / divisor (XL: x2), as in the official code (paper-spec.md §3).
FLAT_DIVISORS = {"XS": 1 / 256, "S": 1 / 128, "M": 1 / 8, "L": 1 / 2, "XL": 2.0}
HEAD_DIVISORS = {"XS": 1 / 32, "S": 1 / 16, "M": 1 / 8, "L": 1 / 4, "XL": 1 / 4}
# Beyond the paper (attnless/model/mixers.py): the hidden width of the per-position networks
# of ``mixer`` and ``toeplitz`` is d_model x factor (rounded to a multiple of the heads), and
# the window of ``toeplitz`` (offsets -w..w) grows with the size.
CHANNEL_FACTORS = {"XS": 1 / 4, "S": 1 / 2, "M": 1.0, "L": 2.0, "XL": 4.0}
TOEPLITZ_WINDOWS = {"XS": 2, "S": 4, "M": 8, "L": 16, "XL": 32}


class ReplacementError(ValueError):
    """An unknown method, size, site or layer, or a student that does not fit its teacher."""


def check_size(size: str) -> str:
    """``size`` if it is one of SIZES, else a ReplacementError naming it."""
    if size not in SIZES:
        raise ReplacementError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    return size


def hidden_width(in_width: int, size: str, per_head: bool = False) -> int:
    """The hidden width of a replacement network of ``size`` for an input of ``in_width``."""
    table = HEAD_DIVISORS if per_head else FLAT_DIVISORS
    return max(1, round(in_width * table[check_size(size)]))


def channel_width(d_model: int, size: str, heads: int) -> int:
    """The hidden width of the per-position network of ``mixer`` / ``toeplitz``:
    ``d_model * CHANNEL_FACTORS[size]`` rounded to a multiple of ``heads`` (at least one)."""
    return heads * max(1, round(d_model * CHANNEL_FACTORS[check_size(size)] / heads))


@dataclass(frozen=True)
class Method:
    """One replacement type at one site."""

    site: str
    name: str
    path: Callable[[int], str]  # layer index -> module path in the teacher
    build: Callable[[int, int, str, dict], nn.Module]  # (n, d_model, size, options) -> student
    lr: float  # the paper's Adam learning rate for this method
    summary: str
    fixed_length: bool = True  # reads at most n positions (longer input: SequenceTooLong)
    paper: bool = False  # one of the paper's methods (listed in every parameter table)

    @property
    def key(self) -> str:
        return f"{self.site}={self.name}"


def _flat(heads: int) -> Callable[[int, int, str, dict], nn.Module]:
    def build(n: int, d: int, size: str, options: dict) -> nn.Module:
        h = options.get("heads", 8) if heads else 1
        return FixedLengthFF(n, d, hidden_width(n * d, size, per_head=h > 1), heads=h)

    return build


def _causal(n: int, d: int, size: str, options: dict) -> nn.Module:
    return CausalFixedLengthFF(n, d, hidden_width(n * d, size))


def _cross(n: int, d: int, size: str, options: dict) -> nn.Module:
    return CrossFixedLengthFF(n, d, hidden_width(2 * n * d, size), options.get("causal", True))


# Builders of the methods beyond the paper. ``options["heads"]`` is the teacher's head count.


def _mixer(causal: bool) -> Callable[[int, int, str, dict], nn.Module]:
    def build(n: int, d: int, size: str, options: dict) -> nn.Module:
        h = options.get("heads", 8)
        return SelfTokenMixer(n, d, h, channel_width(d, size, h), causal)

    return build


def _cross_mixer(n: int, d: int, size: str, options: dict) -> nn.Module:
    h = options.get("heads", 8)
    return CrossTokenMixer(n, d, h, channel_width(d, size, h))


def _toeplitz(causal: bool) -> Callable[[int, int, str, dict], nn.Module]:
    def build(n: int, d: int, size: str, options: dict) -> nn.Module:
        h = options.get("heads", 8)
        hidden, window = channel_width(d, size, h), TOEPLITZ_WINDOWS[size]
        return ToeplitzMixer(d, h, hidden, window, causal)

    return build


def _parameter_free(make: Callable[[int], nn.Module]) -> Callable[[int, int, str, dict], nn.Module]:
    """A builder that accepts every size of SIZES and ignores it (there is nothing to size)."""

    def build(n: int, d: int, size: str, options: dict) -> nn.Module:
        check_size(size)
        return make(d)

    return build


def _encoder_self(i: int) -> str:
    return f"encoder.layers.{i}.self_attn.core"


def _decoder_self(i: int) -> str:
    return f"decoder.layers.{i}.self_attn.core"


def _decoder_cross(i: int) -> str:
    return f"decoder.layers.{i}.cross_attn.core"


_METHODS = [
    Method(
        "encoder.self",
        "alr",
        _encoder_self,
        _flat(heads=0),
        1e-4,
        "attention core (QKV + softmax, all heads); W_O, LN, residual kept",
        paper=True,
    ),
    Method(
        "encoder.self",
        "aslr",
        _encoder_self,
        _flat(heads=1),
        1e-3,
        "attention core, one network per head; W_O, LN, residual kept",
        paper=True,
    ),
    Method(
        "encoder.self",
        "alrr",
        lambda i: f"encoder.layers.{i}.self_attn",
        _flat(heads=0),
        1e-3,
        "whole self-attention sublayer (LN, attention, W_O, residual)",
        paper=True,
    ),
    Method(
        "encoder.self",
        "elr",
        lambda i: f"encoder.layers.{i}",
        _flat(heads=0),
        1e-3,
        "whole encoder layer",
        paper=True,
    ),
    Method(
        "decoder.self",
        "alr",
        _decoder_self,
        _causal,
        1e-4,
        "causal decoder self-attention core; one network per position, prefix-masked input",
        paper=True,
    ),
    Method(
        "decoder.cross",
        "alr",
        _decoder_cross,
        _cross,
        1e-4,
        "cross-attention core; input [encoder output ; decoder input]",
        paper=True,
    ),
    # Beyond the paper (issue 18): attnless/model/mixers.py. Every one replaces an attention
    # core, so W_O, LN and residual are kept, as with ALR.
    Method(
        "encoder.self",
        "mixer",
        _encoder_self,
        _mixer(causal=False),
        1e-3,
        "attention core: per-head n x n position mixing, then a channel MLP",
    ),
    Method(
        "decoder.self",
        "mixer",
        _decoder_self,
        _mixer(causal=True),
        1e-3,
        "decoder self-attention core: lower-triangular per-head position mixing, channel MLP",
    ),
    Method(
        "decoder.cross",
        "mixer",
        _decoder_cross,
        _cross_mixer,
        1e-3,
        "cross-attention core: per-head mixing of [encoder ; decoder <= i], channel MLP",
    ),
    Method(
        "encoder.self",
        "toeplitz",
        _encoder_self,
        _toeplitz(causal=False),
        1e-3,
        "attention core: gMLP gating, Toeplitz mixing over offsets -w..w (any length)",
        fixed_length=False,
    ),
    Method(
        "decoder.self",
        "toeplitz",
        _decoder_self,
        _toeplitz(causal=True),
        1e-3,
        "decoder self-attention core: gMLP gating, causal Toeplitz mixing (any length)",
        fixed_length=False,
    ),
    Method(
        "encoder.self",
        "fnet",
        _encoder_self,
        _parameter_free(FourierMixer),
        1e-3,
        "attention core: real part of the 2D DFT (no parameters, any length)",
        fixed_length=False,
    ),
    Method(
        "encoder.self",
        "meanpool",
        _encoder_self,
        _parameter_free(lambda d: MeanPool()),
        1e-3,
        "attention core: mean of the sentence (no parameters, any length)",
        fixed_length=False,
    ),
    Method(
        "decoder.self",
        "meanpool",
        _decoder_self,
        _parameter_free(lambda d: MeanPool(causal=True)),
        1e-3,
        "decoder self-attention core: running mean (no parameters, any length)",
        fixed_length=False,
    ),
    Method(
        "decoder.cross",
        "meanpool",
        _decoder_cross,
        _parameter_free(lambda d: CrossMeanPool()),
        1e-3,
        "cross-attention core: mean of the encoder output (no parameters, any length)",
        fixed_length=False,
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
