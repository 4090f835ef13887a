"""Pre-LN encoder-decoder Transformer (the paper's teacher) with named, swappable attention sites.

Every place the paper cuts the model is a submodule with a stable name:

- ``encoder.layers[i]``: the whole encoder layer (ELR site)
- ``encoder.layers[i].self_attn``: LN + attention + W_O + dropout + residual (ALRR site)
- ``encoder.layers[i].self_attn.core``: QKV projections + softmax, all heads (ALR/ASLR site)
- ``encoder.layers[i].self_attn.out_proj``: the output projection W_O (kept by ALR)
- ``decoder.layers[i].self_attn.core``: the causal decoder self-attention core
- ``decoder.layers[i].cross_attn.core``: the cross-attention core

A core maps the layer-normed input (B, T, d) to the concatenated head outputs (B, T, d), i.e.
``softmax(QK^T / sqrt(hd) + mask) V`` with heads laid out head-major per token, before W_O.
Replacement networks implement the same call signatures (see :mod:`attnless.model.sites`);
every module called as a cross-attention core is derived from :class:`CrossAttentionInterface`.

Incremental decoding: the decoder accepts a ``state`` dict; each stateful module keeps its own
entry (keyed by the module itself), so a replacement core can cache whatever it needs. Beam
search reorders the state with :func:`reorder_state`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnless.config import ModelConfig
from attnless.model.ops import Dropout, attention

PAD, UNK, BOS, EOS = 0, 1, 2, 3

IncrementalState = dict  # module -> dict[str, Tensor]


@dataclass
class Padding:
    """Padding information of one side of a batch, shared by all layers of a forward pass."""

    keep: Tensor  # (B, L) bool, True at real tokens
    attn_mask: Tensor | None  # (B, 1, 1, L) bool for SDPA (True = attend); None without padding

    @classmethod
    def from_tokens(cls, tokens: Tensor) -> Padding:
        keep = tokens.ne(PAD)
        has_pad = bool((~keep).any()) if keep.device.type == "cpu" else True
        return cls(keep, keep[:, None, None, :] if has_pad else None)


Memory = tuple[Tensor, Padding]  # the encoder output (B, S, d) and its padding


def reorder_state(state: IncrementalState, order: Tensor) -> None:
    """Select (and repeat) batch rows of every cached tensor, in place (beam search, dropping
    finished sentences). Stateful modules keep batch-first tensors as direct values of their
    entry; anything else (positions, weight-derived caches) goes in non-tensor values."""
    for entry in state.values():
        for key, value in entry.items():
            if isinstance(value, Tensor) and value.dim() > 0:
                entry[key] = value.index_select(0, order)


def sinusoidal_table(length: int, dim: int) -> Tensor:
    """The sinusoidal position table of Vaswani et al. (sin on even, cos on odd channels)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


class SelfAttentionCore(nn.Module):
    """Fused QKV projection + scaled dot-product attention over all heads (no W_O)."""

    def __init__(self, d_model: int, heads: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)

    def forward(self, x: Tensor, padding: Padding, state: IncrementalState | None = None) -> Tensor:
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        p = self.dropout if self.training else 0.0
        if state is not None:
            cache = state.setdefault(self, {})
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
            # queries are the newest positions: every cached key is in the past
            mask = None if t == 1 else _causal_mask(t, k.size(2), x.device)
            out = attention(q, k, v, mask, dropout_p=p)
        elif self.causal:
            # right padding: a real query only ever sees earlier (real) keys
            out = attention(q, k, v, causal=True, dropout_p=p)
        else:
            out = attention(q, k, v, padding.attn_mask, dropout_p=p)
        return out.transpose(1, 2).reshape(b, t, d)

    def flops(self, length: int) -> int:
        """Multiply-adds (x2) of one sentence of ``length`` positions: the QKV projection and
        the two attention products (softmax and masking not counted)."""
        d = self.qkv.in_features
        return 6 * length * d * d + 4 * length * length * d


