"""The teacher Transformer: attention against a plain reference, parameter counts against the
paper, padding invariance, incremental decoding, the fused loss and the fast dropout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnless.config import ModelConfig
from attnless.model import Seq2SeqTransformer, count_parameters
from attnless.model.loss import CHUNK_BYTES, linear_smoothed_cross_entropy
from attnless.model.ops import attention, dropout, dropout_multipliers, keep_mask
from attnless.model.transformer import PAD, Padding


def test_attention_dropout_path() -> None:
    """The CPU path with dropout: fp32 softmax, then the seeded multipliers on the weights."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    torch.manual_seed(7)
    out = attention(q, k, v, causal=True, dropout_p=0.3)
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, -1)
    torch.manual_seed(7)
    expected = (weights * dropout_multipliers(weights.shape, 0.3, torch.float32)) @ v
    torch.testing.assert_close(out, expected)
    torch.manual_seed(7)
    low = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True, dropout_p=0.3)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), expected, atol=0.06, rtol=0.03)


def float64_attention(q, k, v, keep=None, causal=False):
    """softmax(q k^T / sqrt(d)) v in float64, written out with exp and sums: ``keep`` (B, S)
    marks real keys; ``causal`` lets query i of the last T positions see keys <= S - T + i."""
    q, k, v = (x.double() for x in (q, k, v))
    t, s = q.size(-2), k.size(-2)
    scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.size(-1))
    allowed = torch.ones(scores.shape, dtype=torch.bool)
    if keep is not None:
        allowed &= keep[:, None, None, :]
    if causal:
        query = torch.arange(t)[:, None] + (s - t)
        allowed &= torch.arange(s)[None, :] <= query
    exp = torch.where(allowed, (scores - scores.amax(-1, keepdim=True)).exp(), 0.0)
    return torch.einsum("bhts,bhsd->bhtd", exp / exp.sum(-1, keepdim=True), v)


@pytest.mark.parametrize("dropout_path", [False, True])
@pytest.mark.parametrize(
    ("queries", "padding", "causal"),
    [(6, False, False), (6, True, False), (6, False, True), (6, True, True), (2, False, True)]
    + [(2, True, True)],
)
def test_attention_is_sdpa(queries: int, padding: bool, causal: bool, dropout_path: bool) -> None:
    """``attention()`` (SDPA, or the explicit CPU path taken with dropout; p -> 0 makes it
    deterministic) against an independent float64 softmax attention, with padding masks,
    causal masks (also over fewer queries than keys, as in cached decoding) and both."""
    torch.manual_seed(0)
    q = torch.randn(3, 4, queries, 16)
    k, v = torch.randn(3, 4, 6, 16), torch.randn(3, 4, 6, 16)
    keep = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 5 + [False]])
    mask = keep[:, None, None, :] if padding else None
    p = 1e-12 if dropout_path else 0.0
    out = attention(q, k, v, mask, causal=causal, dropout_p=p)
    expected = float64_attention(q, k, v, keep if padding else None, causal)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_parameter_counts_match_paper() -> None:
    """paper-spec.md §1: MHA 66,048; encoder layer 198,272; decoder layer 264,576;
    stacks with final LayerNorms 2,777,600 (vocabulary excluded)."""
    model = Seq2SeqTransformer(100, 120, ModelConfig())
    layer = model.encoder.layers[0]
    attn = layer.self_attn
    assert count_parameters(attn.core) + count_parameters(attn.out_proj) == 66_048
    assert count_parameters(attn.core) == 49_536
    assert count_parameters(layer) == 198_272
    assert count_parameters(model.decoder.layers[0]) == 264_576
    vocab = 128 * 100 + 128 * 120 + 129 * 120
    assert count_parameters(model) - vocab == 2_777_600


def test_paper_sites_are_named_submodules() -> None:
    model = Seq2SeqTransformer(50, 50, ModelConfig(encoder_layers=1, decoder_layers=1))
    names = dict(model.named_modules())
    for name in [
        "encoder.layers.0",
        "encoder.layers.0.self_attn",
        "encoder.layers.0.self_attn.core",
        "encoder.layers.0.self_attn.out_proj",
        "decoder.layers.0.self_attn.core",
        "decoder.layers.0.cross_attn.core",
        "decoder.layers.0.cross_attn.out_proj",
    ]:
        assert name in names, name


def _tiny_model(seed: int = 0) -> Seq2SeqTransformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=64)
    return Seq2SeqTransformer(30, 30, cfg).eval()


def test_padding_does_not_change_real_positions() -> None:
    model = _tiny_model()
    src = torch.randint(4, 30, (1, 6))
    tgt = torch.randint(4, 30, (1, 5))
    padded_src = torch.cat([src, torch.full((1, 4), PAD)], 1)
    padded_tgt = torch.cat([tgt, torch.full((1, 3), PAD)], 1)
    with torch.no_grad():
        plain = model(src, tgt)
        padded = model(padded_src, padded_tgt)
    torch.testing.assert_close(padded[:, :5], plain, atol=1e-5, rtol=1e-5)


