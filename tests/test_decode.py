"""Tests of batched greedy / beam-search decoding (attnless.decode) on tiny models.

Two models: a seeded random one (arbitrary but deterministic outputs, often running to the
length cap) and one trained for ~200 steps on a toy copy task (a few seconds on one core).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
try:
    import attnless  # noqa: F401
except ImportError:  # the package is not installed: use the checkout
    sys.path.insert(0, str(REPO))

from attnless.config import DecodeConfig, ModelConfig  # noqa: E402
from attnless.decode import (  # noqa: E402
    beam_search_batch,
    beam_search_scored,
    greedy_batch,
    length_penalty,
    make_batches,
    translate_ids,
)
from attnless.model.transformer import BOS, EOS, PAD, Seq2SeqTransformer  # noqa: E402

VOCAB = 16
TINY = ModelConfig(
    d_model=32,
    heads=4,
    encoder_layers=2,
    decoder_layers=2,
    ffn_dim=64,
    dropout=0.0,
    attention_dropout=0.0,
    max_positions=64,
)


def random_sentences(n: int, lo: int, hi: int, seed: int) -> list[list[int]]:
    """``n`` random sentences of real tokens (ids >= 4) with lengths in [lo, hi]."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=gen).tolist()
    return [torch.randint(4, VOCAB, (k,), generator=gen).tolist() for k in lengths]


def source(rows: list[list[int]]) -> torch.Tensor:
    """Source batch as the decoder builds it: an empty source becomes ``[EOS]``."""
    return padded([list(r) or [EOS] for r in rows])


def padded(rows: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def random_model() -> Seq2SeqTransformer:
    """Seeded random weights; an EOS bias makes some outputs end early, others at the cap."""
    torch.manual_seed(0)
    model = Seq2SeqTransformer(VOCAB, VOCAB, TINY).eval()
    with torch.no_grad():
        model.generator.bias[EOS] = 2.0
    return model


@pytest.fixture(scope="module")
def copy_model() -> Seq2SeqTransformer:
    """A tiny model trained to copy its source (teacher forcing, plain cross-entropy)."""
    torch.manual_seed(0)
    model = Seq2SeqTransformer(VOCAB, VOCAB, TINY)
    steps = 200
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    warmup_decay = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * (1.0 - s / steps)
    )
    for step in range(steps):
        seqs = random_sentences(64, 3, 8, seed=1000 + step)
        src = padded(seqs)
        tgt_in = padded([[BOS] + s for s in seqs])
        tgt_out = padded([s + [EOS] for s in seqs])
        logits = model.logits(model(src, tgt_in))
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tgt_out.reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
        warmup_decay.step()
    return model.eval()


@pytest.fixture(scope="module")
def sentences() -> list[list[int]]:
    """Varied lengths, an empty source included, in no particular order."""
    return random_sentences(23, 1, 12, seed=7) + [[]]


def score(model: Seq2SeqTransformer, src: list[int], hyp: list[int], alpha: float) -> float:
    """Teacher-forced ``sum log p(hyp + EOS) / lp`` under the decoder's PAD/BOS masking."""
    with torch.no_grad():
        hidden = model(source([src]), padded([[BOS] + hyp]))
        logits = model.logits(hidden)[0].float()
    logits[:, PAD] = float("-inf")
    logits[:, BOS] = float("-inf")
    target = torch.tensor(hyp + [EOS])
    total = F.log_softmax(logits, -1).gather(1, target[:, None]).sum().item()
    return total / length_penalty(len(hyp) + 1, alpha)