class CrossAttentionInterface(nn.Module):
    """The call signature of a cross-attention core, shared by the modules called as one (the
    core, the networks that replace it, the cross-attention sublayer and the decoder layer):
    ``forward(x, padding, memory, memory_padding, state=None) -> (B, T, d)``, with ``x`` the
    decoder-side input and ``padding`` its padding. Subclasses implement :meth:`attend`."""

    def forward(
        self,
        x: Tensor,
        padding: Padding,
        memory: Tensor,
        memory_padding: Padding,
        state: IncrementalState | None = None,
    ) -> Tensor:
        return self.attend(x, padding, (memory, memory_padding), state)

    def attend(
        self, x: Tensor, padding: Padding, memory: Memory, state: IncrementalState | None
    ) -> Tensor:
        """:meth:`forward`, with ``memory`` the pair (encoder output, its padding)."""
        raise NotImplementedError


class CrossAttentionCore(CrossAttentionInterface):
    """Query projection of the decoder stream, key/value projection of the encoder output."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)

    def attend(
        self, x: Tensor, padding: Padding, memory: Memory, state: IncrementalState | None
    ) -> Tensor:
        """``padding`` (of the decoder side) is unused here; replacement networks need it."""
        enc, enc_padding = memory
        b, t, d = x.shape
        h = self.heads
        q = self.q(x).view(b, t, h, d // h).transpose(1, 2)
        cache = state.setdefault(self, {}) if state is not None else None
        if cache is not None and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            s = enc.size(1)
            k, v = self.kv(enc).view(b, s, 2, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
            if cache is not None:
                cache["k"], cache["v"] = k, v
        p = self.dropout if self.training else 0.0
        mask = enc_padding.attn_mask
        out = attention(q, k, v, mask, dropout_p=p)
        return out.transpose(1, 2).reshape(b, t, d)

    def flops(self, length: int) -> int:
        """As :meth:`SelfAttentionCore.flops`, with an encoder output of ``length`` positions."""
        d = self.q.in_features
        return 6 * length * d * d + 4 * length * length * d


def _causal_mask(queries: int, keys: int, device: torch.device) -> Tensor:
    """Bool mask letting the last ``queries`` of ``keys`` positions see only their past."""
    offset = keys - queries
    return torch.ones(queries, keys, dtype=torch.bool, device=device).tril(offset)


class SelfAttentionBlock(nn.Module):
    """``x + Dropout(W_O(core(LN(x))))``: the pre-LN self-attention sublayer (ALRR site)."""

    def __init__(self, cfg: ModelConfig, causal: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.core = SelfAttentionCore(cfg.d_model, cfg.heads, cfg.attention_dropout, causal)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: Tensor, padding: Padding, state: IncrementalState | None = None) -> Tensor:
        return x + self.dropout(self.out_proj(self.core(self.norm(x), padding, state)))


class CrossAttentionBlock(CrossAttentionInterface):
    """``y + Dropout(W_O(core(LN(y), memory)))``: the pre-LN cross-attention sublayer."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.core = CrossAttentionCore(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = Dropout(cfg.dropout)

    def attend(
        self, y: Tensor, padding: Padding, memory: Memory, state: IncrementalState | None
    ) -> Tensor:
        attended = self.core(self.norm(y), padding, *memory, state)
        return y + self.dropout(self.out_proj(attended))


class FeedForwardBlock(nn.Module):
    """``x + Dropout(W2(Dropout(ReLU(W1(LN(x))))))``: the pre-LN position-wise FFN sublayer."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.linear1 = nn.Linear(cfg.d_model, cfg.ffn_dim)
        self.linear2 = nn.Linear(cfg.ffn_dim, cfg.d_model)
        self.inner_dropout = Dropout(cfg.dropout)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.inner_dropout(F.relu(self.linear1(self.norm(x))))
        return x + self.dropout(self.linear2(hidden))


class EncoderLayer(nn.Module):
    """Self-attention sublayer then feed-forward sublayer (the ELR site)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = SelfAttentionBlock(cfg, causal=False)
        self.ffn = FeedForwardBlock(cfg)

    def forward(self, x: Tensor, padding: Padding) -> Tensor:
        return self.ffn(self.self_attn(x, padding))


