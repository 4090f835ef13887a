"""Small tensor operations shared by the model and the replacement networks."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _random_lanes(numel: int) -> Tensor:
    """``numel`` uniform int16 values on the CPU, from a generator seeded by torch's own.

    The Mersenne twister behind torch's CPU ``bernoulli_``/``random_`` produces about 32 random
    bits per 3-4 ns on one thread, which made dropout masks a fifth of a small Transformer's
    training step. NumPy's SFC64 is several times faster; seeding it with a draw from torch's
    generator keeps runs reproducible from ``torch.manual_seed`` and checkpointed RNG states.
    """
    seed = int(torch.randint(0, 2**62, (1,)))
    words = np.random.SFC64(seed).random_raw((numel + 3) // 4)
    return torch.from_numpy(words.view(np.int16))[:numel]


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> Tensor:
    """A boolean mask whose entries are True with probability ``1 - p`` (to 1/65536)."""
    if device.type != "cpu":
        return torch.rand(shape, device=device) >= p
    lanes = _random_lanes(math.prod(shape)).view(shape)
    return lanes >= round(p * 65536) - 32768


def dropout_multipliers(
    shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype
) -> Tensor:
    """CPU inverted-dropout multipliers in ``dtype``: 0 with probability ``p``, else
    ``1 / (1 - p)`` (rounded to ``dtype``: 1.109 for p = 0.1 in bf16).

    Multiplying by a tensor of the activations' own dtype keeps forward and backward to one
    same-dtype ``mul`` each; a boolean mask would be converted on every use, which cost about
    a third of a bf16 dropout here."""
    keep = keep_mask(shape, p, torch.device("cpu"))
    scale = torch.tensor(1.0 / (1.0 - p), dtype=dtype)
    return torch.where(keep, scale, torch.zeros((), dtype=dtype))


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout, as ``F.dropout`` but with the fast CPU mask of :func:`keep_mask`."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * dropout_multipliers(x.shape, p, x.dtype)


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
    computation is written out with the fast dropout mask. The softmax (and its dropout) runs
    in fp32 even under bf16 autocast: on short rows the CPU's bf16 softmax forward + backward
    measured 4x slower than fp32, and fp32 is the more accurate of the two. Masks are added as
    ``-inf`` biases (one op forward, none backward) rather than ``masked_fill``.

    ``mask`` is boolean (True: the key takes part), broadcast to (B, H, T, S). ``causal`` lets
    the i-th of the T queries, taken as the last T of the S positions (cached decoding), see
    keys ``<= S - T + i``; with a ``mask`` both apply.
    """
    t, s = q.size(-2), k.size(-2)
    if causal and (mask is not None or t != s):  # SDPA's is_causal: square, no mask only
        allowed = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
        mask, causal = allowed if mask is None else mask & allowed, False
    if dropout_p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal
        )
    scores = torch.matmul(q * (1.0 / math.sqrt(q.size(-1))), k.transpose(-2, -1))
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    if causal:
        mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores + torch.zeros(mask.shape, device=q.device).masked_fill_(~mask, -math.inf)
    weights = torch.softmax(scores, dim=-1)
    weights = weights * dropout_multipliers(weights.shape, dropout_p, weights.dtype)
    return torch.matmul(weights.to(v.dtype), v)