def test_incremental_decoder_equals_full_forward() -> None:
    model = _tiny_model()
    src = torch.randint(4, 30, (3, 7))
    src[0, 5:] = PAD
    tgt = torch.randint(4, 30, (3, 6))
    with torch.no_grad():
        memory, memory_padding = model.encoder(src)
        full = model.decoder(tgt, memory, memory_padding)
        state: dict = {}
        steps = [
            model.decoder(tgt[:, t : t + 1], memory, memory_padding, state=state, start=t)
            for t in range(tgt.size(1))
        ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def smoothed_cross_entropy64(hidden, weight, bias, target, eps):
    """The paper's label-smoothed cross-entropy (1 - eps on the gold token, eps spread over the
    other V - 2 tokens but padding) and the NLL, summed, in float64."""
    hidden, weight, bias = (x.double() for x in (hidden, weight, bias))
    logits = hidden @ weight.T + bias
    logp = logits - logits.logsumexp(-1, keepdim=True)
    rows = torch.arange(len(target))
    q = torch.full_like(logp, eps / (logits.size(-1) - 2))
    q[:, PAD] = 0.0
    q[rows, target] = 1.0 - eps
    return -(q * logp).sum(), -logp[rows, target].sum()


@pytest.mark.parametrize(
    ("dtype", "loss_tolerance", "grad_tolerance"),
    [(torch.float32, 1e-6, 1e-5), (torch.bfloat16, 1e-4, 2e-2)],
)
def test_fused_loss_crosses_chunk_boundaries(
    dtype: torch.dtype, loss_tolerance: float, grad_tolerance: float
) -> None:
    """Loss, NLL and the gradients of hidden states, weight and bias of the chunked fused loss
    against float64 autograd, over a vocabulary and batch that span three chunks (the last one
    partial), with the matmuls in fp32 and in bf16 (inputs rounded to bf16 for the oracle)."""
    vocab, rows, eps = 8000, 1100, 0.1
    chunk = CHUNK_BYTES // (4 * vocab)  # rows of fp32 logits per chunk
    assert 2 * chunk < rows < 3 * chunk
    torch.manual_seed(0)
    hidden = (2 * torch.randn(rows, 16)).requires_grad_()
    generator = torch.nn.Linear(16, vocab)
    target = torch.randint(PAD + 1, vocab, (rows,))
    loss, nll = linear_smoothed_cross_entropy(
        hidden, generator.weight, generator.bias, target, eps, compute_dtype=dtype
    )
    (2 * loss).backward()
    got = [hidden.grad, generator.weight.grad, generator.bias.grad]
    leaves = [
        x.detach().to(dtype).double().requires_grad_() for x in (hidden, *generator.parameters())
    ]
    expected, expected_nll = smoothed_cross_entropy64(*leaves, target, eps)
    (2 * expected).backward()
    close = {"rtol": loss_tolerance, "atol": 0.0}
    torch.testing.assert_close(loss.double(), expected, **close)
    torch.testing.assert_close(nll.double(), expected_nll, **close)
    for name, a, b in zip(("hidden", "weight", "bias"), got, leaves):
        atol = grad_tolerance * b.grad.abs().max()  # errors relative to the largest gradient
        torch.testing.assert_close(a.double(), b.grad, rtol=0.0, atol=atol, msg=name)


def test_fused_loss_without_smoothing_is_cross_entropy() -> None:
    torch.manual_seed(1)
    hidden = torch.randn(50, 8)
    generator = torch.nn.Linear(8, 40)
    target = torch.randint(1, 40, (50,))
    loss, _ = linear_smoothed_cross_entropy(hidden, generator.weight, generator.bias, target, 0.0)
    torch.testing.assert_close(
        loss, F.cross_entropy(generator(hidden), target, reduction="sum"), rtol=1e-5, atol=1e-4
    )


def test_fast_dropout_statistics_and_seeding() -> None:
    torch.manual_seed(3)
    mask = keep_mask((1000, 1000), 0.1, torch.device("cpu"))
    assert abs(mask.float().mean().item() - 0.9) < 0.002
    x = torch.ones(2000, 500)
    torch.manual_seed(5)
    a = dropout(x, 0.1, True)
    torch.manual_seed(5)
    b = dropout(x, 0.1, True)
    assert torch.equal(a, b)
    assert abs(a.mean().item() - 1.0) < 0.01
    assert a.unique().tolist() == pytest.approx([0.0, 1 / 0.9])
    assert torch.equal(dropout(x, 0.1, False), x)


def test_padding_helper() -> None:
    tokens = torch.tensor([[5, 6, PAD], [7, 8, 9]])
    padding = Padding.from_tokens(tokens)
    assert padding.keep.tolist() == [[True, True, False], [True, True, True]]
    assert padding.attn_mask is not None and padding.attn_mask.shape == (2, 1, 1, 3)
    assert Padding.from_tokens(torch.tensor([[5, 6]])).attn_mask is None
