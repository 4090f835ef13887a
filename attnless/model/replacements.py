"""The paper's shallow feed-forward replacement networks (paper-spec.md §2-§3).

Every network follows one template over the sentence padded to a fixed length ``n`` and
flattened::

    LayerNorm(in) -> Linear(in, H) -> LeakyReLU(0.01) -> LayerNorm(H) -> Linear(H, out) -> x mask

Each network is a drop-in module with the call signature of the module it replaces, so the same
object is trained on captured teacher inputs and then installed in the teacher:

- :class:`FixedLengthFF` replaces an encoder self-attention core (ALR; ASLR with one network
  per head), a whole self-attention sublayer (ALRR) or a whole encoder layer (ELR):
  ``(x, padding, state=None) -> (B, T, d)``.
- :class:`CausalFixedLengthFF` replaces a decoder self-attention core: one network, applied
  for each position i to the input masked to positions <= i. Computed exactly, but in one pass
  instead of the paper's n passes, with prefix sums (see :class:`_PrefixFF`); incremental
  decoding costs one position per step.
- :class:`CrossFixedLengthFF` replaces a cross-attention core: input is the flattened encoder
  output concatenated with the flattened decoder-side input.

**Length truncation (exact).** A batch whose longest sentence has T < n positions only needs
the columns of ``Linear(in, H)`` and the rows of ``Linear(H, out)`` of its T positions. The
input LayerNorm still normalises over all ``in`` values, zeros included: its mean and variance
follow from sums over the real values, and the normalised padding ``(0 - mean) / std * g +
beta`` enters the hidden pre-activation as ``-(mean / std) * W1[:, pad] @ g[pad] + W1[:, pad] @
beta[pad]``: one (H, 2) product per step, from the parameters, so outputs and gradients equal
the padded form's (tests/test_replacements.py checks both against a literal ``nn.Sequential``).

Outputs at padded positions are exactly zero, and padded inputs are zeroed before use, so a
padded token never changes any output.

``flops(length)`` of each network counts the multiply-adds (x2) of its matrix products for one
sentence of ``length`` positions (cross-attention: and an encoder output of ``length``), as
computed here (length-truncated); products of the weights alone (the padding's (H, 2) terms,
once per batch or decoding run) and elementwise work are not counted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnless.model.transformer import CrossAttentionInterface, IncrementalState, Memory, Padding

NEGATIVE_SLOPE = 0.01
LN_EPS = 1e-5


class SequenceTooLong(ValueError):
    """A sentence has more positions than a fixed-length replacement network was built for."""


def _check_length(length: int, n: int, what: str) -> None:
    if length > n:
        raise SequenceTooLong(
            f"{what}: a sequence of {length} positions does not fit a replacement network "
            f"built for n={n} positions"
        )


def flatten_padded(x: Tensor, keep: Tensor, n: int) -> Tensor:
    """(B, T, d) -> (B, n*d): zero padded tokens, right-pad to ``n`` positions, flatten."""
    b, t, d = x.shape
    _check_length(t, n, "input")
    x = x * keep[..., None].to(x.dtype)
    if t < n:
        x = F.pad(x, (0, 0, 0, n - t))
    return x.reshape(b, n * d)


def _accumulation_dtype(x: Tensor) -> torch.dtype:
    """fp32 for statistics and running sums (fp64 when the inputs are fp64)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _standardize(z: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """``(z - mean) / std`` of ``z`` (B, w) followed by ``width - w`` zeros, for the first w
    columns, and ``-mean / std`` (the standardized zeros), shape (B, 1). Two-pass variance."""
    zf = z.to(_accumulation_dtype(z))
    mean = zf.sum(-1, keepdim=True) / width
    centered = zf - mean
    var = (centered.square().sum(-1, keepdim=True) + (width - z.size(-1)) * mean.square()) / width
    inv_std = torch.rsqrt(var + LN_EPS)
    return centered * inv_std, -mean * inv_std


def _compute_dtype(t: Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul of ``t`` in (``t``'s own when it is off)."""
    device = t.device.type
    if torch.is_autocast_enabled(device) and t.is_floating_point() and t.dtype != torch.float64:
        return torch.get_autocast_dtype(device)
    return t.dtype


def _matmul_into(out: Tensor, a: Tensor, b: Tensor) -> None:
    """``out[...] = a @ b``, written in place when the dtypes allow (no temporary)."""
    if a.dtype == out.dtype:
        torch.mm(a, b, out=out)
    else:
        out.copy_(a @ b)


class _TruncatedInputLayer(torch.autograd.Function):
    """``Linear1(LayerNorm(z'))`` of one network from the standardized real columns of ``z'``
    (see :func:`_standardize`), with hand-written gradients: each full-size weight gradient is
    written once, with no zero-filled slice gradients to add up (autograd's slicing costs
    several passes over the 20M-value ``W1`` of ALR-L per step). The padding's part is kept in
    fp32 (an (H, 2) product) and the real columns' GEMM runs in the autocast dtype."""

    @staticmethod
    def forward(ctx, standard, standard_zero, gain, bias, w1, b1):
        w = standard.size(-1)
        dtype = _compute_dtype(w1)
        with torch.autocast(standard.device.type, enabled=False):
            normed = (standard * gain[:w] + bias[:w]).to(dtype)
            w1_real = w1[:, :w].to(dtype)
            pre = (normed @ w1_real.t()).to(standard.dtype)
            # (2, pad), transposed in the product: a contiguous operand makes both skinny
            # products (here and in backward) run at memory speed (measured 2-8x faster)
            affine = torch.stack([gain[w:], bias[w:]]).to(w1.dtype)
            folded = w1[:, w:] @ affine.t()  # (H, 2)
            pre = pre + standard_zero * folded[:, 0] + (folded[:, 1] + b1).to(pre.dtype)
        ctx.save_for_backward(standard, standard_zero, gain, w1, normed, w1_real, affine, folded)
        return pre

    @staticmethod
    def backward(ctx, grad):
        standard, standard_zero, gain, w1, normed, w1_real, affine, folded = ctx.saved_tensors
        w = standard.size(-1)
        with torch.autocast(grad.device.type, enabled=False):
            grad_w1 = torch.empty_like(w1)
            _matmul_into(grad_w1[:, :w], grad.to(normed.dtype).t(), normed)
            grad_folded = torch.stack([(grad * standard_zero).sum(0), grad.sum(0)], -1)
            grad_folded = grad_folded.to(w1.dtype)
            torch.mm(grad_folded, affine, out=grad_w1[:, w:])
            grad_affine = (grad_folded.t() @ w1[:, w:]).to(gain.dtype)  # (2, pad)
            grad_normed = (grad.to(w1_real.dtype) @ w1_real).to(standard.dtype)
            grad_gain = torch.cat([(grad_normed * standard).sum(0), grad_affine[0]])
            grad_bias = torch.cat([grad_normed.sum(0), grad_affine[1]])
            grad_standard = grad_normed * gain[:w] if ctx.needs_input_grad[0] else None
            grad_zero = grad @ folded[:, :1].to(grad.dtype) if ctx.needs_input_grad[1] else None
        return grad_standard, grad_zero, grad_gain, grad_bias, grad_w1, grad.sum(0)


class _TruncatedOutputLayer(torch.autograd.Function):
    """The first ``rows`` outputs of ``Linear2`` of one network, with a gradient written once
    (zeros for the other rows) instead of autograd's zero-filled copy of the slice."""

    @staticmethod
    def forward(ctx, hidden, w2, b2, rows: int):
        dtype = _compute_dtype(w2)
        with torch.autocast(hidden.device.type, enabled=False):
            hidden_c, w2_real = hidden.to(dtype), w2[:rows].to(dtype)
            out = torch.addmm(b2[:rows].to(dtype), hidden_c, w2_real.t())
        ctx.save_for_backward(hidden_c, w2_real)
        ctx.shape, ctx.dtypes = w2.shape, (hidden.dtype, w2.dtype)
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden_c, w2_real = ctx.saved_tensors
        rows = w2_real.size(0)
        hidden_dtype, weight_dtype = ctx.dtypes
        with torch.autocast(grad.device.type, enabled=False):
            grad_c = grad.to(hidden_c.dtype)
            grad_w2 = grad.new_empty(ctx.shape, dtype=weight_dtype)
            grad_w2[rows:] = 0
            _matmul_into(grad_w2[:rows], grad_c.t(), hidden_c)
            grad_b2 = grad.new_zeros(ctx.shape[0], dtype=weight_dtype)
            grad_b2[:rows] = grad.sum(0)
            grad_hidden = (grad_c @ w2_real).to(hidden_dtype) if ctx.needs_input_grad[0] else None
        return grad_hidden, grad_w2, grad_b2, None


class StackedShallowFF(nn.Module):
    """``k`` independent copies of the paper's template (one per head for ASLR, else ``k = 1``).

    Parameters are stacked along a leading dimension of size ``k``; the forward pass maps
    (B, in) to (B, k, out) with one batched matmul per layer. ``forward(z, width, rows)`` takes
    the first ``z.size(-1)`` inputs of an input of ``width`` whose other values are zeros, and
    computes the first ``rows`` outputs of each copy only (exactly; see the module docstring).
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, k: int = 1) -> None:
        super().__init__()
        self.k, self.in_features, self.hidden, self.out_features = (
            k,
            in_features,
            hidden,
            out_features,
        )
        self.norm_in_weight = nn.Parameter(torch.ones(k, in_features))
        self.norm_in_bias = nn.Parameter(torch.zeros(k, in_features))
        self.fc1_weight = nn.Parameter(torch.empty(k, hidden, in_features))
        self.fc1_bias = nn.Parameter(torch.empty(k, hidden))
        self.norm_hidden_weight = nn.Parameter(torch.ones(k, hidden))
        self.norm_hidden_bias = nn.Parameter(torch.zeros(k, hidden))
        self.fc2_weight = nn.Parameter(torch.empty(k, out_features, hidden))
        self.fc2_bias = nn.Parameter(torch.empty(k, out_features))
        self.reset_parameters()

    # The k = 1 paths read parameters with .squeeze(0), a view: indexing with [0] would make
    # autograd zero-fill and copy a full-size gradient for every weight in every step.

    def reset_parameters(self) -> None:
        """PyTorch's default ``nn.Linear`` initialisation (the paper's), per copy."""
        for weight, bias in ((self.fc1_weight, self.fc1_bias), (self.fc2_weight, self.fc2_bias)):
            fan_in = weight.size(-1)
            for i in range(self.k):
                nn.init.kaiming_uniform_(weight[i], a=math.sqrt(5))
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(bias, -bound, bound)

    def hidden_pre_activation(self, z: Tensor, width: int | None = None) -> Tensor:
        """``Linear1(LayerNorm(z'))``: (B, w) -> (B, k, H), where ``z'`` is ``z`` followed by
        ``width - w`` zeros (default: no zeros)."""
        width = self.in_features if width is None else width
        w = z.size(-1)
        if not 0 < w <= width == self.in_features:
            raise ValueError(f"input of {w} values for a network of {self.in_features} inputs")
        standard, standard_zero = _standardize(z, width)
        if self.k == 1 and w < width:
            return _TruncatedInputLayer.apply(
                standard,
                standard_zero,
                self.norm_in_weight.squeeze(0),
                self.norm_in_bias.squeeze(0),
                self.fc1_weight.squeeze(0),
                self.fc1_bias.squeeze(0),
            )[:, None]
        gain, bias, w1 = self.norm_in_weight, self.norm_in_bias, self.fc1_weight
        if w < width:  # (slicing the full width would cost a zero-filled gradient copy)
            gain, bias, w1 = gain[..., :w], bias[..., :w], w1[..., :w]
        if self.k == 1:
            normed = standard * gain.squeeze(0) + bias.squeeze(0)
            pre = F.linear(normed, w1.squeeze(0), self.fc1_bias.squeeze(0))[:, None]
        else:
            normed = standard[:, None] * gain + bias  # (B, k, w)
            pre = torch.einsum("bki,khi->bkh", normed, w1) + self.fc1_bias
        if w == width:
            return pre
        # the padding's normalised values: standard_zero * g + beta, per column
        affine = torch.stack([self.norm_in_weight[..., w:], self.norm_in_bias[..., w:]], -1)
        folded = self.fc1_weight[..., w:] @ affine  # (k, H, 2)
        return pre + standard_zero[..., None] * folded[..., 0] + folded[..., 1]

    def activate(self, pre: Tensor) -> Tensor:
        """``LayerNorm(LeakyReLU(pre))`` over the last (hidden) dimension, per copy (the
        official layer order)."""
        act = F.leaky_relu(pre, NEGATIVE_SLOPE)
        if self.k == 1:
            return F.layer_norm(
                act,
                (self.hidden,),
                self.norm_hidden_weight.squeeze(0),
                self.norm_hidden_bias.squeeze(0),
                LN_EPS,
            )
        normed = F.layer_norm(act, (self.hidden,), eps=LN_EPS)
        return normed * self.norm_hidden_weight + self.norm_hidden_bias

    def output(self, hidden: Tensor, rows: int | None = None) -> Tensor:
        """``Linear2`` restricted to its first ``rows`` outputs: (B, k, H) -> (B, k, rows)."""
        w2, b2 = self.fc2_weight, self.fc2_bias
        if rows is not None and rows < self.out_features:
            if self.k == 1:
                out = _TruncatedOutputLayer.apply(hidden[:, 0], w2.squeeze(0), b2.squeeze(0), rows)
                return out[:, None]
            w2, b2 = w2[:, :rows], b2[:, :rows]
        if self.k == 1:
            return F.linear(hidden[:, 0], w2.squeeze(0), b2.squeeze(0))[:, None]
        return torch.einsum("bkh,koh->bko", hidden, w2) + b2

    def forward(self, z: Tensor, width: int | None = None, rows: int | None = None) -> Tensor:
        return self.output(self.activate(self.hidden_pre_activation(z, width)), rows)


class FixedLengthFF(nn.Module):
    """Maps a whole sentence (B, T, d_in) to (B, T, d_out) through the flattened template.

    With ``heads > 1`` (ASLR) there is one network per head, each producing the ``n * d/heads``
    values of its head; head outputs are laid out head-major per token, as attention heads are.
    ``truncate=False`` multiplies the full padded width (the official computation; kept for
    the benchmark and the tests, which check that both give the same outputs and gradients).
    """

    def __init__(
        self, n: int, d_model: int, hidden: int, heads: int = 1, truncate: bool = True
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by {heads} heads")
        self.n, self.d_model, self.heads, self.truncate = n, d_model, heads, truncate
        self.ff = StackedShallowFF(n * d_model, hidden, n * d_model // heads, k=heads)

    def forward(self, x: Tensor, padding: Padding, state: IncrementalState | None = None) -> Tensor:
        b, t, d = x.shape
        keep = padding.keep[..., None].to(x.dtype)
        if self.truncate:
            _check_length(t, self.n, "input")
            positions = t
            out = self.ff((x * keep).reshape(b, t * d), self.n * d, t * d // self.heads)
        else:
            positions = self.n
            out = self.ff(flatten_padded(x, padding.keep, self.n))
        # (B, heads, positions * d/heads) -> (B, positions, d), head-major per token
        out = out.view(b, self.heads, positions, d // self.heads).transpose(1, 2)
        out = out.reshape(b, positions, d)[:, :t]
        return out * keep.to(out.dtype)

    def flops(self, length: int) -> int:
        """One network (T*d -> H) per head, each writing its T*d/heads outputs."""
        width = (length if self.truncate else self.n) * self.d_model
        return 2 * width * self.ff.hidden * (self.heads + 1)


class _PrefixFF(nn.Module):
    """Shared machinery of the decoder-side networks: output i = FF(input masked to positions
    <= i), in one pass.

    Let z_i be the flattened input with positions > i zeroed, ``W1`` the first Linear and ``g``,
    ``beta`` the first LayerNorm's parameters. The hidden pre-activation is
    ``W1 (g * (z_i - mu_i) / s_i + beta) + b1 = (W1 (g * z_i) - mu_i W1 g) / s_i + W1 beta + b1``.
    ``W1 (g * z_i) = sum_{j<=i} W1_j (g_j * x_j)`` (``W1_j`` the columns of position j) and
    ``mu_i``, ``s_i`` follow from running sums of x and x^2, so all positions come from one
    batched matmul plus prefix sums, exactly as n separate passes would give; only the columns
    of the positions present are read. An incremental step adds one position's terms to the
    running sums kept in the decoding state. A constant prefix of the input (the encoder output
    of cross-attention) enters the sums once, from its real positions only.
    """

    def __init__(self, n: int, d_model: int, prefix_width: int, hidden: int, out: int) -> None:
        super().__init__()
        self.n, self.d_model, self.prefix_width = n, d_model, prefix_width
        self.ff = StackedShallowFF(prefix_width + n * d_model, hidden, out, k=1)

    def _folded(self, cache: dict | None) -> Tensor:
        """``[W1 g, W1 beta + b1]`` (H, 2): one read of ``W1``. Recomputed every training step;
        kept for the length of a decoding run."""
        if cache is not None and "weights" in cache and not self.training:
            return cache["weights"]["folded"]
        ff = self.ff
        affine = torch.stack([ff.norm_in_weight.squeeze(0), ff.norm_in_bias.squeeze(0)], -1)
        folded = ff.fc1_weight.squeeze(0) @ affine
        folded = folded.to(_accumulation_dtype(folded))
        folded = folded + F.pad(ff.fc1_bias.squeeze(0)[:, None].to(folded.dtype), (1, 0))
        if cache is not None and not self.training:
            cache["weights"] = {"folded": folded}  # not batch-first: kept out of reordering
        return folded

    def _prefix_terms(self, memory: Tensor, memory_keep: Tensor) -> tuple[Tensor, Tensor]:
        """``W1 (g * enc)`` (B, H) and the sums of enc and enc^2 (B, 2) of the flattened encoder
        output, from its real positions only."""
        b, s, d = memory.shape
        _check_length(s, self.n, "encoder output")
        ff = self.ff
        width = s * d
        enc = (memory * memory_keep[..., None].to(memory.dtype)).reshape(b, width)
        gain = ff.norm_in_weight.squeeze(0)[:width]
        proj = F.linear(enc * gain, ff.fc1_weight.squeeze(0)[:, :width])
        acc = _accumulation_dtype(enc)
        ef = enc.to(acc)
        return proj.to(acc), torch.stack([ef.sum(-1), ef.square().sum(-1)], -1)

    def _first_layer(
        self,
        x: Tensor,
        prefix: tuple[Tensor, Tensor] | None,
        cache: dict | None,
        causal: bool = True,
    ) -> tuple[Tensor, int]:
        """Pre-activations (B, T, H) of the next T positions (``causal=False``: (B, 1, H), of
        the whole input); updates the running sums in ``cache`` (incremental decoding).
        ``prefix`` is (encoder output, its keep mask). Returns them and the first position."""
        b, t, d = x.shape
        start = cache.get("position", 0) if cache is not None else 0
        _check_length(start + t, self.n, "decoder input")
        ff = self.ff
        folded = self._folded(cache)
        lo, hi = self.prefix_width + start * d, self.prefix_width + (start + t) * d
        gain = ff.norm_in_weight.squeeze(0)[lo:hi].view(t, d)
        w1 = ff.fc1_weight.squeeze(0)[:, lo:hi].view(-1, t, d)  # (H, T, d)
        acc = _accumulation_dtype(x)
        if causal:  # W1_j (g_j * x_j) per position j
            contrib = torch.einsum("btd,htd->bth", x * gain, w1).to(acc)
        else:
            contrib = F.linear((x * gain).reshape(b, t * d), w1.reshape(-1, t * d)).to(acc)
            contrib = contrib[:, None]
        xf = x.to(acc)
        sums = torch.stack([xf.sum(-1), xf.square().sum(-1)], -1)  # (B, T, 2)
        carry = (cache["proj"], cache["sums"]) if cache is not None and "proj" in cache else None
        if carry is None:
            if prefix is not None:
                carry = self._prefix_terms(*prefix)
            else:
                carry = (x.new_zeros(b, ff.hidden, dtype=acc), x.new_zeros(b, 2, dtype=acc))
        if causal:
            proj = carry[0][:, None] + contrib.cumsum(1)  # W1 (g * z_i), (B, T, H)
            sums = carry[1][:, None] + sums.cumsum(1)
        else:
            proj, sums = carry[0][:, None] + contrib, carry[1][:, None] + sums.sum(1, True)
        if cache is not None:  # batch-first tensors, so beam search can reorder them
            cache["proj"], cache["sums"] = proj[:, -1], sums[:, -1]
            cache["position"] = start + t
        width = ff.in_features
        mean = sums[..., 0] / width
        var = (sums[..., 1] / width - mean.square()).clamp_min(0.0)
        inv_std = torch.rsqrt(var + LN_EPS)
        pre = (proj - mean[..., None] * folded[:, 0]) * inv_std[..., None] + folded[:, 1]
        return pre, start


class CausalFixedLengthFF(_PrefixFF):
    """Decoder self-attention core replacement (ALR site): one network n*d -> H -> d applied
    per position to the causally masked input; exact prefix-sum evaluation (see _PrefixFF)."""

    def __init__(self, n: int, d_model: int, hidden: int) -> None:
        super().__init__(n, d_model, 0, hidden, d_model)

    def forward(self, x: Tensor, padding: Padding, state: IncrementalState | None = None) -> Tensor:
        cache = state.setdefault(self, {}) if state is not None else None
        pre, _ = self._first_layer(x, None, cache)
        hidden = self.ff.activate(pre)
        out = F.linear(hidden, self.ff.fc2_weight.squeeze(0), self.ff.fc2_bias.squeeze(0))
        return out * padding.keep[..., None].to(out.dtype)

    def flops(self, length: int) -> int:
        """Each position's columns of Linear1 once, and Linear2 (H -> d) per position."""
        return 4 * length * self.d_model * self.ff.hidden

    def hidden_values(self, length: int) -> int:
        """Hidden activations of one sentence of ``length``: H per position (the network runs
        once per position), the elementwise work that dominates its training step."""
        return length * self.ff.hidden


class CrossFixedLengthFF(_PrefixFF, CrossAttentionInterface):
    """Cross-attention core replacement (ALR site): ``[enc (n*d) ; dec (n*d)] -> H -> n*d``.

    ``causal=True`` (default): output i sees the encoder output and decoder positions <= i, so
    training and incremental decoding agree exactly; computed in one pass with prefix sums and
    the rows of the output layer that belong to position i. ``causal=False`` is the paper's
    form: one pass over the whole (padding-masked) decoder-side input, so every position sees
    every other. Its outputs at earlier positions change as tokens are added, so it cannot
    decode incrementally: decoding re-runs the whole prefix at every step, as the official
    code does (``supports_incremental`` is False; :func:`attnless.decode.translate_ids`
    checks it).
    """

    def __init__(self, n: int, d_model: int, hidden: int, causal: bool = True) -> None:
        super().__init__(n, d_model, n * d_model, hidden, n * d_model)
        self.causal = causal

    @property
    def supports_incremental(self) -> bool:
        return self.causal

    def attend(
        self, x: Tensor, padding: Padding, memory: Memory, state: IncrementalState | None
    ) -> Tensor:
        b, t, d = x.shape
        keep = padding.keep[..., None].to(x.dtype)
        enc, enc_padding = memory
        prefix = (enc, enc_padding.keep)
        if not self.causal:
            if state is not None:
                raise RuntimeError(
                    "the paper-mode (causal=False) cross-attention network cannot decode "
                    "incrementally: decode with use_cache=False"
                )
            pre, _ = self._first_layer(x * keep, prefix, None, causal=False)
            out = self.ff.output(self.ff.activate(pre), t * d).view(b, t, d)
            return out * keep
        cache = state.setdefault(self, {}) if state is not None else None
        pre, start = self._first_layer(x, prefix, cache)
        hidden = self.ff.activate(pre)  # (B, T, H)
        w2 = self.ff.fc2_weight.squeeze(0).view(self.n, d, -1)[start : start + t]  # (T, d, H)
        b2 = self.ff.fc2_bias.squeeze(0).view(self.n, d)[start : start + t]
        out = torch.einsum("bth,tdh->btd", hidden, w2) + b2
        return out * keep.to(out.dtype)

    def flops(self, length: int) -> int:
        """The encoder output's columns of Linear1 once, then as the decoder self-attention
        network (causal) or one pass over all decoder columns and T*d outputs (paper mode)."""
        width = length * self.d_model
        return 2 * width * self.ff.hidden + 4 * width * self.ff.hidden

    def hidden_values(self, length: int) -> int:
        """Hidden activations of one sentence of ``length``: H per position (causal), or H."""
        return (length if self.causal else 1) * self.ff.hidden
