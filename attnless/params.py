"""Parameter and FLOP counts of students and teacher modules, from models built on the meta
device."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from attnless.config import Config
from attnless.model.sites import METHODS

if TYPE_CHECKING:
    from torch import nn

    from attnless.model import Seq2SeqTransformer


def _meta_student(
    key: str, size: str, n: int, d_model: int, heads: int, causal: bool = True
) -> nn.Module:
    """One student of method ``key`` built on the meta device (no memory, even at XL)."""
    import torch

    with torch.device("meta"):
        return METHODS[key].build(n, d_model, size, {"heads": heads, "causal": causal})


@functools.cache
def student_shape(key: str, size: str, n: int, d_model: int, heads: int) -> tuple[int, int]:
    """(parameters, LayerNorm/bias vector elements) of one student of method ``key`` (one
    layer)."""
    net = _meta_student(key, size, n, d_model, heads)
    total = vectors = 0
    for name, param in net.named_parameters():
        total += param.numel()
        if "norm" in name or "bias" in name:
            vectors += param.numel()
    return total, vectors


def student_params(key: str, size: str, n: int, d_model: int, heads: int) -> int:
    """Parameters of one student (one layer) of method ``key``."""
    return student_shape(key, size, n, d_model, heads)[0]


def student_flops(key: str, size: str, length: int, n: int, d_model: int, heads: int) -> int:
    """FLOPs (2 x multiply-adds of the matrix products) of one student of method ``key`` (one
    layer) on one sentence of ``length`` positions: its ``flops`` method, see
    :mod:`attnless.model.mixers`. A length-capped student cannot read more than ``n``."""
    from attnless.model.replacements import SequenceTooLong

    if METHODS[key].fixed_length and length > n:
        raise SequenceTooLong(f"{key}: {length} positions do not fit n={n}")
    return _meta_student(key, size, n, d_model, heads).flops(length)


def student_work(
    key: str, size: str, length: int, n: int, d_model: int, heads: int, causal: bool = True
) -> tuple[int, int]:
    """(FLOPs, per-position hidden activations) of one student of method ``key`` (one layer)
    on one sentence of ``length`` positions: FLOPs as :func:`student_flops`; the hidden
    activations of the networks that run once per position (decoder self-attention, causal
    cross-attention: ``length x H``), 0 for the others. ``length`` is capped at ``n``."""
    if METHODS[key].fixed_length:
        length = min(length, n)
    net = _meta_student(key, size, n, d_model, heads, causal)
    per_position = getattr(net, "hidden_values", None)
    return net.flops(length), per_position(length) if per_position else 0


def replaced_flops(key: str, d_model: int, heads: int, length: int) -> int | None:
    """FLOPs of the teacher module a student of method ``key`` replaces, on one sentence of
    ``length`` positions, where it has a count (the attention cores); else None."""
    from attnless.model.sites import get_module

    module = get_module(_meta_teacher(d_model, heads, 4 * d_model, 1, 1, 8), METHODS[key].path(0))
    return module.flops(length) if hasattr(module, "flops") else None


def _meta_teacher(
    d_model: int, heads: int, ffn_dim: int, enc: int, dec: int, vocab: int
) -> Seq2SeqTransformer:
    """A teacher of this shape, built on the meta device (no memory)."""
    import torch

    from attnless.model import build_model

    cfg = Config()
    cfg.model.d_model, cfg.model.heads, cfg.model.ffn_dim = d_model, heads, ffn_dim
    cfg.model.encoder_layers, cfg.model.decoder_layers = enc, dec
    with torch.device("meta"):
        return build_model(cfg, vocab, vocab)


@functools.cache
def replaced_params(key: str, d_model: int, heads: int, ffn_dim: int) -> int:
    """Parameters of the teacher module a student of method ``key`` replaces (one layer)."""
    from attnless.model import count_parameters
    from attnless.model.sites import get_module

    model = _meta_teacher(d_model, heads, ffn_dim, 1, 1, 8)
    return count_parameters(get_module(model, METHODS[key].path(0)))


@functools.cache
def teacher_params(d_model: int, heads: int, ffn_dim: int, enc: int, dec: int, vocab: int) -> dict:
    """Teacher parameters: encoder and decoder stacks (no embeddings) and the generator."""
    from attnless.model import count_parameters

    model = _meta_teacher(d_model, heads, ffn_dim, enc, dec, vocab)

    def body(stack) -> int:
        return sum(p.numel() for n, p in stack.named_parameters() if not n.startswith("embed"))

    return {
        "encoder": body(model.encoder),
        "decoder": body(model.decoder),
        "generator": count_parameters(model.generator),
    }


def inference_flops(
    key: str, size: str, n: int, d: int, heads: int, src: float, tgt: float
) -> tuple[float, float | None]:
    """(replacement network, teacher module it replaces) FLOPs of one layer for a sentence of
    ``src`` source and ``tgt`` target tokens (the decoder-side networks at ``tgt``), from the
    modules' own ``flops`` (None where the replaced module has none: whole sublayers/layers)."""
    length = max(1, round(src if key.startswith("encoder") else tgt))
    network = float(student_flops(key, size, length, n, d, heads))
    replaced = replaced_flops(key, d, heads, length)
    return network, None if replaced is None else float(replaced)
