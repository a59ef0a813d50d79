"""An on-disk cache of embeddings, keyed by everything that determines them.

The cache only saves time: a file that cannot be read back as the expected array (cut short by a
full disk, damaged, or not ours) is computed again and replaced, and a cache folder that cannot be
written is skipped with a warning, so neither stops a command.
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path
from typing import Any, Callable

from instructerc.distributed import later_process_of_a_run
from instructerc.files import atomic_write

# Folders already warned about: a server embeds on every request, and one warning says it all.
_UNWRITABLE: set[Path] = set()


def content_key(*parts: str | list[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        for item in [part] if isinstance(part, str) else part:
            digest.update(item.encode("utf-8"))
            digest.update(b"\x00")
        digest.update(b"\x01")
    return digest.hexdigest()[:32]


def cached_array(directory: Path, key: str, compute: Callable[[], Any], rows: int | None = None) -> tuple[Any, bool]:
    """Load ``key`` from ``directory`` or compute and store it; returns (array, was_cached).

    ``rows``, when given, is how many rows the array has (one per text embedded): a cached file
    of another shape is not used."""
    file = directory / f"{key}.npy"
    cached = _load(file, rows)
    if cached is not None:
        return cached, True
    array = compute()
    _store(file, array)
    return array, False


def _load(file: Path, rows: int | None) -> Any:
    """The cached embeddings (a 2-D float array, ``rows`` long), or None when absent or unusable."""
    import numpy as np

    try:
        array = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # absent, unreadable, cut short or not an .npy
        return None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating) or (rows is not None and len(array) != rows):
        return None
    return array


def _store(file: Path, array: Any) -> None:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    try:
        with atomic_write(file, "wb") as handle:
            handle.write(buffer.getvalue())
    except OSError as error:
        if file.parent not in _UNWRITABLE:
            _UNWRITABLE.add(file.parent)
            # Every process embeds the same texts into the same folder: the first one's warning says it for all.
            if later_process_of_a_run():
                return
            print(
                f"instructerc: warning: {file.parent}: cannot write the embedding cache ({error.strerror or error}); "
                "embeddings are computed without it",
                file=sys.stderr,
            )