def reference_beam(
    model: Seq2SeqTransformer, src: list[int], cap: int, beam: int, alpha: float
) -> list[int]:
    """Unbatched, uncached, list-based beam search with fairseq's rules (for comparison).

    Each step ranks all continuations of the live hypotheses, finishes the EOS ones within
    the top ``beam``, keeps the first ``beam`` non-EOS candidates of the top ``2 * beam`` live, and
    stops once ``beam`` hypotheses have finished; returns the best by normalised score.
    """
    live: list[tuple[float, list[int]]] = [(0.0, [])]
    finished: list[tuple[float, list[int]]] = []
    for step in range(cap + 1):
        n = len(live)
        hidden = model(source([src] * n), padded([[BOS] + toks for _, toks in live]))
        logits = model.logits(hidden[:, -1]).float()
        logits[:, PAD] = float("-inf")
        logits[:, BOS] = float("-inf")
        lprobs = F.log_softmax(logits, -1).tolist()
        cands = [
            (score + lp, toks, tok)
            for (score, toks), row in zip(live, lprobs, strict=True)
            for tok, lp in enumerate(row)
            if lp > float("-inf") and (step < cap or tok == EOS)
        ]
        cands.sort(key=lambda c: -c[0])
        top = cands[: 2 * beam]
        for score, toks, tok in top[:beam]:
            if tok == EOS:
                finished.append((score / length_penalty(step + 1, alpha), toks))
        live = [(score, toks + [tok]) for score, toks, tok in top if tok != EOS][:beam]
        if len(finished) >= beam or not live:
            break
    return max(finished, key=lambda f: f[0])[1]


