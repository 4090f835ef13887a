"""Batched greedy and beam-search decoding of a :class:`Seq2SeqTransformer`.

Entry point: :func:`translate_ids`. Sentences are sorted by source length and packed into
batches of at most ``DecodeConfig.batch_tokens`` padded source tokens; each batch is decoded
with :func:`greedy_batch` (``beam == 1``) or :func:`beam_search_batch` (``beam > 1``), and the
hypotheses come back in the caller's order.

Conventions:

- a source is its subword ids with no special tokens, as in training (an empty source becomes
  ``[EOS]``, so no row is all padding); the decoder starts from ``BOS``; hypotheses are returned
  without BOS and EOS;
- a sentence of ``n`` source tokens gets at most
  ``max_output_length(n) = min(int(max_len_a * n + max_len_b), positions - 1)`` output tokens
  (EOS not counted); greedy truncates there, beam search forces EOS there;
- PAD and BOS are never emitted: their logits are set to -inf before the float32 log-softmax,
  so scores are log-probabilities under the distribution renormalised over the other tokens;
- with ``use_cache`` the decoder runs one position per step on the incremental ``state``;
  without it, it re-runs the whole prefix (for replacement networks with no incremental path);
- finished sentences are dropped from the active batch (rows of the memory, of the
  incremental state via :func:`reorder_state`, of the prefixes) as they finish, so late steps
  only compute the unfinished ones.

Beam search follows fairseq: each step takes the top ``2 * beam`` continuations of the
``beam`` live hypotheses of a sentence; an EOS candidate ranked within the top ``beam`` is
finished with score ``sum(log p) / lp(len)`` where ``lp(len) = ((5 + len) / 6) ** alpha`` is
GNMT's length penalty (``alpha = length_penalty``; ``len`` counts the output tokens including
EOS), and the best ``beam`` non-EOS candidates stay live. A sentence keeps its ``beam`` best
finished hypotheses and stops when either

1. it has ``beam`` finished hypotheses (fairseq's default rule), or
2. no live hypothesis can still beat its best finished one: log-probabilities are <= 0, so a
   live score ``s`` can only fall, and its normalised score is at most
   ``s / max(lp(len + 1), lp(max_len + 1))``.

Rule 2 is exact (it never changes the returned hypothesis, only stops sooner), so the result
is the best hypothesis of fairseq's rule-1 search.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from attnless import hardware
from attnless.config import DecodeConfig
from attnless.data.batching import pad
from attnless.model.transformer import BOS, EOS, PAD, Padding, Seq2SeqTransformer, reorder_state

__all__ = [
    "beam_search_batch",
    "beam_search_scored",
    "greedy_batch",
    "length_penalty",
    "make_batches",
    "max_output_length",
    "translate_ids",
]


# --------------------------------------------------------------------------- batching


def max_output_length(src_len: int, cfg: DecodeConfig, max_positions: int) -> int:
    """Output length cap of a sentence of ``src_len`` source tokens (EOS excluded)."""
    return max(0, min(int(cfg.max_len_a * src_len + cfg.max_len_b), max_positions - 1))


def make_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices into ``lengths`` sorted by length, cut into batches of at most ``batch_tokens``
    padded tokens (``size * longest``); every batch holds at least one sentence."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # sorted ascending: the newest sentence is the longest of the batch
        if current and (len(current) + 1) * lengths[i] > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _source_tensor(sentences: Sequence[Sequence[int]], device: torch.device) -> Tensor:
    """Right-padded (B, S) tensor of the sources (an empty one becomes ``[EOS]``)."""
    return pad([list(ids) or [EOS] for ids in sentences]).to(device)


def _strip(rows: Tensor) -> list[list[int]]:
    """Token lists of a (B, L) tensor, each cut at its first EOS or PAD."""
    out = []
    for row in rows.tolist():
        for j, tok in enumerate(row):
            if tok in (EOS, PAD):
                row = row[:j]
                break
        out.append(row)
    return out


# --------------------------------------------------------------------------- shared steps


def _select_padding(padding: Padding, index: Tensor) -> Padding:
    mask = padding.attn_mask
    return Padding(
        padding.keep.index_select(0, index),
        None if mask is None else mask.index_select(0, index),
    )


def _step_logits(
    model: Seq2SeqTransformer,
    prefix: Tensor,
    memory: Tensor,
    memory_padding: Padding,
    state: dict | None,
) -> Tensor:
    """Float32 logits (N, V) of the token after ``prefix`` (N, t), with PAD and BOS at -inf.

    With ``state`` only the newest token goes through the decoder."""
    if state is not None:
        step = prefix.size(1) - 1
        hidden = model.decoder(prefix[:, -1:], memory, memory_padding, state, start=step)
    else:
        hidden = model.decoder(prefix, memory, memory_padding)
    logits = model.logits(hidden[:, -1]).float()
    logits[:, PAD] = float("-inf")
    logits[:, BOS] = float("-inf")
    return logits


def length_penalty(length: int | Tensor, alpha: float) -> float | Tensor:
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` (1 for ``alpha == 0``)."""
    return ((5.0 + length) / 6.0) ** alpha


