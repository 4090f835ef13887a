"""``attnless prepare``: create the run folder, train the tokenizer, encode and filter the splits.

The run folder records the config, the package versions and the tokenizer. Encoded data is not
stored: re-reading and encoding a corpus takes seconds, and keeping the corpus outside the run
folder keeps run folders small. A run folder can only be reused with the same data, tokenizer
and model settings; training settings (epochs, steps) may change, which is how a run is
extended.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnless import config as config_mod
from attnless.config import Config, ConfigError
from attnless.data import ParallelText, describe_source, load_split
from attnless.data.batching import Examples, length_filter
from attnless.data.errors import DataError
from attnless.data.tokenizer import (
    RECORD_FILE,
    Tokenizer,
    fingerprint,
    record_fingerprint,
    recorded_fingerprint,
    train_tokenizer,
)
from attnless.rundir import RunDir
from attnless.runs import read_json, write_json

log = logging.getLogger(__name__)

FIXED_SECTIONS = ("data", "tokenizer", "model")  # must match to reuse a run folder
# ... except where the data lives and what is evaluated
FREE_KEYS = {"data.data_dir", "data.test_set", "data.eval_subset", "data.test_group"}


@dataclass
class Prepared:
    """Everything training and evaluation read from the data side."""

    run_dir: Path
    tokenizer: Tokenizer
    train: Examples
    valid: Examples
    valid_text: ParallelText
    stats: dict[str, Any]


def encode(tokenizer: Tokenizer, text: ParallelText) -> Examples:
    return Examples(tokenizer.encode_src(text.src), tokenizer.encode_tgt(text.tgt))


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} in the run folder, {b!r} now")
    return diffs


def check_compatible(run_dir: Path, cfg: Config) -> None:
    """Refuse to reuse a run folder whose data, tokenizer or model settings differ."""
    saved = RunDir(run_dir).config_file
    if not saved.exists():
        return
    old = config_mod.from_dict(config_mod.read_yaml(saved), str(saved)).to_dict()
    new = cfg.to_dict()
    diffs = []
    for section in FIXED_SECTIONS:
        diffs += _differences(old[section], new[section], f"{section}.")
    diffs = [d for d in diffs if d.split(":")[0] not in FREE_KEYS]
    if old["seed"] != new["seed"]:
        diffs.append(f"seed: {old['seed']!r} in the run folder, {new['seed']!r} now")
    if diffs:
        raise ConfigError(
            f"{run_dir} holds a run with different settings:\n  "
            + "\n  ".join(diffs)
            + "\nchoose another name (--set name=...) or delete the folder"
        )


def _tokenizer(run_dir: Path, train_text: ParallelText, cfg: Config) -> tuple[Tokenizer, str]:
    """The run folder's tokenizer, provided it was trained on ``train_text`` with these settings
    (the fingerprint recorded beside it); else a new one, trained now. Returns it and the
    fingerprint, which is left unrecorded for a new tokenizer (the caller records it once the
    data has been checked)."""
    wanted = fingerprint(train_text, cfg.tokenizer, cfg.seed)
    try:
        tokenizer = Tokenizer.load(run_dir)
    except ValueError:
        tokenizer = None
    if tokenizer is not None:
        recorded = recorded_fingerprint(run_dir)
        if recorded == wanted:
            return tokenizer, ""
        checkpoints = RunDir(run_dir).checkpoint_files()
        if recorded is None and checkpoints:  # a run folder from before fingerprints
            log.info("%s: recording the fingerprint of its tokenizer's data", run_dir)
            record_fingerprint(tokenizer, wanted, train_text.name)
            return tokenizer, ""
        names = ", ".join(str(p) for p in tokenizer.files)
        if checkpoints:
            raise DataError(
                f"{names}: trained on other data than the training split {train_text.name} now "
                f"holds (its files changed since), and the checkpoints in "
                f"{RunDir(run_dir).checkpoints} were trained with this tokenizer; restore the "
                "training data it was trained on, or start another run (--set name=...)"
            )
        log.warning("%s: not trained on this data (or left by a failed prepare); retraining", names)
    (run_dir / RECORD_FILE).unlink(missing_ok=True)  # nothing vouches for the old files
    return train_tokenizer(train_text, cfg.tokenizer, run_dir, cfg.seed), wanted


def _filter_train(cfg: Config, tokenizer: Tokenizer, text: ParallelText) -> tuple[Examples, dict]:
    """The training pairs kept by ``data.max_len`` and the counts dropped; an error (with the
    right advice) when none is left."""
    train, empty, long = length_filter(encode(tokenizer, text), cfg.data.max_len)
    if not len(train):
        where = describe_source(cfg.data, "train")
        if not long:
            advice = f"every pair has an empty (blank) source or target line; check {where}"
        elif not empty:
            advice = f"every pair is longer than data.max_len={cfg.data.max_len}; raise it"
        else:
            advice = (
                f"{empty} have an empty (blank) source or target line and {long} are longer "
                f"than data.max_len={cfg.data.max_len}; check {where} or raise data.max_len"
            )
        raise ConfigError(f"{text.name}: no usable training pair among {len(text)}: {advice}")
    counts = {"train_pairs_dropped_empty": empty, "train_pairs_dropped_over_max_len": long}
    return train, counts


def prepare(cfg: Config, record: bool = True) -> Prepared:
    """Create or reuse the run folder of ``cfg``; return the tokenizer and encoded data.

    ``record`` writes ``cfg`` as the run folder's config.yaml (prepare and train do; distill and
    evaluate, whose settings belong to their own outputs, do not). A prepare that fails leaves
    no tokenizer it trained behind."""
    run = RunDir.of(cfg)
    run_dir = run.root
    check_compatible(run_dir, cfg)
    train_text = load_split(cfg.data, "train")
    valid_text = load_split(cfg.data, "valid")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer, new_fingerprint = _tokenizer(run_dir, train_text, cfg)
    try:
        train, dropped = _filter_train(cfg, tokenizer, train_text)
        valid = encode(tokenizer, valid_text)
    except BaseException:
        if new_fingerprint:
            for path in tokenizer.files:
                path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if empty
        raise
    if new_fingerprint:
        record_fingerprint(tokenizer, new_fingerprint, train_text.name)
    stats = {
        "train_pairs": len(train_text),
        "train_pairs_kept": len(train),
        **dropped,
        "max_len": cfg.data.max_len,
        "valid_pairs": len(valid),
        "src_vocab": tokenizer.src_vocab_size,
        "tgt_vocab": tokenizer.tgt_vocab_size,
        "train_src_tokens": sum(map(len, train.src)),
        "train_tgt_tokens": sum(map(len, train.tgt)),
        "sources": {"train": train_text.name, "valid": valid_text.name},
    }
    log.info(
        "dropped %d of %d training pairs: %d with an empty side, %d longer than %d tokens",
        len(train_text) - len(train),
        len(train_text),
        dropped["train_pairs_dropped_empty"],
        dropped["train_pairs_dropped_over_max_len"],
        cfg.data.max_len,
    )
    if record or not run.config_file.exists():
        run.record(config_mod.dump(cfg))
    if read_json(run.data_file) != stats:
        write_json(run.data_file, stats)
    return Prepared(run_dir, tokenizer, train, valid, valid_text, stats)
