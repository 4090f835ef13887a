"""Replacement networks: parameter counts against the paper, shapes, masking, causality,
incremental decoding, and installation of every method into a teacher."""

from __future__ import annotations

import pytest
import torch

from attnless.config import ModelConfig
from attnless.model import Seq2SeqTransformer, count_parameters
from attnless.model.replacements import (
    CausalFixedLengthFF,
    CrossFixedLengthFF,
    FixedLengthFF,
    SequenceTooLong,
)
from attnless.model.sites import METHODS, ReplacementError, get_method, get_module, install
from attnless.model.transformer import PAD, Padding

# paper-spec.md §3, d = 128, n = 50
PAPER_PARAMS = {
    "encoder.self=alr": [339_275, 659_350, 10_261_600, 40_988_800, 163_897_600],
    "encoder.self=alrr": [339_275, 659_350, 10_261_600, 40_988_800, 163_897_600],
    "encoder.self=elr": [339_275, 659_350, 10_261_600, 40_988_800, 163_897_600],
    "encoder.self=aslr": [11_633_600, 23_158_400, 46_208_000, 92_307_200, 92_307_200],
    "decoder.self=alr": [176_203, 339_478, 5_237_728, 20_912_128, 83_609_728],
    "decoder.cross=alr": [992_150, 1_952_300, 30_756_800, 122_931_200, 491_628_800],
}


@pytest.mark.parametrize("key", sorted(PAPER_PARAMS))
def test_parameter_counts_match_paper(key: str) -> None:
    method = METHODS[key]
    for size, expected in zip(["XS", "S", "M", "L", "XL"], PAPER_PARAMS[key], strict=True):
        with torch.device("meta"):  # no memory for the 490M-parameter XL
            student = method.build(50, 128, size, {"heads": 8})
        assert count_parameters(student) == expected, (key, size)


N, D, HEADS = 12, 16, 2


def _padding(lengths: list[int], width: int) -> Padding:
    keep = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return Padding(keep, keep[:, None, None, :])


def _students() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "flat": FixedLengthFF(N, D, 20),
        "heads": FixedLengthFF(N, D, 20, heads=HEADS),
        "causal": CausalFixedLengthFF(N, D, 20),
        "cross": CrossFixedLengthFF(N, D, 20),
        "cross_paper": CrossFixedLengthFF(N, D, 20, causal=False),
    }


def _call(student: torch.nn.Module, x: torch.Tensor, padding: Padding, memory=None, mem_pad=None):
    if isinstance(student, CrossFixedLengthFF):
        return student(x, padding, memory, mem_pad)
    return student(x, padding)


@pytest.mark.parametrize("name", ["flat", "heads", "causal", "cross", "cross_paper"])
def test_shapes_and_padded_outputs_are_zero(name: str) -> None:
    student = _students()[name]
    x = torch.randn(3, 9, D)
    padding = _padding([9, 5, 1], 9)
    memory, mem_pad = torch.randn(3, 7, D), _padding([7, 3, 6], 7)
    out = _call(student, x, padding, memory, mem_pad)
    assert out.shape == (3, 9, D)
    assert torch.all(out[~padding.keep] == 0)
    assert torch.any(out[padding.keep] != 0)


@pytest.mark.parametrize("name", ["flat", "heads", "causal", "cross", "cross_paper"])
def test_padded_inputs_never_change_any_output(name: str) -> None:
    student = _students()[name]
    x = torch.randn(2, 8, D)
    padding = _padding([8, 4], 8)
    memory, mem_pad = torch.randn(2, 6, D), _padding([6, 2], 6)
    out = _call(student, x, padding, memory, mem_pad)
    x2, memory2 = x.clone(), memory.clone()
    x2[1, 4:] = torch.randn(4, D) * 10
    memory2[1, 2:] = torch.randn(4, D) * 10
    out2 = _call(student, x2, padding, memory2, mem_pad)
    torch.testing.assert_close(out, out2, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["causal", "cross"])
def test_causal_students_never_read_future_positions(name: str) -> None:
    student = _students()[name]
    x = torch.randn(2, 10, D)
    padding = _padding([10, 10], 10)
    memory, mem_pad = torch.randn(2, 5, D), _padding([5, 5], 5)
    out = _call(student, x, padding, memory, mem_pad)
    for j in (3, 7):
        x2 = x.clone()
        x2[:, j] += 5.0
        out2 = _call(student, x2, padding, memory, mem_pad)
        torch.testing.assert_close(out2[:, :j], out[:, :j], atol=0, rtol=0)
        assert not torch.allclose(out2[:, j], out[:, j])


@pytest.mark.parametrize("name", ["causal", "cross"])
def test_incremental_equals_full(name: str) -> None:
    student = _students()[name].eval()
    x = torch.randn(2, 9, D)
    padding = _padding([9, 9], 9)
    memory, mem_pad = torch.randn(2, 6, D), _padding([6, 4], 6)
    state: dict = {}
    step_padding = _padding([1, 1], 1)
    steps = []
    for t in range(9):
        token = x[:, t : t + 1]
        if isinstance(student, CrossFixedLengthFF):
            steps.append(student(token, step_padding, memory, mem_pad, state))
        else:
            steps.append(student(token, step_padding, state))
    full = _call(student, x, padding, memory, mem_pad)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_paper_mode_cross_refuses_incremental_state() -> None:
    student = _students()["cross_paper"].eval()
    memory, mem_pad = torch.randn(2, 6, D), _padding([6, 4], 6)
    with pytest.raises(RuntimeError, match="use_cache=False"):
        student(torch.randn(2, 1, D), _padding([1, 1], 1), memory, mem_pad, {})