# --------------------------------------------------------------------------- greedy


@torch.no_grad()
def greedy_batch(
    model: Seq2SeqTransformer,
    src: Tensor,
    max_lens: Sequence[int],
    use_cache: bool = True,
    drop_finished: bool = True,
) -> list[list[int]]:
    """Greedy hypotheses of a (B, S) source batch; row ``i`` stops at EOS or ``max_lens[i]``.

    ``drop_finished=False`` keeps finished rows in the batch to the end (same result, slower;
    for tests and measurements).
    """
    memory, memory_padding = model.encoder(src)
    batch = src.size(0)
    device = src.device
    limit = max(max_lens, default=0)
    out = torch.full((batch, limit), PAD, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)  # batch row of each active row
    caps = torch.as_tensor(list(max_lens), dtype=torch.long, device=device)
    prefix = torch.full((batch, 1), BOS, dtype=torch.long, device=device)
    state: dict | None = {} if use_cache else None
    for step in range(limit):
        # argmax of the logits = argmax of the log-probabilities
        tokens = _step_logits(model, prefix, memory, memory_padding, state).argmax(-1)
        out[rows, step] = tokens
        prefix = torch.cat([prefix, tokens[:, None]], dim=1)
        done = tokens.eq(EOS) | caps.le(step + 1)
        if not drop_finished:
            # keep every row until all are done; rows past their end keep writing, cut later
            done_rows = out[:, : step + 1].eq(EOS).any(1) | caps.le(step + 1)
            if bool(done_rows.all()):
                break
            continue
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            rows, caps, prefix = rows[keep], caps[keep], prefix[keep]
            memory = memory.index_select(0, keep)
            memory_padding = _select_padding(memory_padding, keep)
            if state is not None:
                reorder_state(state, keep)
    hyps = _strip(out.cpu())
    return [h[:cap] for h, cap in zip(hyps, max_lens, strict=True)]


# --------------------------------------------------------------------------- beam search


class _Finished:
    """The ``beam`` best finished hypotheses of every sentence of a batch (normalised scores)."""

    def __init__(self, batch: int, beam: int, width: int, device: torch.device) -> None:
        self.scores = torch.full((batch, beam), float("-inf"), device=device)
        self.tokens = torch.full((batch, beam, width), PAD, dtype=torch.long, device=device)

    def add(self, sents: Tensor, scores: Tensor, tokens: Tensor) -> None:
        """Merge candidates ``scores`` (n, k) / ``tokens`` (n, k, t) of sentences ``sents``."""
        n, k, t = tokens.shape
        padded = tokens.new_full((n, k, self.tokens.size(2)), PAD)
        padded[:, :, :t] = tokens
        all_scores = torch.cat([self.scores[sents], scores], dim=1)
        all_tokens = torch.cat([self.tokens[sents], padded], dim=1)
        best, index = all_scores.topk(self.scores.size(1), dim=1)
        self.scores[sents] = best
        self.tokens[sents] = all_tokens.gather(1, index[:, :, None].expand(-1, -1, padded.size(2)))

    def best(self) -> tuple[list[list[int]], list[float]]:
        """The best hypothesis of every sentence and its normalised score."""
        scores, index = self.scores.max(1)
        rows = self.tokens[torch.arange(index.numel(), device=index.device), index]
        return _strip(rows.cpu()), scores.tolist()


