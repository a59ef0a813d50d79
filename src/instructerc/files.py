"""Writing files so that a failure never leaves a half-written or lost output."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import IO, Iterator


def replace_directory(staging: Path, target: Path) -> None:
    """Put the complete folder ``staging`` at ``target``; an existing ``target`` is removed only
    once the new one is in place, so a crash midway never leaves neither."""
    import shutil

    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


def default_cache_dir() -> Path:
    """The per-user cache folder (XDG's, else ``~/.cache``), shared by embeddings and backbones.

    A base-level helper so modeling and retrieval both reach it without importing each other.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "instructerc"


def _create_beside(path: Path) -> tuple[int, str]:
    """A new, exclusive temporary file beside ``path``.

    Created with mode 0o666 so the umask applies, as for a plain ``open()``: the renamed file gets
    the usual permissions, not ``mkstemp``'s owner-only 0o600.
    """
    tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it over ``path`` only on success.

    On any exception the temporary file is removed and an existing ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_beside(path)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
