"""Training checkpoints: trainable weights, optimizer, scheduler, RNG states and position.

Loaded with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. A
checkpoint is written whole into a staging folder and renamed into place, and the previous one
is pruned only after that, so a crash while saving always leaves a complete checkpoint behind; a
damaged one (a disk error, a copy cut short) is an error naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from instructerc.errors import InputError
from instructerc.files import atomic_write, replace_directory

CHECKPOINT_FILES = ("trainable.pt", "optim.pt", "state.json")
SHARDED_DIR = "sharded"  # a sharded run's checkpoint: its processes' shards, with their .metadata
# Keys a resumed run may change freely, as they change nothing the run computes: how often
# checkpoints are saved (an interrupted run may have saved more often, to lose less), and where
# the run is (the run resumed is the one in this folder, however its path is spelled now or
# wherever it was moved since).
RESUME_FREE_KEYS = frozenset({"checkpoint_every_steps", "output_dir"})


@dataclass
class TrainState:
    """Where a run is: enough to resume it exactly."""

    stage: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_score: float | None = None
    best_step: int | None = None
    # Seconds spent training and scoring dev, summed over interruptions (for the model card).
    train_seconds: float = 0.0
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    # "at step N: key: old -> new; ..." for each resume under a changed recipe (--force).
    forced_changes: list[str] = field(default_factory=list)
    # Per split ("train", "dev"), what the run trains and selects on (data_checks.data_summary):
    # a resume compares it, as the recipe alone does not say the data files were edited since.
    data: dict[str, str] = field(default_factory=dict)


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: Path, state: TrainState, trainable: dict[str, Any], optimizer: Any, scheduler: Any, rng_by_process: list | None = None
) -> None:
    """Write a checkpoint to ``directory`` through a staging folder renamed into place when
    complete (and flushed to disk), so ``directory`` is never seen half-written."""
    commit_checkpoint(begin_checkpoint(directory), directory, state, scheduler, trainable, optimizer, rng_by_process)


def process_rng_state(saved: dict[str, Any], process: int, processes: int) -> dict[str, Any]:
    """The random state process ``process`` of ``processes`` resumes with: its own where the
    checkpoint holds one per process of a run of as many, else the main process's (a run resumed
    with another number of processes cannot repeat the same random draws anyway)."""
    per_process = saved.get("rng_by_process")
    if isinstance(per_process, list) and len(per_process) == processes:
        return per_process[process]
    return saved["rng"]


def staging_path(directory: Path) -> Path:
    return directory.with_name(f".{directory.name}.tmp")


def begin_checkpoint(directory: Path) -> Path:
    """An empty staging folder for the checkpoint ``directory``; a sharded run's processes write
    their shards into it (under ``SHARDED_DIR``) before :func:`commit_checkpoint`."""
    staging = staging_path(directory)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def commit_checkpoint(
    staging: Path,
    directory: Path,
    state: TrainState,
    scheduler: Any,
    trainable: dict[str, Any] | None = None,
    optimizer: Any = None,
    rng_by_process: list | None = None,
) -> None:
    """Write the main process's files into ``staging`` and rename it to ``directory``.

    ``trainable`` and ``optimizer`` are given for a whole checkpoint; a sharded one already holds
    them, as shards, in ``staging / SHARDED_DIR``. ``rng_by_process``: every process's random
    state (:func:`rng_state`), for a run of several processes: each draws its own dropout masks."""
    try:
        _fill_and_rename(staging, directory, state, scheduler, trainable, optimizer, rng_by_process)
    except BaseException:
        # A full disk, Ctrl-C: the half-written staging folder would keep the space it took.
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fill_and_rename(
    staging: Path, directory: Path, state: TrainState, scheduler: Any, trainable: Any, optimizer: Any, rng_by_process: list | None
) -> None:
    files = ["optim.pt", "state.json"]
    if trainable is not None:
        save_tensors(trainable, staging / "trainable.pt")
        files.append("trainable.pt")
    saved = {"scheduler": scheduler.state_dict(), "rng": rng_state()}
    if rng_by_process is not None and len(rng_by_process) > 1:
        saved["rng_by_process"] = rng_by_process
    if optimizer is not None:
        saved["optimizer"] = optimizer.state_dict()
    save_tensors(saved, staging / "optim.pt")
    with atomic_write(staging / "state.json") as handle:  # last: its presence marks a complete checkpoint
        json.dump(asdict(state), handle, indent=2)
    for name in files:
        fsync_path(staging / name)
    replace_directory(staging, directory)  # the same step saved again: the old copy goes only once the new one is in place
    fsync_path(directory.parent)


def save_tensors(data: Any, file: Path, handle: IO[bytes] | None = None) -> None:
    """``torch.save`` of ``data`` into ``file`` (or into ``handle``, already open on it), a failed
    write (a full disk) raised as the OSError it is, naming ``file``: torch's own writer reports it
    as a RuntimeError ('unexpected pos 85184 vs 85136'), and the run ended in a traceback."""
    try:
        with contextlib.nullcontext(handle) if handle is not None else open(file, "wb") as opened:
            _save_through_python(data, opened)
            opened.flush()  # here, where the file is named, not in the caller's close
    except OSError as error:
        if error.filename is None and error.strerror is not None:  # a failed write() or close() names no file
            error.filename = str(file)  # (one with no strerror would print as '[Errno None] None: FILE')
        raise


def _save_through_python(data: Any, handle: IO[bytes]) -> None:
    """Written through a file object Python opened, torch's failure keeps the OSError behind it."""
    import torch

    try:
        torch.save(data, handle)
    except RuntimeError as error:
        cause = error.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is None:
            raise
        raise cause from None


