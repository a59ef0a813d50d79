"""A training run's directory: where each part of it lives, the checks it must pass before a
run starts, the append-only log and the dev-selected best weights it keeps."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from instructerc.errors import InputError
from instructerc.files import followed_link, free_number, refuse_broken_link, replace_directory, set_aside_path
from instructerc.modeling.model_dir import DEV_METRICS, MANIFEST
from instructerc.training.checkpoint import SHARDED_DIR, fsync_path, save_tensors


def record_metrics(step: int, score: float, precision: str | None, by_dataset: dict[str, Any]) -> dict[str, Any]:
    """The dev metrics of the best checkpoint, as written beside it and into the model directory."""
    return {"step": step, "score": score, "precision": precision, "by_dataset": {d: m.to_dict() for d, m in by_dataset.items()}}


def read_best_dev_metrics(path: Path) -> dict[str, Any]:
    """The dev metrics written beside the run's best weights (:func:`record_metrics`), checked for
    what the model card and the model directory take from them."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("missing: the dev metrics of the run's best weights; train again in a new output_dir", path=path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"damaged ({error}): train again in a new output_dir", path=path) from None
    if not isinstance(data, dict) or not isinstance(data.get("by_dataset"), dict) or not data["by_dataset"]:
        raise InputError("damaged: not the dev metrics this run wrote; train again in a new output_dir", path=path, field="by_dataset")
    for dataset, metrics in data["by_dataset"].items():
        for key, kind in _CARD_METRICS.items():
            value = metrics.get(key) if isinstance(metrics, dict) else None
            if isinstance(value, bool) or not isinstance(value, kind):
                raise InputError(
                    f"damaged: expected {'a whole number' if kind is int else 'a number'}, got {value!r}; train again in a new output_dir",
                    path=path,
                    field=f"by_dataset.{dataset}.{key}",
                )
    return data


def read_best_weights(path: Path) -> dict[str, Any]:
    """The trainable weights of the run's best checkpoint (:meth:`Trainer._save_best`); missing or
    damaged, an error naming the file, not a traceback once the whole run has trained."""
    import pickle

    import torch

    remedy = "train again in a new output_dir"
    try:
        weights = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise InputError(f"missing: the run's best weights; {remedy}", path=path) from None
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, KeyError, IndexError, TypeError) as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise InputError(f"damaged ({reason}): {remedy}", path=path) from None
    if not isinstance(weights, dict):
        raise InputError(f"damaged: not the weights this run wrote; {remedy}", path=path)
    return weights


BEST_WEIGHTS = "trainable.pt"


def commit_best(staging: Path, best: Path, dev_metrics: dict[str, Any], weights: dict[str, Any] | None = None) -> None:
    """Completes the staging folder of new best weights (``weights``, unless a sharded run's
    processes wrote them there as shards) with their ``dev_metrics``, and swaps it in for
    ``best``: a stop at any point leaves the previous weights and metrics together. A staging
    folder left half-written is removed (a full disk would keep the space it took)."""
    import shutil

    try:
        files = [staging / DEV_METRICS]
        if weights is not None:
            save_tensors(weights, staging / BEST_WEIGHTS)
            files.append(staging / BEST_WEIGHTS)
        with open(staging / DEV_METRICS, "w", encoding="utf-8") as handle:
            json.dump(dev_metrics, handle)
        for file in files:  # on disk before the swap: a power cut must not leave a named but empty file
            fsync_path(file)
        replace_directory(staging, best)
        fsync_path(best.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def recover_best(best: Path) -> None:
    """Puts back the previous best folder when a stop came in the middle of the swap, after it
    was moved aside (:func:`instructerc.files.set_aside_path`) and
    before the new one took its place: else the resume found no best weights at all. Safe on
    every process of a run at once: one rename wins, and the others find the folder back."""
    target = followed_link(best)
    earlier = set_aside_path(target)
    if target.exists() or not (earlier / DEV_METRICS).is_file():
        return
    with contextlib.suppress(OSError):  # another process of the run put it back first
        earlier.rename(target)


# What the model card shows of each dataset's dev metrics, and the JSON type of each.
_CARD_METRICS: dict[str, Any] = {"weighted_f1": (int, float), "macro_f1": (int, float), "accuracy": (int, float), "count": int}


@dataclass(frozen=True)
class RunPaths:
    """A run directory: ``model/`` is the deliverable; the rest is the run's working state."""

    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def best_weights(self) -> Path:
        return self.best / BEST_WEIGHTS

    @property
    def best_shards(self) -> Path:
        return self.best / SHARDED_DIR

    @property
    def best_dev_metrics(self) -> Path:
        return self.best / DEV_METRICS


def check_run_directory_creatable(root: Path) -> None:
    """Refuses a run directory that cannot be created or written (a read-only or virtual file
    system, a folder without write permission) before the data and model load, rather than as a
    traceback once training would begin. The probe is a folder of a unique name in the deepest
    folder that exists, removed again: every process of a distributed run probes at once, and a
    shared name would let one process see another's probe appear and vanish."""
    existing = next(folder for folder in (root, *root.parents) if _kind(folder) is not None)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".instructerc-probe-", dir=existing))
    except OSError as error:
        reason = "the run directory is not writable" if existing == root else f"cannot create the run directory ({error.strerror or error})"
        raise InputError(f"{reason}: choose another output_dir", path=root, field="output_dir") from None


def _kind(path: Path) -> str | None:
    """'folder', 'file' or None (absent), from one stat: checking existence and kind in two calls
    would race with another process creating or removing the path between them."""
    try:
        return "folder" if stat.S_ISDIR(path.stat().st_mode) else "file"
    except FileNotFoundError:
        # A link to nothing reads as absent, but no folder can be made in its place: the run
        # failed later with a bare "File exists".
        refuse_broken_link(path, field="output_dir", hint=": choose another output_dir, or make the link point at a folder")
        return None
    except NotADirectoryError:  # a parent is a file: the caller finds it among the parents
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            refuse_broken_link(path, field="output_dir", hint=": choose another output_dir")
        raise


