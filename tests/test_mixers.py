"""Token mixers beyond the paper (attnless/model/mixers.py): parameter counts by formula, shapes,
masks, causality, incremental == full decoding, any-length inputs, and each network against an
independent oracle (explicit loops, dense matrices, torch.fft) in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attnless.config import DecodeConfig, ModelConfig
from attnless.decode import translate_ids
from attnless.hybrid import Hybrid
from attnless.model import Seq2SeqTransformer, count_parameters
from attnless.model.mixers import (
    CrossTokenMixer,
    FourierMixer,
    MeanPool,
    SelfTokenMixer,
    ToeplitzMixer,
)
from attnless.model.replacements import SequenceTooLong
from attnless.model.sites import (
    CHANNEL_FACTORS,
    METHODS,
    SIZES,
    TOEPLITZ_WINDOWS,
    ReplacementError,
    install,
)
from attnless.model.transformer import Padding
from attnless.replacement import Replacement
from attnless.students import StudentSpec
from tests.test_replacement_oracle import paper_network, randomize_norms

N, D, HEADS = 6, 8, 2
NEW = sorted(key for key, method in METHODS.items() if not method.paper)
TOL = {"rtol": 1e-10, "atol": 1e-12}


def _padding(lengths: list[int], width: int) -> Padding:
    keep = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return Padding(keep, keep[:, None, None, :])


def _build(key: str, size: str = "S", n: int = N, d: int = D, heads: int = HEADS):
    """A float64 student of ``key`` with non-trivial LayerNorms and Toeplitz weights."""
    torch.manual_seed(0)
    net = METHODS[key].build(n, d, size, {"heads": heads}).double()
    randomize_norms(net)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("norm_", "spatial")):  # the Toeplitz net's own modules
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5 + 0.5)
    return net


def _is_cross(key: str) -> bool:
    return key.startswith("decoder.cross")


def _run(key: str, net, x: Tensor, padding: Padding, memory=None, mem_pad=None, state=None):
    if _is_cross(key):
        return net(x, padding, memory, mem_pad, state)
    return net(x, padding, state)


# --------------------------------------------------------------------------- parameters


def _expected_params(key: str, size: str, n: int, d: int, h: int) -> int:
    """The documented formulas (attnless/model/sites.py), written out independently."""
    site, _, name = key.partition("=")
    hidden = h * max(1, round(d * CHANNEL_FACTORS[size] / h))
    if name == "mixer":
        columns = 2 * n if site == "decoder.cross" else n
        return h * n * columns + h * n + 2 * d * hidden + 3 * hidden + 3 * d
    if name == "toeplitz":
        w = TOEPLITZ_WINDOWS[size]
        offsets = w + 1 if site == "decoder.self" else 2 * w + 1
        return 3 * d * hidden + 5 * hidden + 3 * d + h * offsets
    return 0  # fnet, meanpool


@pytest.mark.parametrize("key", NEW)
def test_parameter_counts_follow_the_formula(key: str) -> None:
    for n, d, h in ((50, 128, 8), (N, D, HEADS), (7, 12, 3)):
        for size in SIZES:
            with torch.device("meta"):
                net = METHODS[key].build(n, d, size, {"heads": h})
            assert count_parameters(net) == _expected_params(key, size, n, d, h), (key, size, n)


def test_documented_counts_at_the_papers_shape() -> None:
    def counts(key: str) -> list[int]:
        with torch.device("meta"):
            return [count_parameters(METHODS[key].build(50, 128, s, {"heads": 8})) for s in SIZES]

    assert counts("encoder.self=mixer") == [29_072, 37_360, 53_936, 87_088, 153_392]
    assert counts("encoder.self=toeplitz") == [12_872, 25_352, 50_312, 100_232, 200_072]
    assert counts("encoder.self=fnet") == [0] * 5


@pytest.mark.parametrize("key", NEW)
def test_bad_sizes_are_rejected(key: str) -> None:
    with pytest.raises(ReplacementError, match="unknown size 'XXL'"):
        METHODS[key].build(N, D, "XXL", {"heads": HEADS})
    site, _, name = key.partition("=")
    with pytest.raises(ReplacementError, match="unknown size 'XXL'"):
        Replacement.parse(f"{site}={name}:XXL")
    assert Replacement.parse(f"{site}={name}:xs,M") == Replacement(site, name, ("XS", "M"))


def test_bad_shapes_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="d_model 10 is not divisible by 4 heads"):
        SelfTokenMixer(N, 10, 4, 8, causal=False)
    with pytest.raises(ValueError, match="hidden width 10 is not divisible by 4 heads"):
        ToeplitzMixer(16, 4, 10, 2)
    with pytest.raises(ValueError, match="window -1"):
        ToeplitzMixer(16, 4, 8, -1)


# --------------------------------------------------------------------------- masks


@pytest.mark.parametrize("key", NEW)
def test_shapes_and_padded_outputs_are_zero(key: str) -> None:
    net = _build(key)
    x = torch.randn(3, 5, D, dtype=torch.float64)
    padding = _padding([5, 3, 1], 5)
    memory, mem_pad = torch.randn(3, 4, D, dtype=torch.float64), _padding([4, 2, 3], 4)
    out = _run(key, net, x, padding, memory, mem_pad)
    assert out.shape == (3, 5, D) and out.dtype == torch.float64
    assert torch.all(out[~padding.keep] == 0)
    assert torch.all(out[padding.keep].abs().sum(-1) > 0)


@pytest.mark.parametrize("key", NEW)
def test_padded_inputs_never_change_any_output(key: str) -> None:
    net = _build(key)
    x = torch.randn(2, 6, D, dtype=torch.float64)
    padding = _padding([6, 3], 6)
    memory, mem_pad = torch.randn(2, 5, D, dtype=torch.float64), _padding([5, 2], 5)
    out = _run(key, net, x, padding, memory, mem_pad)
    x2, memory2 = x.clone(), memory.clone()
    x2[1, 3:] = torch.randn(3, D, dtype=torch.float64) * 100
    x2[1, 5, 0] = float("nan")  # not even a NaN in a padded position gets through
    memory2[1, 2:] = float("inf")
    out2 = _run(key, net, x2, padding, memory2, mem_pad)
    torch.testing.assert_close(out2, out, atol=0, rtol=0)
    # a sentence's outputs do not depend on how much padding follows it
    alone = _run(key, net, x[1:, :3], _padding([3], 3), memory[1:, :2], _padding([2], 2))
    torch.testing.assert_close(alone, out[1:, :3], **TOL)


CAUSAL = [
    "decoder.cross=mixer",
    "decoder.self=mixer",
    "decoder.self=toeplitz",
    "decoder.self=meanpool",
]


@pytest.mark.parametrize("key", CAUSAL)
def test_causal_variants_never_read_future_positions(key: str) -> None:
    net = _build(key)
    x = torch.randn(2, N, D, dtype=torch.float64)
    padding = _padding([N, N], N)
    memory, mem_pad = torch.randn(2, 4, D, dtype=torch.float64), _padding([4, 3], 4)
    out = _run(key, net, x, padding, memory, mem_pad)
    for j in (1, 4):
        x2 = x.clone()
        x2[:, j:] += 5.0 * torch.randn_like(x2[:, j:])  # not a constant: LN would remove it
        out2 = _run(key, net, x2, padding, memory, mem_pad)
        torch.testing.assert_close(out2[:, :j], out[:, :j], atol=0, rtol=0)
        assert not torch.allclose(out2[:, j], out[:, j])


@pytest.mark.parametrize("key", CAUSAL + ["decoder.cross=meanpool"])
@pytest.mark.parametrize("chunks", [[1] * N, [3, 1, 2]])
def test_incremental_equals_full(key: str, chunks: list[int]) -> None:
    net = _build(key).eval()
    x = torch.randn(2, N, D, dtype=torch.float64)
    memory, mem_pad = torch.randn(2, 5, D, dtype=torch.float64), _padding([5, 3], 5)
    full = _run(key, net, x, _padding([N, N], N), memory, mem_pad)
    state: dict = {}
    steps, start = [], 0
    for size in chunks:
        part = x[:, start : start + size]
        steps.append(_run(key, net, part, _padding([size, size], size), memory, mem_pad, state))
        start += size
    torch.testing.assert_close(torch.cat(steps, 1), full, **TOL)
    for value in state.get(net, {}).values():  # reorder_state reorders only batch-first tensors
        assert not isinstance(value, Tensor) or value.size(0) == 2


# --------------------------------------------------------------------------- oracles


def _mixer_oracle(net, x: Tensor, keep: Tensor, memory=None, mem_keep=None) -> Tensor:
    """The mixer as specified: inputs right-padded to n with padded tokens zeroed, each head's
    n x n (or n x 2n) weight applied position by position, then the channel MLP written as the
    paper's nn.Sequential."""
    b, t, d = x.shape
    n, h = net.n, net.heads
    c = d // h
    ff = paper_network(net.ff)
    u = torch.zeros(b, n, d, dtype=x.dtype)
    u[:, :t] = x * keep[..., None]
    if memory is not None:
        enc = torch.zeros(b, n, d, dtype=x.dtype)
        enc[:, : memory.size(1)] = memory * mem_keep[..., None]
    out = torch.zeros_like(x)
    for bi in range(b):
        for i in range(t):
            mixed = torch.zeros(d, dtype=x.dtype)
            for k in range(h):
                ch = slice(k * c, (k + 1) * c)
                total = net.mix_bias[k, i].detach().clone()
                for j in range(n):
                    if memory is not None:  # columns 0..n-1: the encoder positions
                        total = total + net.mix_weight[k, i, j] * enc[bi, j, ch]
                    if net.causal and j > i:
                        continue
                    column = n + j if net.cross else j
                    total = total + net.mix_weight[k, i, column] * u[bi, j, ch]
                mixed[ch] = total
            out[bi, i] = ff(mixed) * keep[bi, i]
    return out


