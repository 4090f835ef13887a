"""Test helpers: the real data root and tiny configs on slices of real corpora."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from attnless import config as config_mod
from attnless.config import Config

REPO = Path(__file__).resolve().parents[1]
# Set to 1 by .ci/run: a test whose corpora are missing fails instead of being skipped.
REQUIRE_DATA = "ATTNLESS_REQUIRE_DATA"


def data_root() -> Path:
    return Path(os.environ.get("ATTNLESS_DATA") or REPO.parent / "shared" / "data").resolve()


def missing_data(reason: str) -> NoReturn:
    """Skip a test whose corpora are missing, or fail it where ``ATTNLESS_REQUIRE_DATA=1``
    (CI), so that a suite cannot pass by skipping the tests on real data."""
    if os.environ.get(REQUIRE_DATA) == "1":
        pytest.fail(f"{reason}; {REQUIRE_DATA}=1 forbids skipping it", pytrace=False)
    pytest.skip(reason)


def tiny_config(tmp_path: Path, data_dir: Path, *overrides: str) -> Config:
    """The smoke preset, shrunk further, writing into ``tmp_path``."""
    base = [
        f"run_root={tmp_path / 'runs'}",
        f"data.data_dir={data_dir}",
        "data.train_subset=300",
        "data.eval_subset=24",
        "tokenizer.vocab_size=200",
        "model.d_model=16",
        "model.heads=2",
        "model.encoder_layers=2",
        "model.decoder_layers=2",
        "model.ffn_dim=32",
        "train.max_tokens=400",
        "train.progress=false",
        "train.log_every=1",
    ]
    return config_mod.load(REPO / "experiments" / "smoke.yaml", base + list(overrides))