MODELS = ["random_model", "copy_model"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("beam", [1, 4])
def test_cached_equals_uncached(request, name: str, beam: int, sentences) -> None:
    model = request.getfixturevalue(name)
    cfg = DecodeConfig(beam=beam, batch_tokens=40)
    cached = translate_ids(model, sentences, cfg)
    uncached = translate_ids(model, sentences, cfg.model_copy(update={"use_cache": False}))
    assert cached == uncached
    assert any(len(h) > 5 for h in cached)  # not a degenerate all-empty output


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("beam", [1, 4])
def test_dropping_finished_rows_changes_nothing(request, name: str, beam: int, sentences):
    model = request.getfixturevalue(name)
    src = source(sentences)
    caps = [int(1.2 * len(s) + 10) for s in sentences]
    with torch.no_grad():
        if beam == 1:
            kept = greedy_batch(model, src, caps, drop_finished=False)
            dropped = greedy_batch(model, src, caps, drop_finished=True)
        else:
            kept = beam_search_batch(model, src, caps, beam, 1.0, drop_finished=False)
            dropped = beam_search_batch(model, src, caps, beam, 1.0, drop_finished=True)
    assert kept == dropped


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("use_cache", [True, False])
def test_beam_one_equals_greedy(request, name: str, use_cache: bool, sentences) -> None:
    model = request.getfixturevalue(name)
    src = source(sentences)
    caps = [int(1.2 * len(s) + 10) for s in sentences]
    with torch.no_grad():
        greedy = greedy_batch(model, src, caps, use_cache)
        for alpha in (0.0, 1.0):
            assert beam_search_batch(model, src, caps, 1, alpha, use_cache) == greedy
    assert translate_ids(model, sentences, DecodeConfig(beam=1, use_cache=use_cache)) == greedy


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("beam", [1, 4])
def test_batch_invariance(request, name: str, beam: int, sentences) -> None:
    model = request.getfixturevalue(name)
    together = translate_ids(model, sentences, DecodeConfig(beam=beam))
    alone = translate_ids(model, sentences, DecodeConfig(beam=beam, batch_tokens=1))
    assert together == alone


def test_order_lengths_and_tokens(random_model, copy_model, sentences) -> None:
    cfg = DecodeConfig(max_len_a=0.5, max_len_b=2, batch_tokens=30)
    for model in (random_model, copy_model):
        for beam in (1, 3):
            out = translate_ids(model, sentences, cfg.model_copy(update={"beam": beam}))
            assert len(out) == len(sentences)
            for src, hyp in zip(sentences, out, strict=True):
                assert len(hyp) <= int(0.5 * len(src) + 2)
                assert not {PAD, BOS, EOS} & set(hyp)
    # the copy model reproduces its inputs, so outputs line up with the input order
    inputs = random_sentences(30, 3, 8, seed=3)
    out = translate_ids(copy_model, inputs, DecodeConfig(batch_tokens=30))
    assert sum(hyp == src for src, hyp in zip(inputs, out, strict=True)) >= 27
    # reversing the input reverses the output
    assert translate_ids(copy_model, inputs[::-1], DecodeConfig(batch_tokens=30)) == out[::-1]


def test_length_cap_and_position_table(random_model, sentences) -> None:
    greedy = translate_ids(random_model, sentences, DecodeConfig(max_len_a=0.0, max_len_b=3))
    assert max(len(h) for h in greedy) == 3  # the random model runs into the cap
    short = Seq2SeqTransformer(VOCAB, VOCAB, TINY.model_copy(update={"max_positions": 14}))
    for beam in (1, 2):
        cfg = DecodeConfig(beam=beam, max_len_a=0.0, max_len_b=100)
        for use_cache in (True, False):
            out = translate_ids(short, sentences, cfg.model_copy(update={"use_cache": use_cache}))
            assert max(len(h) for h in out) <= 13


def test_make_batches() -> None:
    lengths = [5, 1, 9, 3, 3, 7, 2]
    batches = make_batches(lengths, batch_tokens=10)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths)
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 10


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
def test_beam_matches_reference(request, name: str, alpha: float, sentences) -> None:
    model = request.getfixturevalue(name)
    cfg = DecodeConfig(beam=3, length_penalty=alpha, max_len_b=4)
    out = translate_ids(model, sentences, cfg)
    with torch.no_grad():
        for src, hyp in zip(sentences, out, strict=True):
            cap = int(cfg.max_len_a * len(src) + cfg.max_len_b)
            assert hyp == reference_beam(model, src, cap, cfg.beam, alpha)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_beam_scores_are_model_scores(request, name: str, alpha: float, sentences) -> None:
    model = request.getfixturevalue(name)
    src = source(sentences)
    caps = [int(0.5 * len(s) + 3) for s in sentences]
    with torch.no_grad():
        hyps, scores = beam_search_scored(model, src, caps, 4, alpha)
    for s, hyp, value in zip(sentences, hyps, scores, strict=True):
        assert value == pytest.approx(score(model, s, hyp, alpha), abs=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_score_at_least_greedy(copy_model, alpha: float) -> None:
    # longer than the training sentences, so the model is unsure and the searches differ
    sentences = random_sentences(16, 6, 12, seed=11)
    cfg = DecodeConfig(length_penalty=alpha)
    greedy = translate_ids(copy_model, sentences, cfg)
    beam = translate_ids(copy_model, sentences, cfg.model_copy(update={"beam": 5}))
    assert greedy != beam
    for src, g, b in zip(sentences, greedy, beam, strict=True):
        assert score(copy_model, src, b, alpha) >= score(copy_model, src, g, alpha) - 1e-4


def test_copy_task_accuracy(copy_model) -> None:
    sentences = random_sentences(100, 3, 8, seed=5)
    for beam in (1, 4):
        out = translate_ids(copy_model, sentences, DecodeConfig(beam=beam))
        assert sum(h == s for s, h in zip(sentences, out, strict=True)) > 90


def test_autocast_runs(copy_model) -> None:
    sentences = random_sentences(20, 3, 8, seed=5)
    out = translate_ids(copy_model, sentences, DecodeConfig(), autocast_dtype=torch.bfloat16)
    assert sum(h == s for s, h in zip(sentences, out, strict=True)) >= 15


def test_mode_restored(copy_model) -> None:
    sentences = random_sentences(4, 3, 8, seed=5)
    try:
        copy_model.train()
        translate_ids(copy_model, sentences, DecodeConfig())
        assert all(m.training for m in copy_model.modules())
        copy_model.eval()
        translate_ids(copy_model, sentences, DecodeConfig(beam=2))
        assert not any(m.training for m in copy_model.modules())
    finally:
        copy_model.eval()
