"""What every benchmark shares: its option types, and its ``--json`` file.

``write_json(path, figures, args)`` writes ``{"arguments": ..., "machine": ..., **figures}``
atomically (a temporary file beside ``path``, renamed over it once complete), so an interrupted
run never leaves a half-written file nor destroys an earlier one. Values JSON cannot hold become
plain ones: paths strings, numpy scalars numbers, NaN and infinities ``null``.

The option types (``positive_int``, ``output_file``, ...) and ``check_meld`` refuse a bad value
when the command starts, as one ``error:`` line naming the option (exit code 2): a benchmark runs
for minutes, and a count of 0 or a ``--json`` folder found at its end loses that time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

Number = TypeVar("Number", int, float)


def _number(text: str, kind: Callable[[str], Number], what: str, accept: Callable[[Number], bool]) -> Number:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
    # NaN fails every comparison, and an infinite time or share is no setting.
    if (isinstance(value, float) and not math.isfinite(value)) or not accept(value):
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number above 0 (a count of steps, dialogues, tokens, clients)."""
    return _number(text, int, "a whole number above 0", lambda value: value > 0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0 (seconds, epochs)."""
    return _number(text, float, "a number above 0", lambda value: value > 0)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0 (a count that may be none: steps to profile)."""
    return _number(text, int, "a whole number of at least 0", lambda value: value >= 0)


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number of at least 0 (a warm-up that may be skipped, a wait)."""
    return _number(text, float, "a number of at least 0", lambda value: value >= 0)


def fraction(text: str) -> float:
    """An argparse type: a share in (0, 1]."""
    return _number(text, float, "a number above 0 and at most 1", lambda value: 0 < value <= 1)


def existing_dir(text: str) -> Path:
    """An argparse type: a folder that exists (a model directory, a data root, a checkpoint)."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {'not a folder' if path.exists() else 'no such folder'}")
    return path


def existing_file(text: str) -> Path:
    """An argparse type: a file that exists (a recipe, a metrics file)."""
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: {'not a file' if path.exists() else 'no such file'}")
    return path


def folder_to_use(text: str) -> Path:
    """An argparse type: a folder the command may create, or one that exists (a cache), not a file."""
    path = Path(text).expanduser()
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        where = "" if ancestor == path else f" ({ancestor})"
        raise argparse.ArgumentTypeError(f"{text}: a file{where} is in the way of the folder")
    return path


def output_file(text: str) -> Path:
    """An argparse type for ``--json``: a file that can be written (missing folders are created).

    Checked when the command starts, by creating (and removing) a file in the nearest existing
    folder: permissions alone do not tell, e.g. for root or on a read-only file system.
    """
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name, e.g. {path / 'figures.json'}")
    if path.exists() and not path.is_file():
        return path  # a stream such as /dev/stdout or a named pipe: written straight to
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(f"{text}: cannot create a file in {folder} ({error.strerror})") from None
    return path


@contextlib.contextmanager
def input_errors_to(parser: argparse.ArgumentParser, option: str | None = None) -> Iterator[None]:
    """The project's InputError raised inside, as the parser's one-line ``error:`` (exit code 2),
    naming ``option`` when the error comes from one option's value."""
    from instructerc.errors import InputError

    try:
        yield
    except InputError as error:
        parser.error(f"argument {option}: {error}" if option else str(error))


def check_meld(parser: argparse.ArgumentParser, data: Path, *splits: str) -> None:
    """Reads the MELD splits a benchmark uses (a fraction of a second) before it starts its
    processes, so a wrong ``--data`` is one error line, not a child's traceback minutes later."""
    from instructerc.data.registry import DataSource, load_dialogues

    with input_errors_to(parser, "--data"):
        for split in splits:
            if not load_dialogues(DataSource("meld", data), split):
                parser.error(f"argument --data: {data}: MELD {split} holds no dialogues")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` reports)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the figures depend on besides the code: CPU, cores, threads, library versions."""
    import torch

    from instructerc.modeling.precision import cpu_has_native_bf16

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "thread_env": {name: os.environ[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if name in os.environ},
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def arguments(args: argparse.Namespace, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The command's arguments, without ``json`` itself and the internal ones named in ``skip``."""
    left_out = {"json", *skip}
    return {name: plain(value) for name, value in vars(args).items() if name not in left_out}


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return plain(value.tolist())
    return str(value)


def write_json(path: Path, figures: Mapping[str, Any], args: argparse.Namespace, skip: Iterable[str] = ()) -> None:
    """Write the figures, the arguments (less ``skip``) and the machine to ``path``, atomically."""
    from instructerc.files import atomic_write

    clash = {"arguments", "machine"} & set(figures)
    if clash:
        raise ValueError(f"figures may not use the report's own keys: {sorted(clash)}")
    report = {"arguments": arguments(args, skip), "machine": machine(), **plain(figures)}
    with atomic_write(path) as handle:
        handle.write(json.dumps(report, indent=2, allow_nan=False) + "\n")
    print(f"wrote {path}")