@pytest.mark.parametrize("key", ["encoder.self=mixer", "decoder.self=mixer", "decoder.cross=mixer"])
def test_mixer_against_explicit_loops(key: str) -> None:
    net = _build(key)
    x = torch.randn(3, 5, D, dtype=torch.float64)
    padding = _padding([5, 4, 2], 5)
    memory, mem_pad = torch.randn(3, 4, D, dtype=torch.float64), _padding([4, 1, 3], 4)
    with torch.no_grad():
        out = _run(key, net, x, padding, memory, mem_pad)
        cross = (memory, mem_pad.keep) if _is_cross(key) else (None, None)
        expected = _mixer_oracle(net, x, padding.keep, *cross)
    torch.testing.assert_close(out, expected, **TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_toeplitz_against_a_dense_toeplitz_matrix(causal: bool) -> None:
    net = _build("decoder.self=toeplitz" if causal else "encoder.self=toeplitz", size="XS")
    w, hidden, h = net.window, net.hidden, net.heads
    t = 9  # longer than the window on both sides
    x = torch.randn(2, t, D, dtype=torch.float64)
    padding = _padding([t, 6], t)
    keep = padding.keep[..., None].double()
    with torch.no_grad():
        out = net(x, padding)
        act = F.leaky_relu(net.proj_in(net.norm_in(x * keep)), 0.01)
        u, v = act[..., :hidden], act[..., hidden:]
        v = net.norm_gate(v) * keep
        gate = torch.empty_like(v)
        for k in range(h):
            dense = torch.zeros(t, t, dtype=torch.float64)
            for i in range(t):
                for j in range(t):
                    offset = j - i
                    if -w <= offset <= (0 if causal else w):
                        dense[i, j] = net.spatial_weight[k, offset + w]
            ch = slice(k * hidden // h, (k + 1) * hidden // h)
            gate[..., ch] = dense @ v[..., ch]
        expected = net.proj_out(u * (gate + net.spatial_bias)) * keep
    torch.testing.assert_close(out, expected, **TOL)


def test_fnet_is_the_real_part_of_the_orthonormal_2d_fft() -> None:
    net = _build("encoder.self=fnet")
    lengths = [7, 4, 1]
    x = torch.randn(3, 7, D, dtype=torch.float64)
    out = net(x, _padding(lengths, 7))
    for b, length in enumerate(lengths):
        expected = torch.fft.fft2(x[b, :length], norm="ortho").real
        torch.testing.assert_close(out[b, :length], expected, **TOL)
    # unitary: the input's norm is kept (the real part of a real input's DFT holds at most it)
    assert float(out[0].norm()) <= float(x[0].norm()) + 1e-9


@pytest.mark.parametrize("key", ["encoder.self=meanpool", "decoder.self=meanpool"])
def test_meanpool_against_explicit_means(key: str) -> None:
    net = _build(key)
    lengths = [5, 2]
    x = torch.randn(2, 5, D, dtype=torch.float64)
    out = net(x, _padding(lengths, 5))
    for b, length in enumerate(lengths):
        for i in range(length):
            seen = x[b, : i + 1] if net.causal else x[b, :length]
            torch.testing.assert_close(out[b, i], seen.mean(0), **TOL)


def test_cross_meanpool_is_the_mean_of_the_source() -> None:
    net = _build("decoder.cross=meanpool")
    x = torch.randn(2, 3, D, dtype=torch.float64)
    memory = torch.randn(2, 4, D, dtype=torch.float64)
    out = net(x, _padding([3, 2], 3), memory, _padding([4, 1], 4))
    torch.testing.assert_close(out[0], memory[0].mean(0).expand(3, D), **TOL)
    torch.testing.assert_close(out[1, :2], memory[1, :1].expand(2, D), **TOL)


# --------------------------------------------------------------------------- length


LENGTH_FREE = [k for k in NEW if not METHODS[k].fixed_length]


def test_length_capped_methods_are_exactly_the_mixers() -> None:
    assert sorted(k for k in NEW if METHODS[k].fixed_length) == [
        "decoder.cross=mixer",
        "decoder.self=mixer",
        "encoder.self=mixer",
    ]


@pytest.mark.parametrize("key", LENGTH_FREE)
def test_length_free_methods_run_on_any_length(key: str) -> None:
    net = _build(key)
    t = 3 * N
    x = torch.randn(2, t, D, dtype=torch.float64)
    padding = _padding([t, N + 2], t)
    memory, mem_pad = torch.randn(2, t, D, dtype=torch.float64), _padding([t, 2], t)
    out = _run(key, net, x, padding, memory, mem_pad)
    assert out.shape == (2, t, D) and torch.isfinite(out).all()
    assert torch.all(out[~padding.keep] == 0) and torch.all(out[padding.keep].abs().sum(-1) > 0)


@pytest.mark.parametrize("key", ["encoder.self=mixer", "decoder.self=mixer", "decoder.cross=mixer"])
def test_mixers_refuse_inputs_longer_than_n(key: str) -> None:
    net = _build(key)
    long, short = torch.randn(1, N + 1, D).double(), torch.randn(1, 2, D).double()
    fits = _padding([2], 2)
    with pytest.raises(SequenceTooLong, match=f"n={N}"):
        _run(key, net, long, _padding([N + 1], N + 1), short, fits)
    if _is_cross(key):  # an encoder output longer than n
        with pytest.raises(SequenceTooLong, match="encoder output"):
            net(short, fits, long, _padding([N + 1], N + 1))
    if key.startswith("decoder"):  # incremental decoding past position n
        state: dict = {}
        for _ in range(N):
            _run(key, net, short[:, :1], _padding([1], 1), short, fits, state)
        with pytest.raises(SequenceTooLong, match="decoder input"):
            _run(key, net, short[:, :1], _padding([1], 1), short, fits, state)


def test_hybrid_evaluation_falls_back_only_for_length_capped_students() -> None:
    def sides(*entries: str) -> tuple[bool, bool]:
        specs = []
        for entry in entries:
            site, _, method = entry.partition("=")
            specs.append(StudentSpec(site, method, "M", 0))
        hybrid = Hybrid(None, specs, N)  # type: ignore[arg-type]
        return hybrid.encoder_side, hybrid.decoder_side

    assert sides("encoder.self=toeplitz", "decoder.self=toeplitz") == (False, False)
    assert sides("encoder.self=fnet", "decoder.cross=meanpool") == (False, False)
    assert sides("encoder.self=mixer") == (True, False)
    assert sides("decoder.self=mixer") == (False, True)
    assert sides("encoder.self=toeplitz", "decoder.cross=mixer") == (True, True)
    assert sides("encoder.self=alr", "decoder.self=meanpool") == (True, False)


# --------------------------------------------------------------------------- decoding


def _teacher() -> Seq2SeqTransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, heads=2, encoder_layers=2, decoder_layers=2, ffn_dim=32)
    return Seq2SeqTransformer(40, 40, cfg)


VARIANTS = {
    "mixers": ("encoder.self=mixer", "decoder.self=mixer", "decoder.cross=mixer"),
    "toeplitz": ("encoder.self=toeplitz", "decoder.self=toeplitz", "decoder.cross=meanpool"),
    "parameter-free": ("encoder.self=fnet", "decoder.self=meanpool", "decoder.cross=mixer"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("beam", [1, 3])
def test_cached_decoding_equals_uncached(variant: str, beam: int) -> None:
    """Students at every site keep incremental state that survives beam reordering and the
    dropping of finished sentences: cached and uncached decoding agree token for token."""
    n = 12
    teacher = _teacher().eval()
    for layer in range(2):
        for key in VARIANTS[variant]:
            method = METHODS[key]
            torch.manual_seed(layer)
            net = method.build(n, 16, "S", {"heads": 2})
            with torch.no_grad():
                for name, p in net.named_parameters():
                    if name.startswith("spatial_weight"):
                        p.normal_(0, 0.5)  # gMLP's near-zero start would hide the mixing
            install(teacher, method.path(layer), net)
    with torch.no_grad():
        teacher.generator.bias[3] = 0.5  # EOS: some sentences end early, others at the cap
    torch.manual_seed(1)
    capped = any(METHODS[k].fixed_length for k in VARIANTS[variant])
    lengths = (3, 9, 5, 12, 1, 7) + (() if capped else (30,))  # length-free: longer than n
    sources = [torch.randint(4, 40, (k,)).tolist() for k in lengths]
    cfg = DecodeConfig(beam=beam, max_len_a=1.0, max_len_b=3)
    positions = n if capped else None
    cached = translate_ids(teacher, sources, cfg, max_positions=positions)
    uncached = translate_ids(
        teacher,
        sources,
        DecodeConfig(**{**cfg.__dict__, "use_cache": False}),
        max_positions=positions,
    )
    assert cached == uncached
    assert len({len(h) for h in cached}) > 1


# --------------------------------------------------------------------------- FLOPs


def _counted(net, key: str, batch: int, t: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    x = torch.randn(batch, t, D)
    full = _padding([t] * batch, t)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        _run(key, net, x, full, torch.randn(batch, t, D), full)
    return counter.get_total_flops()


@pytest.mark.parametrize("key", sorted(METHODS))
def test_flops_per_sentence_match_the_flop_counter(key: str) -> None:
    """``flops(length)`` = what torch's FLOP counter counts per sentence (the difference between
    a batch of two and one: products of the weights alone are once per batch)."""
    torch.manual_seed(0)
    net = METHODS[key].build(N, D, "M", {"heads": HEADS}).eval()  # (S: einsum skips GEMMs)
    t = N - 2
    per_sentence = _counted(net, key, 2, t) - _counted(net, key, 1, t)
    assert net.flops(t) == per_sentence, key


def test_teacher_attention_flops() -> None:
    from attnless.model.transformer import SelfAttentionCore
    from attnless.params import replaced_flops, student_flops

    t, d = 16, 128
    assert SelfAttentionCore(d, 8, 0.0, False).flops(t) == 6 * t * d * d + 4 * t * t * d
    assert replaced_flops("encoder.self=toeplitz", d, 8, t) == 6 * t * d * d + 4 * t * t * d
    assert replaced_flops("encoder.self=elr", d, 8, t) is None  # no count for a whole layer
    assert student_flops("encoder.self=meanpool", "M", 200, 50, d, 8) == 0
    hidden, k = 128, 17  # toeplitz M: H = d, window 8
    assert student_flops("encoder.self=toeplitz", "M", t, 50, d, 8) == (
        6 * t * d * hidden + 2 * t * hidden * k
    )
    with pytest.raises(SequenceTooLong):
        student_flops("encoder.self=mixer", "M", 51, 50, d, 8)


# --------------------------------------------------------------------------- classes


def test_module_classes_are_registered() -> None:
    """Every class of the module is reachable from the registry (no dead code)."""
    kinds = set()
    for key in NEW:
        with torch.device("meta"):
            kinds.add(type(METHODS[key].build(N, D, "M", {"heads": HEADS})))
    assert {SelfTokenMixer, CrossTokenMixer, ToeplitzMixer, FourierMixer, MeanPool} <= kinds


def test_cli_help_names_every_method() -> None:
    from attnless.cli import ReplaceOpt

    text = ReplaceOpt.__metadata__[0].help
    for method in METHODS.values():
        assert method.name in text, method.key
