"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import data_root, missing_data


@pytest.fixture(scope="session")
def corpora_root() -> Path:
    """The folder of the real corpora (ATTNLESS_DATA, default ../shared/data)."""
    root = data_root()
    if not root.is_dir():
        missing_data(f"real corpora not found at {root} (set ATTNLESS_DATA)")
    return root


@pytest.fixture(scope="session")
def data_dir(corpora_root: Path) -> Path:
    """The real corpora, with Multi30k (the tests' tiny runs train on it)."""
    if not (corpora_root / "multi30k").is_dir():
        missing_data(f"real corpora not found under {corpora_root} (set ATTNLESS_DATA)")
    return corpora_root
