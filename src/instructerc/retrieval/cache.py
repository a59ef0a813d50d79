"""An on-disk cache of embeddings, keyed by everything that determines them."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Callable

from instructerc.files import atomic_write


def content_key(*parts: str | list[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        for item in [part] if isinstance(part, str) else part:
            digest.update(item.encode("utf-8"))
            digest.update(b"\x00")
        digest.update(b"\x01")
    return digest.hexdigest()[:32]


def cached_array(directory: Path, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
    """Load ``key`` from ``directory`` or compute and store it; returns (array, was_cached)."""
    import numpy as np

    file = directory / f"{key}.npy"
    if file.is_file():
        return np.load(file, allow_pickle=False), True
    array = compute()
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    with atomic_write(file, "wb") as handle:
        handle.write(buffer.getvalue())
    return array, False
