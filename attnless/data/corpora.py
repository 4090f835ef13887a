"""The corpus registry and :func:`load_split`, the one entry point of the data layer.

``CORPORA`` maps a corpus name to its loader and describer; adding a corpus is one entry.
Splits are ``train``, ``valid`` and ``test``. ``data.train_subset`` keeps the first N training
pairs, ``data.eval_subset`` the first N valid/test pairs. No length filtering happens here.
``data.test_group = k > 1`` makes the test split one of longer inputs for length
generalisation: each k consecutive pairs joined into one (see :func:`group_pairs`).

The ``text`` corpus reads ``data.files.<split>`` (src and tgt paths; split ``test`` reads the
entry named by ``data.test_set``, ``test`` by default). A relative path is used as given if it
exists relative to the working directory, else it is taken relative to the data root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..config import DataConfig, data_root
from . import iwslt, multi30k
from .errors import DataError
from .textio import ParallelText, read_parallel

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Corpus:
    """How to load a corpus split and how to say which files that reads."""

    load: Callable[[DataConfig, str], ParallelText]
    describe: Callable[[DataConfig, str], str]


# --------------------------------------------------------------------------- text corpus


def _text_key(cfg: DataConfig, split: str) -> str:
    return cfg.test_set if split == "test" else split


def _resolve(path: str, root: Path, field: str) -> Path:
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    if (root / given).exists():
        return root / given
    raise DataError(f"{field}: file not found: {path!r} (looked in ./{given} and {root / given})")


def _text_paths(cfg: DataConfig, split: str) -> tuple[Path, Path]:
    key = _text_key(cfg, split)
    files = cfg.files.get(key)
    if files is None or not files.src or not files.tgt:
        have = ", ".join(sorted(cfg.files)) or "none"
        raise DataError(
            f"data.files.{key}: no src/tgt files for the {split} split of the text corpus "
            f"(configured splits: {have}); expected data.files.{key}.src and .tgt"
        )
    root = data_root(cfg)
    return (
        _resolve(files.src, root, f"data.files.{key}.src"),
        _resolve(files.tgt, root, f"data.files.{key}.tgt"),
    )


def load_text(cfg: DataConfig, split: str) -> ParallelText:
    src, tgt = _text_paths(cfg, split)
    return read_parallel(src, tgt, f"text {cfg.src}-{cfg.tgt} {split}")


def describe_text(cfg: DataConfig, split: str) -> str:
    src, tgt = _text_paths(cfg, split)
    return f"text {split} {cfg.src}-{cfg.tgt}: {src} | {tgt}"


# --------------------------------------------------------------------------- registry

CORPORA = MappingProxyType(
    {
        "multi30k": Corpus(multi30k.load, multi30k.describe),
        "iwslt2017": Corpus(iwslt.load, iwslt.describe),
        "text": Corpus(load_text, describe_text),
    }
)
SUPPORTED_CORPORA = tuple(CORPORA)


def _corpus(cfg: DataConfig, split: str) -> Corpus:
    if cfg.corpus not in CORPORA:
        raise DataError(
            f"data.corpus: {cfg.corpus!r} is not supported; expected one of "
            f"{', '.join(SUPPORTED_CORPORA)}"
        )
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not supported; expected one of {', '.join(SPLITS)}")
    return CORPORA[cfg.corpus]


def _subset(value: int | None, field: str) -> int | None:
    if value is not None and value < 1:
        raise DataError(f"{field}: must be a positive number of pairs or null, got {value}")
    return value


def group_pairs(text: ParallelText, k: int) -> ParallelText:
    """Pairs made of ``k`` consecutive pairs of ``text`` each, sources and targets joined with
    a space (in order: pairs 1..k, k+1..2k, ...); a last group of fewer than ``k`` pairs is
    dropped, so every pair is exactly ``k`` of the original ones."""
    if k < 1:
        raise DataError(f"data.test_group: must be a positive number of pairs, got {k}")
    if k == 1:
        return text
    whole = len(text) - len(text) % k
    if not whole:
        raise DataError(
            f"data.test_group: {text.name} has {len(text)} pairs, fewer than one group of {k}"
        )

    def join(lines: list[str]) -> list[str]:
        return [" ".join(lines[i : i + k]) for i in range(0, whole, k)]

    return ParallelText(join(text.src), join(text.tgt), f"{text.name} (groups of {k})")


def load_split(cfg: DataConfig, split: str) -> ParallelText:
    """Load one split of the configured corpus and direction, group the test split's pairs
    (``data.test_group``), then apply the subset option (to the groups)."""
    corpus = _corpus(cfg, split)
    field = "data.train_subset" if split == "train" else "data.eval_subset"
    limit = _subset(cfg.train_subset if split == "train" else cfg.eval_subset, field)
    text = corpus.load(cfg, split)
    if split == "test":
        text = group_pairs(text, cfg.test_group)
    return text if limit is None else text.head(limit)


def describe_source(cfg: DataConfig, split: str) -> str:
    """Which files :func:`load_split` reads for ``split`` (or would download)."""
    return _corpus(cfg, split).describe(cfg, split)
