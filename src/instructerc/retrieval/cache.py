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
    """A digest of ``parts`` (strings, or lists of them) that no other parts share. Each item is
    hashed after its length: with separators alone, a text holding the separator ("a\\x00b", "c"
    against "a", "b\\x00c") gave another list of as many texts the same key, and its embeddings."""
    digest = hashlib.sha256()
    for part in parts:
        items = [part] if isinstance(part, str) else part
        digest.update(f"{len(items)}[".encode())
        for item in items:
            encoded = item.encode("utf-8")
            digest.update(f"{len(encoded)}:".encode() + encoded)
    return digest.hexdigest()[:32]


def cached_array(
    directory: Path, key: str, compute: Callable[[], Any], rows: int | None = None, width: int | None = None
) -> tuple[Any, bool]:
    """Load ``key`` from ``directory`` or compute and store it; returns (array, was_cached).

    ``rows``, when given, is how many rows the array has (one per text embedded), and ``width``
    how many columns (the encoder's dimension): a cached file of another shape is not used."""
    file = directory / f"{key}.npy"
    cached = _load(file, rows, width)
    if cached is not None:
        return cached, True
    array = compute()
    _store(file, array)
    return array, False


# How far from 1 a cached row's length may be: the encoder gives unit vectors, float16 rounding
# moves them by about 1e-3; zeros or raw (unnormalised) vectors are far off.
_UNIT_TOLERANCE = 1e-2


def _load(file: Path, rows: int | None, width: int | None) -> Any:
    """The cached embeddings (a 2-D float array of finite unit rows, ``rows`` by ``width``), or
    None when absent or unusable."""
    import numpy as np

    # Only a regular file of our own: a symlink may point anywhere (and _store would write
    # through it), and reading a FIFO blocks for ever.
    if not _is_regular_file(file):
        return None
    try:
        # Mapped, so the header is checked before a file of the wrong size is read into memory.
        mapped = np.load(file, mmap_mode="r", allow_pickle=False)
        shape_ok = mapped.ndim == 2 and np.issubdtype(mapped.dtype, np.floating)
        if not shape_ok or (rows is not None and len(mapped) != rows) or (width is not None and mapped.shape[1] != width):
            return None
        array = np.array(mapped)
        del mapped
    except (OSError, ValueError, EOFError):  # unreadable, cut short or not an .npy
        return None
    # NaN or zero rows (a damaged or foreign file) would silently match nothing, or everything equally.
    norms = np.linalg.norm(array.astype(np.float64), axis=1)
    if not np.all(np.isfinite(norms)) or np.any(np.abs(norms - 1.0) > _UNIT_TOLERANCE):
        return None
    return array


def _is_regular_file(file: Path) -> bool:
    import stat

    try:
        return stat.S_ISREG(file.lstat().st_mode)
    except OSError:
        return False


def _store(file: Path, array: Any) -> None:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    try:
        # atomic_write follows a symlink (its target would be overwritten) and writes straight
        # into a FIFO (blocking): the cache's own name is replaced instead.
        if file.is_symlink() or (file.exists() and not file.is_dir() and not _is_regular_file(file)):
            file.unlink()
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
