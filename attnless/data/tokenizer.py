"""SentencePiece subword models: train on the training split, store in the run folder, encode,
decode (detokenize)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from pathlib import Path

from attnless.config import TokenizerConfig
from attnless.data.errors import DataError
from attnless.data.textio import ParallelText
from attnless.runs import atomic_open, read_json, write_json

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
JOINT_FILE = "spm.model"
SIDE_FILES = {"src": "spm.src.model", "tgt": "spm.tgt.model"}
RECORD_FILE = "tokenizer.json"  # what the tokenizer beside it was trained on (a fingerprint)


def _load_processor(path: Path):
    import sentencepiece as spm

    if not path.is_file():
        raise DataError(f"{path}: sentencepiece model not found")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as err:
        raise DataError(f"{path}: not a valid sentencepiece model ({err})") from None


class Tokenizer:
    """Source and target sentencepiece models (the same model when trained jointly)."""

    def __init__(self, src_model: Path, tgt_model: Path) -> None:
        self.src_path, self.tgt_path = Path(src_model), Path(tgt_model)
        self.src = _load_processor(self.src_path)
        self.tgt = self.src if self.tgt_path == self.src_path else _load_processor(self.tgt_path)

    @classmethod
    def load(cls, folder: str | Path) -> Tokenizer:
        """Load the tokenizer stored in a run folder."""
        folder = Path(folder)
        if (folder / JOINT_FILE).is_file():
            return cls(folder / JOINT_FILE, folder / JOINT_FILE)
        src, tgt = folder / SIDE_FILES["src"], folder / SIDE_FILES["tgt"]
        if src.is_file() and tgt.is_file():
            return cls(src, tgt)
        raise DataError(
            f"{folder}: no tokenizer found; expected {JOINT_FILE} or "
            f"{SIDE_FILES['src']} + {SIDE_FILES['tgt']} (run `attnless prepare` first)"
        )

    @property
    def files(self) -> list[Path]:
        return sorted({self.src_path, self.tgt_path})

    @property
    def src_vocab_size(self) -> int:
        return self.src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt.get_piece_size()

    def encode_src(self, lines: list[str]) -> list[list[int]]:
        return self.src.encode(lines, num_threads=2)

    def encode_tgt(self, lines: list[str]) -> list[list[int]]:
        return self.tgt.encode(lines, num_threads=2)

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        """Detokenized target text (sentencepiece restores the original spacing)."""
        return self.tgt.decode(ids)


def _train_model(lines: Iterable[str], cfg: TokenizerConfig, seed: int) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.set_random_generator_seed(seed)  # input sampling is the only random step
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=cfg.vocab_size,
        model_type=cfg.model_type,
        character_coverage=cfg.character_coverage,
        input_sentence_size=cfg.max_sentences,
        shuffle_input_sentence=True,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        hard_vocab_limit=False,  # small corpora: a smaller vocabulary instead of a failure
        num_threads=2,
        minloglevel=2,
    )
    return model.getvalue()


def train_tokenizer(
    train: ParallelText, cfg: TokenizerConfig, folder: str | Path, seed: int = 1
) -> Tokenizer:
    """Train sentencepiece on the training split and store it in ``folder`` (atomically)."""
    folder = Path(folder)
    if not len(train):
        raise DataError(f"{train.name}: no training sentences to train the tokenizer on")
    jobs = (
        {JOINT_FILE: train.src + train.tgt}
        if cfg.joint
        else {SIDE_FILES["src"]: train.src, SIDE_FILES["tgt"]: train.tgt}
    )
    for name, lines in jobs.items():
        data = _train_model(lines, cfg, seed)
        with atomic_open(folder / name, "wb") as handle:
            handle.write(data)
    return Tokenizer.load(folder)


def fingerprint(train: ParallelText, cfg: TokenizerConfig, seed: int) -> str:
    """A hash of everything a tokenizer is trained from: the training text and the settings."""
    digest = hashlib.sha256()
    settings = {"tokenizer": cfg.model_dump(), "seed": seed}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for side in (train.src, train.tgt):  # lines never hold "\n": joining them is unambiguous
        digest.update(f"\0{len(side)}\0".encode())
        digest.update("\n".join(side).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def recorded_fingerprint(folder: str | Path) -> str | None:
    """The fingerprint recorded beside the tokenizer of ``folder``; None if there is none."""
    path = Path(folder) / RECORD_FILE
    try:
        record = read_json(path)
    except ValueError:  # a corrupt record vouches for nothing
        return None
    return record.get("fingerprint") if isinstance(record, dict) else None


def record_fingerprint(tokenizer: Tokenizer, value: str, trained_on: str) -> None:
    """Record (atomically) that the files of ``tokenizer`` were trained from ``value``."""
    record = {
        "fingerprint": value,
        "files": [p.name for p in tokenizer.files],
        "trained_on": trained_on,
    }
    write_json(tokenizer.src_path.parent / RECORD_FILE, record)
