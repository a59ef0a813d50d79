"""Shared fixtures: where the benchmark data is, and small builders."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared benchmark data (``../shared/data`` beside the checkout)."""
    if not (SHARED_DATA / "meld").is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA} (place MELD/EmoryNLP/COSMIC files there)")
    return SHARED_DATA
