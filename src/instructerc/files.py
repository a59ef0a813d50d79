"""Writing files so that a failure never leaves a half-written or lost output."""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import stat
import uuid
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from instructerc.errors import InputError


def replace_directory(staging: Path, target: Path) -> None:
    """Put the complete folder ``staging`` at ``target``; an existing ``target`` is removed only
    once the new one is in place, so a crash midway never leaves neither. A symlink ``target`` is
    followed, as :func:`atomic_write` follows one: the folder it leads to is replaced and the link
    stays (renamed away, the link would leave that folder stale and a real folder in its place)."""
    import shutil

    target = followed_link(target)
    if target.exists():
        old = set_aside_path(target)
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


def set_aside_path(target: Path) -> Path:
    """Where :func:`replace_directory` moves the folder ``target`` while the new one takes its
    place (``.NAME.old``): a stop between the two renames leaves it there, to be put back."""
    return target.with_name(f".{target.name}.old")


def free_number(paths: Callable[[int], Iterable[Path]]) -> int:
    """The first N from 1 for which none of ``paths(N)`` exists, not even as a dangling link: how
    an earlier output kept beside its replacement is numbered (``NAME.earlier-N``)."""
    number = 1
    while any(os.path.lexists(path) for path in paths(number)):
        number += 1
    return number


def followed_link(path: Path) -> Path:
    """``path``, or for a symlink the path it leads to (which may not exist yet)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


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


def nearest_existing(path: Path) -> Path | None:
    """``path`` or the nearest of its parents that exists (None if none does): what a write
    below ``path`` would meet first. A symlink counts even when it leads nowhere: the name is
    taken, so no folder can be made there (``mkdir`` fails with 'File exists')."""
    return next((candidate for candidate in (path, *path.parents) if candidate.exists() or candidate.is_symlink()), None)


def in_the_way(folder: Path, field: str | None, hint: str) -> Path | None:
    """What stops a folder from being made or written into at ``folder``: it, or the nearest
    existing path above it, when that is not a folder (None: nothing does). A broken symlink or
    a loop there is refused as such (:func:`refuse_broken_link`, naming ``field``, ``hint`` ending
    the message), not left to be reported as a file."""
    found = nearest_existing(folder)
    if found is None or found.is_dir():
        return None
    refuse_broken_link(found, field=field, hint=hint)
    return found


def check_output_folder_path(folder: Path, field: str, what: str) -> None:
    """An :class:`InputError` naming ``field`` when ``folder`` cannot be made or written into:
    it, or the nearest existing folder above it, is a file or a broken symlink. ``what``: what
    ``field`` names, for the message. Checked before the work whose outputs go there, as those
    are written only at its end."""
    found = in_the_way(folder, field, f"; {what}")
    if found is None:
        return
    where = "is a file" if found == folder else f"{found} is a file"
    raise InputError(f"{where}; {what}", path=folder, field=field)


def is_symlink_loop(path: Path) -> bool:
    """Whether following ``path`` never ends (a link that leads back to itself, directly or not)."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def refuse_broken_link(path: Path, field: str | None = None, hint: str = ": point it at a file") -> None:
    """A symlink loop or a link to nothing: ``is_file()`` says False for both, which would be
    reported as a missing file although the name is there. ``hint`` ends the message."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError(f"is a symlink loop (a link that leads back to itself){hint}", path=path, field=field) from None
        if error.errno == errno.ENOENT and path.is_symlink():
            raise InputError(f"is a symlink to {os.readlink(path)}, which does not exist{hint}", path=path, field=field) from None


# Byte-order marks longest first: UTF-32's little-endian mark begins with UTF-16's.
_FOREIGN_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
HEAD_BYTES = 4
"""The bytes of a file's start that :func:`foreign_encoding` needs."""


def foreign_encoding(head: bytes) -> str | None:
    """What a file starting with ``head`` is, when it is plainly not UTF-8 text; else None."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed, not text: decompress it first (gunzip)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        # The PROTO opcode that starts every pickle since protocol 2; no UTF-8 text starts with 0x80.
        return "a Python pickle, not text (the COSMIC pickles are read with --dataset cosmic-meld, cosmic-emorynlp or cosmic-iemocap)"
    for mark, name in _FOREIGN_MARKS:
        if head.startswith(mark):
            return f"{name} text (it starts with a {name} byte-order mark), not UTF-8: save the file as UTF-8"
    width = _nul_pattern_width(head[:4])
    if width:
        return f"UTF-{width} text (NUL bytes between its characters), not UTF-8: save the file as UTF-8"
    return None


def _nul_pattern_width(first: bytes) -> int:
    """32 or 16 when the first four bytes are one ASCII character in UTF-32 or two in UTF-16 (a
    file's first characters are: ``{``, a header's letters, whitespace), else 0."""
    if len(first) == 4 and (first[:3] == b"\x00\x00\x00") != (first[1:] == b"\x00\x00\x00"):
        return 32
    if len(first) >= 2 and (first[0] == 0) != (first[1] == 0):
        return 16
    return 0
