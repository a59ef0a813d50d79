"""Writing files so that a failure never leaves a half-written or lost output."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from pathlib import Path
from typing import IO, Iterator

from instructerc.errors import InputError


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

    On any exception the temporary file is removed and an existing ``path`` is untouched. A
    symlink is followed: its (possibly missing) target gets the content and the link stays. An
    existing FIFO or character device (``/dev/null``, a terminal, a named pipe), or a name of an
    open descriptor (``/dev/stdout``), is written straight to: a rename would replace the special
    file with a regular one, and a stream has no earlier content to protect.
    """
    path = Path(path)
    if _writes_through(path):
        with open(path, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
        return
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_beside(target)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# Names of open descriptors: the shell opened them (``--out /dev/stdout > file``), so renaming onto
# their resolved file would leave the shell's descriptor on an orphaned inode.
_DESCRIPTOR_NAMES = ("/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/")


def _writes_through(path: Path) -> bool:
    """Whether ``path`` is written in place rather than replaced (see :func:`atomic_write`).

    Raises InputError for a block device or a socket: overwriting a disk with an output file is
    never meant, and a socket cannot be opened as a file.
    """
    try:
        kind = os.stat(path).st_mode  # follows symlinks: the kind of what would be written
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(kind):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if stat.S_ISBLK(kind) or stat.S_ISSOCK(kind):
        what = "a block device (a disk)" if stat.S_ISBLK(kind) else "a socket"
        raise InputError(f"this is {what}, not a file: refusing to write an output to it", path=path)
    if stat.S_ISFIFO(kind) or stat.S_ISCHR(kind):
        return True
    return str(path.absolute()).startswith(_DESCRIPTOR_NAMES)


def looks_like_path(name: str) -> bool:
    """Whether a model name can only mean a folder: a hub id (``org/model``) is never absolute
    and never starts with ``./``, ``../`` or ``~``. A missing folder is then an error, not a hub lookup."""
    return Path(name).is_absolute() or name in (".", "..") or name.startswith(("./", "../", "~", ".\\", "..\\"))
