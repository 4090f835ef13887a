"""Small tensor operations shared by the model and the replacement networks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> Tensor:
    """A boolean mask whose entries are True with probability ``1 - p`` (to 1/32768).

    On the CPU, ``bernoulli_`` draws one 32-bit number per element from the Mersenne twister
    and dominates a small Transformer's training step; here each 64-bit draw of the same
    seeded generator yields four 15-bit uniforms, which is about five times faster.
    """
    if device.type != "cpu":
        return torch.rand(shape, device=device) >= p
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64).random_()
    lanes = words.view(torch.int16)[:numel].view(shape)
    # the top bit of each 64-bit draw is always 0: use the low 15 bits of every lane
    return (lanes & 0x7FFF) >= round(p * 32768)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout, as ``F.dropout`` but with the fast CPU mask of :func:`keep_mask`."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    scale = keep_mask(x.shape, p, x.device).to(x.dtype) * (1.0 / (1.0 - p))
    return x * scale


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the fast CPU mask; identical semantics and state."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
) -> Tensor:
    """``softmax(q k^T / sqrt(hd) + mask) v`` over (B, H, T, hd) tensors.

    Without dropout this is ``F.scaled_dot_product_attention`` (fused kernels). With dropout on
    the CPU, where SDPA falls back to its unfused math path with slow ``bernoulli_``, the same
    computation is written out with the fast dropout mask.
    """
    if dropout_p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal and mask is None
        )
    scores = (q * (1.0 / math.sqrt(q.size(-1)))) @ k.transpose(-2, -1)
    if causal:
        t, s = q.size(-2), k.size(-2)
        mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = dropout(torch.softmax(scores, dim=-1), dropout_p, True)
    return weights @ v