def test_paper_mode_cross_decodes_like_the_official_full_rerun() -> None:
    """With paper-mode cross-attention students, decoding (cache requested) re-runs the whole
    prefix at every step, as the official greedy decoder does: equal to a literal loop."""
    from attnless.config import DecodeConfig
    from attnless.decode import translate_ids
    from attnless.model.transformer import BOS, EOS

    teacher = _teacher().eval()
    for layer in range(2):
        method = METHODS["decoder.cross=alr"]
        net = method.build(N, D, "S", {"heads": HEADS, "causal": False})
        install(teacher, method.path(layer), net)
    torch.manual_seed(2)
    sources = [torch.randint(4, 40, (k,)).tolist() for k in (3, 6, 8)]
    cfg = DecodeConfig(beam=1, max_len_a=1.0, max_len_b=2)
    decoded = translate_ids(teacher, sources, cfg, max_positions=N)
    for src, hyp in zip(sources, decoded, strict=True):
        prefix = [BOS]
        src_t = torch.tensor([src])
        with torch.no_grad():
            while len(prefix) - 1 < min(len(src) + 2, N - 1):  # the decoder's length cap
                hidden = teacher(src_t, torch.tensor([prefix]))[0, -1]
                logits = teacher.logits(hidden)
                logits[[PAD, BOS]] = float("-inf")  # never generated
                token = int(logits.argmax(-1))
                if token == EOS:
                    break
                prefix.append(token)
        assert hyp == prefix[1:]


def test_too_long_sequences_are_refused_clearly() -> None:
    student = _students()["flat"]
    with pytest.raises(SequenceTooLong, match="n=12"):
        student(torch.randn(1, N + 1, D), _padding([N + 1], N + 1))


def _teacher() -> Seq2SeqTransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=D, heads=HEADS, encoder_layers=2, decoder_layers=2, ffn_dim=32)
    return Seq2SeqTransformer(40, 40, cfg)


@pytest.mark.parametrize("key", sorted(METHODS))
def test_every_method_installs_and_trains(key: str) -> None:
    method = METHODS[key]
    teacher = _teacher()
    src = torch.randint(4, 40, (3, 7))
    src[1, 5:] = PAD
    tgt = torch.randint(4, 40, (3, 6))
    tgt[2, 4:] = PAD
    target_module = get_module(teacher, method.path(1))
    captured = {}
    handle = target_module.register_forward_hook(
        lambda m, args, out: captured.update(args=args, out=out)
    )
    with torch.no_grad():
        teacher(src, tgt)
    handle.remove()
    student = method.build(N, D, "S", {"heads": HEADS})
    prediction = student(*captured["args"])
    assert prediction.shape == captured["out"].shape
    original = install(teacher, method.path(1), student)
    assert original is target_module
    assert get_module(teacher, method.path(1)) is student
    hidden = teacher(src, tgt)
    hidden.square().mean().backward()
    grads = [p.grad for p in student.parameters()]
    assert all(g is not None for g in grads)
    if grads:
        assert any(g.abs().sum() > 0 for g in grads)
    else:  # a parameter-free student (fnet, meanpool): gradients flow through it to its input
        args = [
            a.detach().requires_grad_() if torch.is_tensor(a) and a.is_floating_point() else a
            for a in captured["args"]
        ]
        student(*args).square().sum().backward()
        inputs = [a for a in args if torch.is_tensor(a) and a.requires_grad]
        assert any(a.grad is not None and a.grad.abs().sum() > 0 for a in inputs)


def test_unknown_method_and_size() -> None:
    with pytest.raises(ReplacementError, match="unknown replacement encoder.self=foo"):
        get_method("encoder.self", "foo")
    with pytest.raises(ReplacementError, match="unknown size 'XXL'"):
        METHODS["encoder.self=alr"].build(N, D, "XXL", {})


@pytest.mark.parametrize("beam", [1, 3])
def test_hybrid_cached_decoding_equals_uncached(beam: int) -> None:
    """Decoder-side students keep incremental state that survives beam reordering and the
    dropping of finished sentences: cached and uncached decoding agree token for token."""
    from attnless.config import DecodeConfig
    from attnless.decode import translate_ids

    teacher = _teacher().eval()
    for layer in range(2):
        for key in ("decoder.self=alr", "decoder.cross=alr", "encoder.self=alr"):
            method = METHODS[key]
            install(teacher, method.path(layer), method.build(N, D, "S", {"heads": HEADS}))
    with torch.no_grad():
        teacher.generator.bias[3] = 1.5  # EOS: some sentences end early, others at the cap
    torch.manual_seed(1)
    sources = [torch.randint(4, 40, (k,)).tolist() for k in (3, 9, 5, 12, 1, 7)]
    cfg = DecodeConfig(beam=beam, max_len_a=1.0, max_len_b=3)
    cached = translate_ids(teacher, sources, cfg, max_positions=N)
    uncached = translate_ids(
        teacher, sources, DecodeConfig(**{**cfg.__dict__, "use_cache": False}), max_positions=N
    )
    assert cached == uncached
    assert len({len(h) for h in cached}) > 1
