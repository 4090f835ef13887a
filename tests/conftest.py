"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import data_root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real corpora (ATTNLESS_DATA, default ../shared/data)."""
    root = data_root()
    if not (root / "multi30k").is_dir():
        pytest.skip(f"real corpora not found under {root} (set ATTNLESS_DATA)")
    return root