class DecoderLayer(CrossAttentionInterface):
    """Causal self-attention, cross-attention and feed-forward sublayers."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = SelfAttentionBlock(cfg, causal=True)
        self.cross_attn = CrossAttentionBlock(cfg)
        self.ffn = FeedForwardBlock(cfg)

    def attend(
        self, y: Tensor, padding: Padding, memory: Memory, state: IncrementalState | None
    ) -> Tensor:
        y = self.self_attn(y, padding, state)
        y = self.cross_attn(y, padding, *memory, state)
        return self.ffn(y)


class Embedder(nn.Module):
    """Token embedding scaled by sqrt(d) plus sinusoidal positions, then dropout."""

    def __init__(self, vocab_size: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, cfg.d_model, padding_idx=PAD)
        self.scale = math.sqrt(cfg.d_model)
        self.register_buffer(
            "positions", sinusoidal_table(cfg.max_positions, cfg.d_model), persistent=False
        )
        self.dropout = Dropout(cfg.dropout)

    def forward(self, tokens: Tensor, start: int = 0) -> Tensor:
        length = tokens.size(1)
        if start + length > self.positions.size(0):
            raise ValueError(
                f"sequence of length {start + length} exceeds model.max_positions "
                f"({self.positions.size(0)})"
            )
        x = self.tokens(tokens) * self.scale + self.positions[start : start + length]
        return self.dropout(x)


class _Stack(nn.Module):
    """Embedding, ``count`` layers and a final LayerNorm: the encoder's and decoder's shape."""

    def __init__(
        self,
        vocab_size: int,
        cfg: ModelConfig,
        layer: Callable[[ModelConfig], nn.Module],
        count: int,
    ) -> None:
        super().__init__()
        self.embed = Embedder(vocab_size, cfg)
        self.layers = nn.ModuleList(layer(cfg) for _ in range(count))
        self.norm = nn.LayerNorm(cfg.d_model)


class Encoder(_Stack):
    def __init__(self, vocab_size: int, cfg: ModelConfig) -> None:
        super().__init__(vocab_size, cfg, EncoderLayer, cfg.encoder_layers)

    def forward(self, src: Tensor) -> tuple[Tensor, Padding]:
        padding = Padding.from_tokens(src)
        x = self.embed(src)
        for layer in self.layers:
            x = layer(x, padding)
        return self.norm(x), padding


class Decoder(_Stack):
    def __init__(self, vocab_size: int, cfg: ModelConfig) -> None:
        super().__init__(vocab_size, cfg, DecoderLayer, cfg.decoder_layers)

    def forward(
        self,
        tgt_in: Tensor,
        memory: Tensor,
        memory_padding: Padding,
        state: IncrementalState | None = None,
        start: int = 0,
    ) -> Tensor:
        """Hidden states for ``tgt_in``; with ``state``, ``tgt_in`` continues the cached prefix
        at position ``start``."""
        padding = Padding.from_tokens(tgt_in)
        y = self.embed(tgt_in, start)
        for layer in self.layers:
            y = layer(y, padding, memory, memory_padding, state)
        return self.norm(y)


class Seq2SeqTransformer(nn.Module):
    """Encoder, decoder and generator (a separate Linear to the target vocabulary)."""

    def __init__(self, src_vocab: int, tgt_vocab: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(src_vocab, cfg)
        self.decoder = Decoder(tgt_vocab, cfg)
        self.generator = nn.Linear(cfg.d_model, tgt_vocab)
        self.reset_parameters()
        if cfg.tie_embeddings:
            self.generator.weight = self.decoder.embed.tokens.weight

    def reset_parameters(self) -> None:
        """Xavier-uniform for every matrix (as the paper's code), zeros for biases."""
        for name, param in self.named_parameters():
            if name.endswith(("core.qkv.weight", "core.kv.weight")):
                # fused projections start as the paper's separate d x d matrices
                for chunk in param.data.split(self.cfg.d_model, dim=0):
                    nn.init.xavier_uniform_(chunk)
            elif param.dim() > 1:
                nn.init.xavier_uniform_(param)
            elif name.endswith("bias"):
                nn.init.zeros_(param)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Decoder hidden states (B, T, d) under teacher forcing; see :meth:`logits`."""
        memory, memory_padding = self.encoder(src)
        return self.decoder(tgt_in, memory, memory_padding)

    def logits(self, hidden: Tensor) -> Tensor:
        return self.generator(hidden)
