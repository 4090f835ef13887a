"""Encoded examples, the length filter, and length-bucketed token-budget batches.

Conventions: the source is the subword ids as they are (no BOS/EOS, as in the paper, so a
sentence of n tokens fills exactly n of the replacement networks' fixed positions); the target
is ``BOS ids EOS``, the decoder reads ``BOS ids`` and predicts ``ids EOS``.

Batches follow the paper's ``batch_size_fn`` (and fairseq's ``--max-tokens``): a batch of
``count`` pairs costs ``max(count * longest_src, count * (longest_tgt + 2))`` padded tokens,
which must stay within the budget. Pairs are sorted by length, so padding is small; the order
of batches, and of equal-length pairs, is reshuffled every epoch by a generator seeded with
``seed + epoch``, so an epoch's batches are a pure function of (data, seed, epoch) and a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnless.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Examples:
    """Encoded parallel sentences (lists of subword ids, no special tokens)."""

    src: list[list[int]]
    tgt: list[list[int]]

    def __len__(self) -> int:
        return len(self.src)

    def select(self, indices: list[int]) -> Examples:
        return Examples([self.src[i] for i in indices], [self.tgt[i] for i in indices])


def length_filter(examples: Examples, max_len: int) -> tuple[Examples, int, int]:
    """Keep pairs whose source and target have 1 to ``max_len`` tokens. Returns them, the number
    dropped for an empty side (no training signal) and the number dropped as longer than
    ``max_len``."""
    keep, empty, long = [], 0, 0
    for i, (s, t) in enumerate(zip(examples.src, examples.tgt)):
        if not s or not t:
            empty += 1
        elif len(s) > max_len or len(t) > max_len:
            long += 1
        else:
            keep.append(i)
    return examples.select(keep), empty, long


@dataclass
class Batch:
    """Padded tensors of one batch; ``index`` holds the examples' positions in their split."""

    src: Tensor  # (B, S)
    tgt_in: Tensor  # (B, T): BOS ids
    tgt_out: Tensor  # (B, T): ids EOS
    index: list[int]

    @property
    def target_tokens(self) -> int:
        return int(self.tgt_out.ne(PAD_ID).sum())

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(
            self.src.to(device, non_blocking=non_blocking),
            self.tgt_in.to(device, non_blocking=non_blocking),
            self.tgt_out.to(device, non_blocking=non_blocking),
            self.index,
        )

    def pin_memory(self) -> Batch:
        return Batch(
            self.src.pin_memory(), self.tgt_in.pin_memory(), self.tgt_out.pin_memory(), self.index
        )


def pad(rows: list[list[int]]) -> Tensor:
    """Right-pad id lists with PAD into a (len(rows), longest) long tensor."""
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def collate(examples: Examples, indices: list[int]) -> Batch:
    src = pad([examples.src[i] for i in indices])
    tgt = pad([[BOS_ID, *examples.tgt[i], EOS_ID] for i in indices])
    return Batch(src, tgt[:, :-1], tgt[:, 1:].clone(), list(indices))


def token_batches(
    examples: Examples,
    max_tokens: int,
    order: list[int],
) -> list[list[int]]:
    """Split ``order`` (indices, ideally length-sorted) into consecutive batches whose padded
    cost ``max(count * longest_src, count * (longest_tgt + 2))`` stays within ``max_tokens``.
    A single pair over the budget still forms a batch of its own."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest_src = longest_tgt = 0
    for i in order:
        s, t = len(examples.src[i]), len(examples.tgt[i]) + 2
        new_src, new_tgt = max(longest_src, s), max(longest_tgt, t)
        count = len(current) + 1
        if current and max(count * new_src, count * new_tgt) > max_tokens:
            batches.append(current)
            current, new_src, new_tgt = [], s, t
        current.append(i)
        longest_src, longest_tgt = new_src, new_tgt
    if current:
        batches.append(current)
    return batches


def epoch_batches(examples: Examples, max_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """The training batches of one epoch: pairs sorted by (target, source) length with ties
    shuffled, cut into token-budget batches, and the batch order shuffled; all seeded by
    ``seed`` and ``epoch``."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    shuffled = torch.randperm(len(examples), generator=generator).tolist()
    order = sorted(shuffled, key=lambda i: (len(examples.tgt[i]), len(examples.src[i])))
    batches = token_batches(examples, max_tokens, order)
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def sentence_batches(
    examples: Examples, batch_size: int, seed: int, epoch: int | None
) -> list[list[int]]:
    """Batches of ``batch_size`` pairs of similar length (distillation: the students' cost is
    per sentence). Ties and batch order are shuffled by ``seed`` and ``epoch``; ``epoch=None``
    gives deterministic length-sorted batches (validation)."""
    if epoch is None:
        order = list(range(len(examples)))
    else:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(examples), generator=generator).tolist()
    order.sort(key=lambda i: (len(examples.src[i]), len(examples.tgt[i])))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if epoch is not None:
        perm = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in perm]
    return batches


def eval_batches(examples: Examples, max_tokens: int) -> list[list[int]]:
    """Deterministic length-sorted batches for validation (no shuffling)."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples.tgt[i]), len(examples.src[i])))
    return token_batches(examples, max_tokens, order)


def fit_length(examples: Examples, n: int) -> Examples:
    """Pairs whose source and decoder input (BOS + target) fit ``n`` positions (what the
    fixed-length replacement networks can take)."""
    keep = [
        i
        for i, (s, t) in enumerate(zip(examples.src, examples.tgt))
        if 0 < len(s) <= n and len(t) + 1 <= n
    ]
    return examples.select(keep)