def fsync_path(path: Path) -> None:
    """Flushes ``path`` (a file, or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_sharded_checkpoint(directory: Path) -> bool:
    return (directory / SHARDED_DIR).is_dir()


def read_checkpoint_state(directory: Path) -> TrainState:
    """The position a checkpoint holds (its ``state.json``), once its files are all there; an
    :class:`InputError` naming the missing or damaged file. A resume reads it once and hands it
    to :func:`load_checkpoint`: read twice (to compare the data, then to restore), a file
    changed in between gave the two parts of the resume different states."""
    needed = (f"{SHARDED_DIR}/.metadata", "optim.pt", "state.json") if is_sharded_checkpoint(directory) else CHECKPOINT_FILES
    for name in needed:
        if not (directory / name).is_file():
            raise InputError(f"partial checkpoint: {name} is missing ({_remedy(directory)})", path=directory)
    file = directory / "state.json"
    try:
        return train_state(json.loads(file.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        field = error.field if isinstance(error, InputError) else None
        message = error.message if isinstance(error, InputError) else _one_line(error)
        raise InputError(f"corrupt checkpoint file ({message}; {_remedy(directory)})", path=file, field=field) from None


def load_checkpoint(directory: Path, state: TrainState | None = None) -> tuple[TrainState, dict[str, Any] | None, dict[str, Any]]:
    """(state, trainable weights, optimizer/scheduler/RNG) of a checkpoint, or an
    :class:`InputError` naming the missing or damaged file; ``state``: its ``state.json`` as
    :func:`read_checkpoint_state` already read it (else it is read here). A sharded checkpoint
    has no trainable weights and no optimizer state here: they are its shards, read by the
    processes of a sharded run (:func:`instructerc.training.fsdp.load_sharded`)."""
    import torch

    sharded = is_sharded_checkpoint(directory)
    if state is None:
        state = read_checkpoint_state(directory)
    loaded: list[Any] = []
    for name in ("optim.pt",) if sharded else ("trainable.pt", "optim.pt"):
        file = directory / name
        try:
            loaded.append(torch.load(file, weights_only=True))
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, KeyError, IndexError, TypeError) as error:
            raise InputError(f"corrupt checkpoint file ({_one_line(error)}; {_remedy(directory)})", path=file) from None
    trainable, optim = (None, loaded[0]) if sharded else loaded
    expected = {"scheduler", "rng"} if sharded else {"optimizer", "scheduler", "rng"}
    if (trainable is not None and not isinstance(trainable, dict)) or not isinstance(optim, dict) or not expected <= set(optim):
        raise InputError(f"corrupt checkpoint: not the files instructerc writes ({_remedy(directory)})", path=directory)
    return state, trainable, optim


def train_state(data: Any) -> TrainState:
    """The :class:`TrainState` a checkpoint's ``state.json`` holds, each key of its type: a step
    count given as text, or a list where a number belongs, would fail later, far from the file, or
    resume at a wrong position."""
    from instructerc.config import from_mapping

    state = from_mapping(TrainState, data)
    for name in ("stage", "epoch", "step_in_epoch", "global_step"):
        if getattr(state, name) < 0:
            raise InputError(f"must not be negative, got {getattr(state, name)}", field=name)
    if state.best_step is not None and state.best_step < 0:
        raise InputError(f"must not be negative, got {state.best_step}", field="best_step")
    if state.train_seconds < 0:
        raise InputError(f"must not be negative, got {state.train_seconds}", field="train_seconds")
    return state


def check_weights_fit(weights: dict[str, Any], model: Any, file: Path) -> None:
    """Refuses checkpoint ``weights`` that are not exactly ``model``'s trainable tensors: a resume
    under another LoRA rank, target modules, layers or method (``--force``), or a checkpoint
    copied from another run, would otherwise fail deep in the copy with a bare shape or key error."""
    import torch

    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing = [name for name in trainable if name not in weights]
    foreign = [name for name in weights if name not in trainable]
    reshaped = [
        f"{name} ({_shape(weights[name])} saved, {_shape(trainable[name])} now)"
        for name in trainable
        if name in weights and (not isinstance(weights[name], torch.Tensor) or weights[name].shape != trainable[name].shape)
    ]
    refuse_misfit(missing, foreign, reshaped, file)


def refuse_misfit(missing: list[str], foreign: list[str], reshaped: list[str], path: Path) -> None:
    """The error of a checkpoint whose weights do not fit the model (names missing from it, names
    the model does not train, shapes that differ), whole or sharded; nothing when all fit."""
    problems = [
        f"{len(names)} {what}, e.g. {names[0]}"
        for names, what in ((missing, "missing"), (foreign, "not trainable in this model"), (reshaped, "of another shape"))
        if names
    ]
    if problems:
        raise InputError(
            f"the checkpoint's weights do not fit the model this recipe builds ({'; '.join(problems)}): resume with the "
            "finetune settings and backbone the run started with, or start a new run in another output_dir",
            path=path,
        )


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return "x".join(map(str, shape)) if shape is not None else type(value).__name__


def _remedy(directory: Path) -> str:
    return f"delete {directory.name} to resume from an earlier checkpoint, or start the run afresh"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]


def check_resumable(saved_config: Path, config: dict[str, Any], force: bool = False, defaults: dict[str, Any] | None = None) -> list[str]:
    """The differences between the config a run was started with (``saved_config``) and
    ``config``; an :class:`InputError` listing them unless ``force``. Resuming under another
    config mixes two runs in one set of weights and overwrites the record of the first.
    Keys the saved config lacks (added to the recipe format since) count as ``defaults``."""
    import yaml

    if not saved_config.is_file():
        # The run writes it before its first checkpoint, so it was deleted: without it nothing
        # says which recipe the checkpoint's weights were trained under.
        return _unverifiable(saved_config, "is missing", force)
    try:
        saved = yaml.safe_load(saved_config.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as error:
        raise InputError(f"cannot read the run's saved config ({_one_line(error)})", path=saved_config) from None
    if not isinstance(saved, dict):
        # Compared as it is, an emptied file listed the whole new recipe as the one difference.
        return _unverifiable(saved_config, "is empty" if saved is None else "is not a recipe (a mapping of keys)", force)
    if defaults:
        saved = _with_defaults(saved, yaml.safe_load(yaml.safe_dump(defaults)))
    # Through YAML, so the new config compares in the form the saved one was written in.
    new = yaml.safe_load(yaml.safe_dump(config))
    differences = [
        d
        for d in config_differences(saved, new)
        if d.split(":", 1)[0] not in RESUME_FREE_KEYS and not (d.startswith("backbone.dtype:") and _same_precision(saved, new))
    ]
    if differences and not force:
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        raise InputError(
            f"the run was started with another config ({shown}): pass --force to resume it under the new one anyway, "
            "or choose another output_dir",
            path=saved_config,
        )
    return differences


def _unverifiable(saved_config: Path, problem: str, force: bool) -> list[str]:
    """The one difference to report when the run's saved config cannot be compared; refused
    unless ``force``, like any difference."""
    if not force:
        raise InputError(
            f"the run's saved config {problem}, so this recipe cannot be checked against the one the run started with: "
            "pass --force to resume under this recipe anyway, or choose another output_dir",
            path=saved_config,
        )
    return [f"{saved_config.name}: the saved config {problem}; resumed under the recipe given"]


def _same_precision(saved: Any, new: dict[str, Any]) -> bool:
    """Whether the two configs' ``backbone.dtype`` compute in one type on this machine, as grid run
    keys count it: a run started under ``auto`` and resumed under the ``bfloat16`` it meant is one run."""
    from instructerc.modeling.precision import DTYPES, resolve_dtype

    names = [_dtype_of(saved), _dtype_of(new)]
    if not all(name in DTYPES for name in names):
        return False
    return resolve_dtype(names[0], _training_device()) == resolve_dtype(names[1], _training_device())


def _dtype_of(config: Any) -> Any:
    backbone = config.get("backbone") if isinstance(config, dict) else None
    return backbone.get("dtype") if isinstance(backbone, dict) else None


def _training_device() -> str:
    # The device the trainer computes on, as the experiment runner's run keys assume it.
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _with_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    filled = dict(saved)
    for key, value in defaults.items():
        if key not in filled:
            filled[key] = value
        elif isinstance(filled[key], dict) and isinstance(value, dict):
            filled[key] = _with_defaults(filled[key], value)
    return filled


def config_differences(old: Any, new: Any, where: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs, with dotted keys."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            child = f"{where}.{key}" if where else str(key)
            if key not in new:
                out.append(f"{child}: {old[key]!r} -> (absent)")
            elif key not in old:
                out.append(f"{child}: (absent) -> {new[key]!r}")
            else:
                out += config_differences(old[key], new[key], child)
        return out
    return [] if old == new else [f"{where or 'config'}: {old!r} -> {new!r}"]


def latest_checkpoint(checkpoints: Path) -> Path | None:
    found = sorted(p for p in checkpoints.glob("step-*") if (p / "state.json").is_file())
    return found[-1] if found else None


def prune_checkpoints(checkpoints: Path, keep: int = 1) -> None:
    """Removes all but the ``keep`` latest complete checkpoints, and what earlier saves and
    prunings cut short left behind them (a ``step-*`` folder without its ``state.json``, a
    staging or set-aside copy of an earlier step): skipped as incomplete, a folder a stop left
    half-deleted was never pruned again, and kept its gigabytes for good. Each goes out of the
    way by one rename before it is deleted, so a stop while deleting never leaves a folder
    that reads as a checkpoint. Run while no save is under way (the main process, after a commit)."""
    found = sorted(p for p in checkpoints.glob("step-*") if (p / "state.json").is_file())
    if not found:
        return
    oldest_kept = found[max(0, len(found) - keep)].name
    for old in sorted(checkpoints.glob("*step-*")):
        step = old.name.strip(".").split(".")[0]  # step-N, .step-N.tmp, .step-N.old, .step-N.pruned
        if step.startswith("step-") and step < oldest_kept and old.is_dir():
            _delete(old)


def _delete(folder: Path) -> None:
    doomed = folder if folder.name.endswith(".pruned") else folder.with_name(f".{folder.name.strip('.')}.pruned")
    try:
        folder.rename(doomed)
    except OSError:
        doomed = folder
    shutil.rmtree(doomed, ignore_errors=True)
