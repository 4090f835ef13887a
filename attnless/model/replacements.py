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
  instead of the paper's n passes, with prefix sums (see its docstring); incremental decoding
  costs one position per step.
- :class:`CrossFixedLengthFF` replaces a cross-attention core: input is the flattened encoder
  output concatenated with the flattened decoder-side input.

Outputs at padded positions are exactly zero, and padded inputs are zeroed before use, so a
padded token never changes any output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnless.model.transformer import IncrementalState, Padding

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


class StackedShallowFF(nn.Module):
    """``k`` independent copies of the paper's template (one per head for ASLR, else ``k = 1``).

    Parameters are stacked along a leading dimension of size ``k``; the forward pass maps
    (B, in) to (B, k, out) with one batched matmul per layer.
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

    def hidden_pre_activation(self, z: Tensor) -> Tensor:
        """``Linear1(LayerNorm(z))``: (B, in) -> (B, k, H)."""
        if self.k == 1:
            normed = F.layer_norm(
                z,
                (self.in_features,),
                self.norm_in_weight.squeeze(0),
                self.norm_in_bias.squeeze(0),
                LN_EPS,
            )
            return F.linear(normed, self.fc1_weight.squeeze(0), self.fc1_bias.squeeze(0))[:, None]
        normed = F.layer_norm(z, (self.in_features,), eps=LN_EPS)
        normed = normed[:, None] * self.norm_in_weight + self.norm_in_bias  # (B, k, in)
        return torch.einsum("bki,khi->bkh", normed, self.fc1_weight) + self.fc1_bias

    def activate(self, pre: Tensor) -> Tensor:
        """``LeakyReLU(LayerNorm(pre))`` over the last (hidden) dimension, per copy."""
        normed = F.layer_norm(pre, (self.hidden,), eps=LN_EPS)
        return F.leaky_relu(
            normed * self.norm_hidden_weight + self.norm_hidden_bias, NEGATIVE_SLOPE
        )

    def output(self, hidden: Tensor) -> Tensor:
        """``Linear2``: (B, k, H) -> (B, k, out)."""
        if self.k == 1:
            return F.linear(hidden[:, 0], self.fc2_weight.squeeze(0), self.fc2_bias.squeeze(0))[
                :, None
            ]
        return torch.einsum("bkh,koh->bko", hidden, self.fc2_weight) + self.fc2_bias

    def forward(self, z: Tensor) -> Tensor:
        return self.output(self.activate(self.hidden_pre_activation(z)))


class FixedLengthFF(nn.Module):
    """Maps a whole sentence (B, T, d_in) to (B, T, d_out) through the flattened template.

    With ``heads > 1`` (ASLR) there is one network per head, each producing the ``n * d/heads``
    values of its head; head outputs are laid out head-major per token, as attention heads are.
    """

    def __init__(self, n: int, d_model: int, hidden: int, heads: int = 1) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by {heads} heads")
        self.n, self.d_model, self.heads = n, d_model, heads
        self.ff = StackedShallowFF(n * d_model, hidden, n * d_model // heads, k=heads)

    def forward(self, x: Tensor, padding: Padding, state: IncrementalState | None = None) -> Tensor:
        b, t, d = x.shape
        out = self.ff(flatten_padded(x, padding.keep, self.n))  # (B, heads, n * d/heads)
        out = out.view(b, self.heads, self.n, d // self.heads).transpose(1, 2)
        out = out.reshape(b, self.n, d)[:, :t]
        return out * padding.keep[..., None].to(out.dtype)


def _accumulation_dtype(x: Tensor) -> torch.dtype:
    """fp32 for the running sums (fp64 when the inputs are fp64)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _PrefixFF(nn.Module):
    """Shared machinery of the causal networks: output i = FF(input masked to positions <= i).

    Let z_i be the flattened input with positions > i zeroed. The first LayerNorm and Linear
    give ``W1 (g * (z_i - mu_i) / s_i + beta) + b1 = (A z_i - mu_i W1 g) / s_i + W1 beta + b1``
    with ``A = W1 diag(g)``. Since ``A z_i = sum_{j<=i} A_j x_j`` (A_j the columns of position
    j) and ``mu_i``, ``s_i`` follow from running sums of x and x^2, all positions come from one
    batched matmul plus prefix sums, exactly as n separate passes would give. An incremental
    step adds one position's terms to the running sums kept in the decoding state.
    """

    def __init__(self, n: int, d_model: int, prefix_width: int, hidden: int, out: int) -> None:
        super().__init__()
        self.n, self.d_model, self.prefix_width = n, d_model, prefix_width
        self.ff = StackedShallowFF(prefix_width + n * d_model, hidden, out, k=1)

    def _folded(self, cache: dict | None) -> dict[str, Tensor]:
        """``A`` split into its prefix and per-position parts, ``W1 g`` and ``W1 beta + b1``.

        Recomputed every training step; cached for the length of a decoding run otherwise."""
        if cache is not None and "folded" in cache and not self.training:
            return cache["folded"]
        ff = self.ff
        w1, g = ff.fc1_weight.squeeze(0), ff.norm_in_weight.squeeze(0)
        a = w1 * g  # (H, width)
        acc = _accumulation_dtype(w1)
        folded = {
            "prefix": a[:, : self.prefix_width],
            "tokens": a[:, self.prefix_width :].view(a.size(0), self.n, self.d_model),
            "w1_g": (w1 @ g).to(acc),
            "bias": (w1 @ ff.norm_in_bias.squeeze(0) + ff.fc1_bias.squeeze(0)).to(acc),
        }
        if cache is not None and not self.training:
            cache["folded"] = folded
        return folded

    def _first_layer(
        self, x: Tensor, prefix: Tensor | None, cache: dict | None
    ) -> tuple[Tensor, int]:
        """Pre-activations (B, T, H) of the next T positions; updates the running sums in
        ``cache`` (incremental decoding). Returns them and the first position's index."""
        b, t, d = x.shape
        start = cache.get("position", 0) if cache is not None else 0
        _check_length(start + t, self.n, "decoder input")
        folded = self._folded(cache)
        width = self.ff.in_features
        a_tokens = folded["tokens"][:, start : start + t]  # (H, T, d)
        acc = _accumulation_dtype(x)
        contrib = torch.einsum("btd,htd->bth", x, a_tokens).to(acc)  # A_j x_j per position
        xf = x.to(acc)
        sums = torch.stack([xf.sum(-1), xf.square().sum(-1)], -1)  # (B, T, 2)
        carry = (cache["proj"], cache["sums"]) if cache is not None and "proj" in cache else None
        if carry is None:
            proj0 = x.new_zeros(b, a_tokens.size(0), dtype=acc)
            sums0 = x.new_zeros(b, 2, dtype=acc)
            if prefix is not None:  # a constant part of every input (the encoder output)
                proj0 = proj0 + (prefix @ folded["prefix"].t()).to(acc)
                pf = prefix.to(acc)
                sums0 = torch.stack([pf.sum(-1), pf.square().sum(-1)], -1)
            carry = (proj0, sums0)
        proj = carry[0][:, None] + contrib.cumsum(1)  # A z_i, (B, T, H)
        sums = carry[1][:, None] + sums.cumsum(1)
        if cache is not None:  # batch-first tensors, so beam search can reorder them
            cache["proj"], cache["sums"] = proj[:, -1], sums[:, -1]
            cache["position"] = start + t
        mean = sums[..., 0] / width
        var = (sums[..., 1] / width - mean.square()).clamp_min(0.0)
        inv_std = torch.rsqrt(var + LN_EPS)
        pre = (proj - mean[..., None] * folded["w1_g"]) * inv_std[..., None] + folded["bias"]
        return pre, start

    def _naive_input(self, x: Tensor, i: int, prefix: Tensor | None) -> Tensor:
        """The paper's input for position i: flattened x with positions > i zeroed."""
        b, t, d = x.shape
        keep = torch.arange(t, device=x.device) <= i
        z = flatten_padded(x, keep.expand(b, t), self.n)
        return z if prefix is None else torch.cat([prefix, z], -1)


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

    def naive_forward(self, x: Tensor, padding: Padding) -> Tensor:
        """The paper's n-pass form (for tests): FF on each causally masked input."""
        outs = [self.ff(self._naive_input(x, i, None))[:, 0] for i in range(x.size(1))]
        return torch.stack(outs, 1) * padding.keep[..., None].to(x.dtype)


