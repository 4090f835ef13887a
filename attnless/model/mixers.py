"""Token mixers beyond the paper (issue 18): replacements with few parameters, most of them
with no length limit.

Each class has the call signature of the teacher module it replaces (see
:mod:`attnless.model.sites`): a self-attention core ``(x, padding, state=None) -> (B, T, d)``
or a cross-attention core ``(x, padding, memory, memory_padding, state=None) -> (B, T, d)``
(:class:`~attnless.model.transformer.CrossAttentionInterface`).
As for the paper's networks, padded inputs are zeroed before use (a padded token never changes
any output) and outputs at padded positions are exactly zero. Padding is on the right, as
everywhere in the toolkit.

- :class:`TokenMixer` (``mixer``, MLP-Mixer style): per head, an ``n x n`` position-mixing
  weight shared by the head's channels, plus a bias per head and position, then a channel
  MLP ``d -> H -> d`` with the paper's template. Length-capped at ``n`` like the paper's
  networks (:class:`~attnless.model.replacements.SequenceTooLong` beyond).
- :class:`ToeplitzMixer` (``toeplitz``, gMLP spatial gating): the positions are mixed by a
  Toeplitz weight, one value per relative offset in ``[-w, w]`` and head, so it runs on any
  length.
- :class:`FourierMixer` (``fnet``) and :class:`MeanPool` (``meanpool``): no parameters.

Causal variants (decoder self-attention; cross-attention for the decoder positions) only read
positions ``<= i``, and incremental decoding computes the new positions from the same terms as
the full pass (equal to rounding; tests/test_mixers.py): the incremental ``state`` keeps
batch-first tensors (reordered by beam search, see
:func:`attnless.model.transformer.reorder_state`) and the position as an ``int``.

``flops(length)`` of every class counts the multiply-adds (x2) of the matrix products and
convolutions of one forward pass over one sentence of ``length`` positions (and, for
cross-attention, an encoder output of ``length`` positions), as implemented; normalisation,
activations and other elementwise work are not counted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnless.model.replacements import (
    LN_EPS,
    NEGATIVE_SLOPE,
    StackedShallowFF,
    _accumulation_dtype,
    _check_length,
)
from attnless.model.transformer import CrossAttentionInterface, IncrementalState, Memory, Padding


def _masked(x: Tensor, keep: Tensor) -> Tensor:
    """``x`` (B, T, c) with the padded positions set to zero (also where they held inf/nan)."""
    return x.masked_fill(~keep[..., None], 0.0)


def _check_heads(width: int, heads: int, what: str) -> None:
    if heads < 1 or width % heads:
        raise ValueError(f"{what} {width} is not divisible by {heads} heads")


class TokenMixer(nn.Module):
    """Per-head position mixing, then a channel MLP (MLP-Mixer style)::

        m_i[k] = sum_j W[k, i, j] * u_j[k] + b[k, i]     (k a head, u_j[k] its d/heads channels)
        out_i = FF(m_i) * keep_i,  FF = LN(d) -> Linear(d, H) -> LeakyReLU -> LN(H) -> Linear(H, d)

    ``u`` is the input with padded tokens zeroed. Only the ``T x T`` block of ``W`` of the
    positions present is read (exactly the right-padded-to-``n`` computation). ``causal``:
    row ``i`` reads columns ``j <= i`` only (lower-triangular ``W``); incremental decoding keeps
    the inputs seen so far and computes row ``i`` alone. ``cross``: the columns are ``n``
    encoder positions followed by ``n`` decoder positions (causal), so output ``i`` mixes the
    whole encoder output and the decoder input up to ``i``.

    Parameters: ``heads * n * C + heads * n`` (``C = n``, or ``2n`` with ``cross``) for the
    mixing, plus ``2dH + 3H + 3d`` for the channel MLP (:class:`StackedShallowFF`).
    """

    def __init__(
        self,
        n: int,
        d_model: int,
        heads: int,
        hidden: int,
        causal: bool = False,
        cross: bool = False,
    ) -> None:
        super().__init__()
        _check_heads(d_model, heads, "d_model")
        if cross and not causal:
            raise ValueError("the cross-attention mixer is causal over the decoder positions")
        self.n, self.d_model, self.heads, self.causal, self.cross = n, d_model, heads, causal, cross
        columns = 2 * n if cross else n
        self.mix_weight = nn.Parameter(torch.empty(heads, n, columns))
        self.mix_bias = nn.Parameter(torch.empty(heads, n))
        self.ff = StackedShallowFF(d_model, hidden, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s default initialisation of each head's ``n x C`` mixing matrix."""
        bound = 1 / math.sqrt(self.mix_weight.size(-1))
        nn.init.uniform_(self.mix_weight, -bound, bound)
        nn.init.uniform_(self.mix_bias, -bound, bound)

    def _mix(self, u: Tensor, weight: Tensor) -> Tensor:
        """``sum_j weight[k, i, j] * u_j[k]``: (B, L, d) by (heads, t, L) -> (B, t, d)."""
        b, length, d = u.shape
        heads = u.view(b, length, self.heads, d // self.heads)
        return torch.einsum("kij,bjkc->bikc", weight, heads).reshape(b, weight.size(1), d)

    def attend(
        self, x: Tensor, padding: Padding, memory: Memory | None, state: IncrementalState | None
    ) -> Tensor:
        """The output; ``memory`` (encoder output, its padding) with ``cross`` only."""
        b, t, d = x.shape
        cache = state.setdefault(self, {}) if state is not None and self.causal else None
        start = cache.get("position", 0) if cache is not None else 0
        _check_length(start + t, self.n, "decoder input" if self.causal else "input")
        u = _masked(x, padding.keep)
        if cache is not None:  # the inputs so far, batch-first: beam search reorders them
            if "inputs" in cache:
                u = torch.cat([cache["inputs"], u], 1)
            cache["inputs"], cache["position"] = u, start + t
        length = start + t
        offset = self.n if self.cross else 0
        weight = self.mix_weight[:, start:length, offset : offset + length]
        if self.causal:
            future = torch.ones(t, length, dtype=torch.bool, device=x.device).triu(start + 1)
            weight = weight.masked_fill(future, 0.0)
        mixed = self._mix(u, weight)
        if memory is not None:
            enc, enc_padding = memory
            _check_length(enc.size(1), self.n, "encoder output")
            enc_weight = self.mix_weight[:, start:length, : enc.size(1)]
            mixed = mixed + self._mix(_masked(enc, enc_padding.keep), enc_weight)
        bias = self.mix_bias[:, start:length].t()  # (t, heads)
        mixed = (mixed.view(b, t, self.heads, -1) + bias[..., None]).view(b * t, d)
        out = self.ff(mixed).view(b, t, d)
        return out * padding.keep[..., None].to(out.dtype)

    def flops(self, length: int) -> int:
        mixing = 2 * length * length * self.d_model * (2 if self.cross else 1)
        return mixing + 4 * length * self.d_model * self.ff.hidden


class SelfTokenMixer(TokenMixer):
    """:class:`TokenMixer` at a self-attention site (encoder, or causal for the decoder)."""

    def __init__(self, n: int, d_model: int, heads: int, hidden: int, causal: bool) -> None:
        super().__init__(n, d_model, heads, hidden, causal=causal)

    def forward(self, x: Tensor, padding: Padding, state: IncrementalState | None = None) -> Tensor:
        return self.attend(x, padding, None, state)


class CrossTokenMixer(TokenMixer, CrossAttentionInterface):
    """:class:`TokenMixer` at the cross-attention site: mixes ``[encoder ; decoder <= i]``."""

    def __init__(self, n: int, d_model: int, heads: int, hidden: int) -> None:
        super().__init__(n, d_model, heads, hidden, causal=True, cross=True)


class ToeplitzMixer(nn.Module):
    """gMLP spatial gating with a Toeplitz position weight, for any length::

        [u ; v] = LeakyReLU(Linear(d, 2H)(LN(x)))       (per position; v zeroed at padding)
        g_i = sum_{r=-w..w} K[k, r] * LN(v)_{i+r} + c    (k the head of the channel, c per channel)
        out_i = Linear(H, d)(u_i * g_i) * keep_i

    Offsets that leave the sentence read zeros, so a sentence's outputs do not depend on how
    much padding follows it, and any length works. ``causal``: offsets ``r <= 0`` only;
    incremental decoding keeps the last ``w`` values of ``LN(v)`` and computes the new
    positions with the same convolution as the full pass. Initialisation follows gMLP: ``K``
    near zero and ``c = 1``, so the gate starts as the identity.

    Parameters: ``3dH + 5H + 3d + heads * K`` with ``K = 2w + 1`` (``w + 1`` causal).
    """

    def __init__(
        self, d_model: int, heads: int, hidden: int, window: int, causal: bool = False
    ) -> None:
        super().__init__()
        _check_heads(hidden, heads, "hidden width")
        if window < 0:
            raise ValueError(f"window {window} must be >= 0")
        self.d_model, self.heads, self.hidden = d_model, heads, hidden
        self.window, self.causal = window, causal
        self.norm_in = nn.LayerNorm(d_model, eps=LN_EPS)
        self.proj_in = nn.Linear(d_model, 2 * hidden)
        self.norm_gate = nn.LayerNorm(hidden, eps=LN_EPS)
        offsets = window + 1 if causal else 2 * window + 1
        self.spatial_weight = nn.Parameter(torch.empty(heads, offsets))  # [:, m]: offset m - w
        self.spatial_bias = nn.Parameter(torch.empty(hidden))
        self.proj_out = nn.Linear(hidden, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        eps = 1e-3 / self.spatial_weight.size(-1)
        nn.init.uniform_(self.spatial_weight, -eps, eps)
        nn.init.ones_(self.spatial_bias)

    def _spatial(self, v: Tensor, cache: dict | None) -> Tensor:
        """The Toeplitz product of ``v`` (B, t, H) over positions (a grouped convolution)."""
        kernel = self.spatial_weight.repeat_interleave(self.hidden // self.heads, 0)[:, None]
        seq = v.transpose(1, 2)  # (B, H, t)
        if not self.causal:
            out = F.conv1d(seq, kernel.to(seq.dtype), padding=self.window, groups=self.hidden)
            return out.transpose(1, 2)
        if cache is not None and "window" in cache:
            history = cache["window"]
        else:  # before the first position: zeros, as offsets that leave the sentence read
            history = seq.new_zeros(seq.size(0), self.hidden, self.window)
        seq = torch.cat([history.to(seq.dtype), seq], -1)
        if cache is not None:  # batch-first, so beam search reorders it
            cache["window"] = seq[..., seq.size(-1) - self.window :]
        return F.conv1d(seq, kernel.to(seq.dtype), groups=self.hidden).transpose(1, 2)

    def forward(self, x: Tensor, padding: Padding, state: IncrementalState | None = None) -> Tensor:
        keep = padding.keep
        cache = state.setdefault(self, {}) if state is not None and self.causal else None
        hidden = F.leaky_relu(self.proj_in(self.norm_in(_masked(x, keep))), NEGATIVE_SLOPE)
        u, v = hidden.chunk(2, -1)
        gate = self._spatial(_masked(self.norm_gate(v), keep), cache) + self.spatial_bias
        out = self.proj_out(u * gate.to(u.dtype))
        return out * keep[..., None].to(out.dtype)

    def flops(self, length: int) -> int:
        offsets = self.spatial_weight.size(-1)
        return 6 * length * self.d_model * self.hidden + 2 * length * self.hidden * offsets


class FourierMixer(nn.Module):
    """FNet's parameter-free mixing: the real part of the 2D DFT of each sentence over its
    real positions and the channels, orthonormal (``torch.fft.fft2(x[:L], norm="ortho").real``
    for a sentence of L tokens), so the output keeps the input's scale for the teacher's W_O.

    Computed as ``C_L X C_d - S_L X S_d`` with the DFT's cosine and sine matrices (``C_L``,
    ``S_L`` built per sentence length): four matrix products with no host synchronisation,
    faster than per-length FFT calls at sentence lengths. Any length works.

    Encoder self-attention only: every DFT output depends on every position, and the DFT of
    a prefix changes with its length (its frequencies are multiples of ``1 / L``), so there is
    no causal form whose earlier outputs stay fixed as tokens are added, i.e. none that could
    be trained with teacher forcing and decoded incrementally with the same outputs.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model  # for flops(); any width works

    def forward(self, x: Tensor, padding: Padding, state: IncrementalState | None = None) -> Tensor:
        b, t, d = x.shape
        keep = padding.keep
        dtype = torch.promote_types(x.dtype, torch.float32)
        u = _masked(x, keep).to(dtype)
        lengths = keep.sum(1).clamp_min(1)  # (B,)
        cos_l, sin_l = _dft(torch.arange(t, device=x.device), lengths[:, None, None], dtype)
        size = torch.tensor(d, device=x.device)
        cos_d, sin_d = _dft(torch.arange(d, device=x.device), size, dtype)
        with torch.autocast(x.device.type, enabled=False):  # no parameters: fp32 costs nothing
            out = cos_l @ (u @ cos_d) - sin_l @ (u @ sin_d)
        return _masked(out, keep).to(x.dtype)

    def flops(self, length: int) -> int:
        d = self.d_model
        return 4 * length * d * d + 4 * length * length * d


def _dft(index: Tensor, size: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Orthonormal DFT cosine and sine matrices ``cos(2 pi jk / N) / sqrt(N)`` (``N = size``,
    broadcast); ``jk`` is reduced mod ``N`` first, so the angles are exact."""
    turns = torch.remainder(index[:, None] * index[None, :], size)
    angle = turns.to(dtype) * (2 * math.pi / size.to(dtype))
    scale = torch.rsqrt(size.to(dtype))
    return torch.cos(angle) * scale, torch.sin(angle) * scale


def _sentence_mean(x: Tensor, keep: Tensor) -> Tensor:
    """The mean of ``x`` (B, T, d) over the real positions of each sentence: (B, 1, d), in the
    accumulation dtype."""
    u = _masked(x, keep).to(_accumulation_dtype(x))
    return u.sum(1, keepdim=True) / keep.sum(1).clamp_min(1)[:, None, None]


class MeanPool(nn.Module):
    """Parameter-free mean of the real positions, at every real position: over the whole
    sentence (encoder), or over positions ``<= i`` (``causal``: a running mean; incremental
    decoding keeps the running sum)."""

    def __init__(self, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal

    def forward(self, x: Tensor, padding: Padding, state: IncrementalState | None = None) -> Tensor:
        keep = padding.keep
        if not self.causal:
            mean = _sentence_mean(x, keep)
        else:
            acc = _accumulation_dtype(x)
            u = _masked(x, keep).to(acc)
            cache = state.setdefault(self, {}) if state is not None else None
            start = cache.get("position", 0) if cache is not None else 0
            sums = u.cumsum(1)
            if cache is not None:
                if "sum" in cache:
                    sums = sums + cache["sum"][:, None]
                cache["sum"], cache["position"] = sums[:, -1], start + x.size(1)  # batch-first
            count = torch.arange(start + 1, start + x.size(1) + 1, device=x.device)
            mean = sums / count[:, None].to(acc)
        return mean.to(x.dtype) * keep[..., None].to(x.dtype)

    def flops(self, length: int) -> int:
        return 0


class CrossMeanPool(CrossAttentionInterface):
    """Parameter-free cross-attention: the mean of the encoder output over its real positions,
    at every real decoder position (attention with uniform weights, without projections)."""

    def attend(
        self, x: Tensor, padding: Padding, memory: Memory, state: IncrementalState | None
    ) -> Tensor:
        enc, enc_padding = memory
        mean = _sentence_mean(enc, enc_padding.keep).to(x.dtype)
        return mean * padding.keep[..., None].to(x.dtype)

    def flops(self, length: int) -> int:
        return 0