def append_line(path: Path, line: str) -> None:
    """``line`` as the last line of ``path``, all of it or none: a write cut short (a full disk)
    is taken back, so the log never holds half a record that the next one would run into. A line
    a killed process left unfinished is ended first, for the same reason. Unbuffered, so nothing
    of a failed write is left to be written when the file is closed. A pipe or a device (a log
    linked to ``/dev/stdout``) is only written to: it has no end to look at or take back."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        end = os.lseek(fd, 0, os.SEEK_END) if regular else 0
        unfinished = end > 0 and _last_byte(path, end) != b"\n"
        rest = memoryview((b"\n" if unfinished else b"") + line.encode("utf-8") + b"\n")
        try:
            while rest:
                rest = rest[os.write(fd, rest) :]
        except OSError as error:
            if error.filename is None and error.strerror is not None:  # a failed write() names no file: say which one
                error.filename = str(path)
            if regular:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)
            raise
    finally:
        os.close(fd)


def _last_byte(path: Path, size: int) -> bytes:
    """The byte at ``size - 1`` in ``path``; a line end when the file cannot be read: an
    unreadable log is no reason to stop a run."""
    try:
        with open(path, "rb") as handle:
            handle.seek(size - 1)
            return handle.read(1)
    except OSError:
        return b"\n"


def set_aside_earlier_log(paths: RunPaths) -> list[Path]:
    """Moves the log (and the recipe beside it) of an earlier run out of the way of a run that
    starts afresh in the same folder (its ``model/`` deleted to train again, or stopped before its
    first checkpoint): appended to, one ``metrics.jsonl`` would hold both runs' steps and scores,
    read as one run's. They are kept, numbered (``metrics.earlier-1.jsonl``), and said; returns
    where they went."""
    if not paths.metrics.is_file() or paths.metrics.stat().st_size == 0:
        return []  # nothing logged yet: nothing to keep
    files = [file for file in (paths.metrics, paths.config) if file.is_file()]
    number = free_number(lambda number: [_earlier(file, number) for file in files])
    kept = [_earlier(file, number) for file in files]
    for file, target in zip(files, kept):
        os.rename(file, target)
    print(
        f"note: {paths.metrics} held the log of an earlier run in this folder: kept as {', '.join(k.name for k in kept)}; "
        "this run starts a log of its own",
        file=sys.stderr,
    )
    return kept


def _earlier(file: Path, number: int) -> Path:
    return file.with_name(f"{file.stem}.earlier-{number}{file.suffix}")


def check_run_directory(paths: RunPaths) -> None:
    """Refuses a run directory whose parts exist as the wrong kind (a file where a folder goes,
    or the reverse), which would otherwise fail only after the data and model have loaded."""
    for folder in (paths.root, paths.checkpoints, paths.model, paths.best):
        for path in (folder, *folder.parents):
            kind = _kind(path)
            if kind == "file":
                raise InputError("is a file, but the run needs a folder here: choose another output_dir", path=path, field="output_dir")
            if kind == "folder":
                break
    for file in (paths.metrics, paths.config):
        if file.is_dir():
            raise InputError("is a folder, but the run writes a file here: choose another output_dir", path=file, field="output_dir")
    # The finished run swaps its model in for the whole folder: anything else in it would be deleted.
    if paths.model.is_dir() and not (paths.model / MANIFEST).is_file() and any(paths.model.iterdir()):
        raise InputError(
            "holds files that are not an instructerc model, and the run would replace this folder with its model: "
            "choose another output_dir, or move them away",
            path=paths.model,
            field="output_dir",
        )
    check_run_directory_creatable(paths.root)


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Holds the run directory ``root`` (created if absent) for one run: a second run started
    on it, afresh or ``--resume``, is refused while the first trains. Without it both trained
    into one folder: the second set the first's log aside mid-run, both appended to one log and
    wrote one ``best/`` and ``model/``, each over the other's. The lock is the folder's own
    ``flock``, which the system releases when the process ends however it ends, so a killed run
    leaves none behind; a file system without locks (some network mounts) runs unlocked. A
    folder made here and left empty (the run refused its data) is removed again."""
    made = _make_folders(root)
    try:
        fd = _open_folder(root)
        try:
            if not _locked(fd) or not _same_folder(root, fd):
                raise InputError(
                    "another run is training in this folder (its process holds it): wait for it to end, or choose another output_dir",
                    path=root,
                    field="output_dir",
                )
            yield
        finally:
            os.close(fd)  # releases the lock
    finally:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only while empty


def _open_folder(root: Path) -> int:
    try:
        return os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as error:  # a folder without read permission
        raise InputError(f"cannot open the run directory ({error.strerror or error}): choose another output_dir", path=root) from None


def _make_folders(root: Path) -> list[Path]:
    """Creates ``root`` and its missing parents; returns those made here, deepest first."""
    missing = [folder for folder in (root, *root.parents) if _kind(folder) is None]
    root.mkdir(parents=True, exist_ok=True)
    return missing


def _same_folder(root: Path, fd: int) -> bool:
    """Whether ``root`` is still the folder ``fd`` locked: one removed and made again meanwhile
    (another run cleaning up after a refusal) is another folder, which this lock does not hold."""
    try:
        return os.stat(root).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _locked(fd: int) -> bool:
    """Takes the exclusive lock on ``fd`` without waiting: False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # locks not supported here (ENOLCK, EBADF on some network file systems)
        return True
    return True