def beam_search_batch(
    model: Seq2SeqTransformer,
    src: Tensor,
    max_lens: Sequence[int],
    beam: int,
    alpha: float,
    use_cache: bool = True,
    drop_finished: bool = True,
) -> list[list[int]]:
    """Best beam-search hypothesis of every sentence of a (B, S) source batch.

    ``max_lens[i]`` caps sentence ``i`` (EOS is forced there), ``alpha`` is the GNMT length
    penalty exponent; ``drop_finished=False`` keeps finished sentences in the batch to the end
    (same result, slower; for tests and measurements).
    """
    return beam_search_scored(model, src, max_lens, beam, alpha, use_cache, drop_finished)[0]


@torch.no_grad()
def beam_search_scored(
    model: Seq2SeqTransformer,
    src: Tensor,
    max_lens: Sequence[int],
    beam: int,
    alpha: float,
    use_cache: bool = True,
    drop_finished: bool = True,
) -> tuple[list[list[int]], list[float]]:
    """Best beam-search hypotheses of a (B, S) source batch and their scores
    ``sum(log p) / lp(len)`` (EOS included in both); arguments as :func:`beam_search_batch`."""
    memory, memory_padding = model.encoder(src)
    batch, device = src.size(0), src.device
    limit = max(max_lens, default=0)
    finished = _Finished(batch, beam, limit + 1, device)
    sents = torch.arange(batch, device=device)  # batch index of each active sentence
    caps = torch.as_tensor(list(max_lens), dtype=torch.long, device=device)
    expand = torch.arange(batch, device=device).repeat_interleave(beam)
    memory = memory.index_select(0, expand)
    memory_padding = _select_padding(memory_padding, expand)
    prefix = torch.full((batch * beam, 1), BOS, dtype=torch.long, device=device)
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start equal: let only the first one expand at step 0
    state: dict | None = {} if use_cache else None
    first_cap = min(max_lens, default=0)  # on the host: no device sync per step
    for step in range(limit + 1):
        n = sents.numel()
        logits = _step_logits(model, prefix, memory, memory_padding, state)
        # at the length cap only EOS may follow (an all-False mask changes nothing)
        forced = caps.le(step) if step >= first_cap else None
        top_scores, top_beam, top_token = _top_candidates(logits, scores, forced)
        is_eos = top_token.eq(EOS) & top_scores.isfinite()

        # finish EOS candidates ranked within the top `beam`
        eos = is_eos[:, :beam]
        if bool(eos.any()):
            norm = top_scores[:, :beam] / length_penalty(step + 1, alpha)
            norm = norm.masked_fill(~eos, float("-inf"))
            origin = top_beam[:, :beam] + torch.arange(n, device=device)[:, None] * beam
            tokens = prefix[:, 1:].index_select(0, origin.view(-1)).view(n, beam, step)
            finished.add(sents, norm, tokens)

        # the best `beam` non-EOS candidates stay live (EOS candidates sort last)
        rank = torch.arange(2 * beam, device=device).expand(n, -1) + is_eos * (2 * beam)
        live = rank.topk(beam, dim=1, largest=False).indices
        scores = top_scores.gather(1, live)
        live_beam = top_beam.gather(1, live)
        live_token = top_token.gather(1, live)

        done = _beam_done(finished.scores[sents], scores, caps, step, alpha)
        if bool(done.all()):
            break
        if drop_finished:
            keep = (~done).nonzero().squeeze(1)
        else:  # keep computing finished sentences, but with no live hypothesis
            keep = torch.arange(n, device=device)
            scores = scores.masked_fill(done[:, None], float("-inf"))
        order = (keep[:, None] * beam + live_beam[keep]).view(-1)
        prefix = torch.cat([prefix.index_select(0, order), live_token[keep].view(-1, 1)], dim=1)
        scores, sents, caps = scores[keep], sents[keep], caps[keep]
        if keep.numel() < n:
            rows = (keep[:, None] * beam + torch.arange(beam, device=device)).view(-1)
            memory = memory.index_select(0, rows)
            memory_padding = _select_padding(memory_padding, rows)
        if state is not None:
            reorder_state(state, order)
    return finished.best()