class CrossFixedLengthFF(_PrefixFF):
    """Cross-attention core replacement (ALR site): ``[enc (n*d) ; dec (n*d)] -> H -> n*d``.

    ``causal=True`` (default): output i sees the encoder output and decoder positions <= i, so
    training and incremental decoding agree exactly; computed in one pass with prefix sums and
    the rows of the output layer that belong to position i. ``causal=False`` is the paper's
    training-time form: one pass over the whole (padding-masked) decoder-side input, so future
    positions are visible during training; when decoding incrementally, positions not yet
    generated are zeros, as in the paper's decoding.
    """

    def __init__(self, n: int, d_model: int, hidden: int, causal: bool = True) -> None:
        super().__init__(n, d_model, n * d_model, hidden, n * d_model)
        self.causal = causal

    def forward(
        self,
        x: Tensor,
        padding: Padding,
        memory: Tensor,
        memory_padding: Padding,
        state: IncrementalState | None = None,
    ) -> Tensor:
        b, t, d = x.shape
        cache = state.setdefault(self, {}) if state is not None else None
        if cache is not None and "memory" in cache:
            enc = cache["memory"]
        else:
            enc = flatten_padded(memory, memory_padding.keep, self.n)
            if cache is not None:
                cache["memory"] = enc
        keep = padding.keep[..., None]
        if not self.causal:
            return self._full_forward(x, padding, enc, cache) * keep.to(x.dtype)
        pre, start = self._first_layer(x, enc, cache)
        hidden = self.ff.activate(pre)  # (B, T, H)
        w2 = self.ff.fc2_weight.squeeze(0).view(self.n, d, -1)[start : start + t]  # (T, d, H)
        b2 = self.ff.fc2_bias.squeeze(0).view(self.n, d)[start : start + t]
        out = torch.einsum("bth,tdh->btd", hidden, w2) + b2
        return out * keep.to(out.dtype)

    def _full_forward(self, x: Tensor, padding: Padding, enc: Tensor, cache: dict | None) -> Tensor:
        """Non-causal (paper) form; incrementally, the decoder inputs so far are kept."""
        b, t, d = x.shape
        keep = padding.keep
        if cache is not None:
            if "inputs" in cache:
                x = torch.cat([cache["inputs"], x], 1)
                keep = torch.cat([cache["keep"], keep], 1)
            cache["inputs"], cache["keep"] = x, keep
        total = x.size(1)
        z = torch.cat([enc, flatten_padded(x, keep, self.n)], -1)
        out = self.ff(z)[:, 0].view(b, self.n, d)
        return out[:, total - t : total]

    def naive_forward(
        self, x: Tensor, padding: Padding, memory: Tensor, memory_padding: Padding
    ) -> Tensor:
        """The n-pass form of the causal network (for tests)."""
        enc = flatten_padded(memory, memory_padding.keep, self.n)
        d = x.size(-1)
        outs = [
            self.ff(self._naive_input(x, i, enc))[:, 0].view(-1, self.n, d)[:, i]
            for i in range(x.size(1))
        ]
        return torch.stack(outs, 1) * padding.keep[..., None].to(x.dtype)