def _top_candidates(
    logits: Tensor, scores: Tensor, forced: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``2 * beam`` best continuations of each sentence, best first: their scores
    ``score + log p`` (n, 2 * beam), beams and tokens.

    ``logits`` (n * beam, V) are the next-token logits of the live hypotheses, ``scores``
    (n, beam) their scores; sentences marked in ``forced`` (n,) may only continue with EOS
    (at its full-vocabulary log-probability).
    """
    n, beam = scores.shape
    vocab = logits.size(-1)
    lprobs = F.log_softmax(logits, dim=-1)
    if forced is not None:
        not_eos = torch.arange(vocab, device=logits.device).ne(EOS)
        lprobs = lprobs.masked_fill(forced.repeat_interleave(beam)[:, None] & not_eos, -torch.inf)
    cand = (scores[:, :, None] + lprobs.view(n, beam, vocab)).view(n, beam * vocab)
    top_scores, top_index = cand.topk(2 * beam, dim=1)
    top_beam = top_index.div(vocab, rounding_mode="floor")
    return top_scores, top_beam, top_index.remainder(vocab)


def _beam_done(finished: Tensor, live: Tensor, caps: Tensor, step: int, alpha: float) -> Tensor:
    """Sentences whose search is over: ``beam`` finished hypotheses, or no live hypothesis
    (raw scores ``live`` of length ``step + 1``) can still beat the best finished one."""
    full = finished.isfinite().all(1)
    lp_next = length_penalty(step + 2, alpha)
    lp_cap = length_penalty(caps.float() + 1, alpha)
    bound = live.max(1).values / torch.clamp(lp_cap, min=lp_next)
    return full | bound.le(finished.max(1).values)


# --------------------------------------------------------------------------- entry point


@torch.no_grad()
def translate_ids(
    model: Seq2SeqTransformer,
    src_ids: Sequence[Sequence[int]],
    cfg: DecodeConfig,
    device: torch.device | str | None = None,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
    max_positions: int | None = None,
) -> list[list[int]]:
    """Decode source id lists (no BOS/EOS); hypotheses (no BOS/EOS) in the input order.

    ``device`` defaults to the model's; ``autocast_dtype`` runs the model under
    ``torch.autocast`` with that dtype; ``max_positions`` caps the decoder input length (default:
    the model's position table; fixed-length replacement networks need less). The model is put
    in eval mode and restored afterwards.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    positions = max_positions or model.decoder.embed.positions.size(0)
    caps = [max_output_length(len(s), cfg, positions) for s in src_ids]
    # a module whose earlier outputs change as tokens are added (the paper-mode cross-attention
    # network) needs the whole prefix re-run at every step
    use_cache = cfg.use_cache and all(
        getattr(m, "supports_incremental", True) for m in model.modules()
    )
    batches = make_batches([max(len(s), 1) for s in src_ids], cfg.batch_tokens)
    results: list[list[int]] = [[] for _ in src_ids]
    was_training = model.training
    model.eval()
    try:
        with hardware.autocast(device, autocast_dtype):
            for batch in _maybe_progress(batches, progress):
                src = _source_tensor([src_ids[i] for i in batch], device)
                batch_caps = [caps[i] for i in batch]
                if cfg.beam > 1:
                    hyps = beam_search_batch(
                        model, src, batch_caps, cfg.beam, cfg.length_penalty, use_cache
                    )
                else:
                    hyps = greedy_batch(model, src, batch_caps, use_cache)
                for i, hyp in zip(batch, hyps, strict=True):
                    results[i] = hyp
    finally:
        model.train(was_training)
    return results


def _maybe_progress(batches: list[list[int]], show: bool) -> Iterator[list[int]]:
    """Yield the batches, with a rich progress bar over sentences when ``show``."""
    if not show:
        yield from batches
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("decoding", total=sum(len(b) for b in batches))
        for batch in batches:
            yield batch
            bar.advance(task, len(batch))
