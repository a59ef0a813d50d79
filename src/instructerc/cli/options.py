"""Options several commands share."""

from __future__ import annotations

import argparse
import errno
import io
import os
import sys
from pathlib import Path
from typing import TextIO

from instructerc.data.registry import DataSource
from instructerc.errors import InputError
from instructerc.files import in_the_way, is_symlink_loop


def add_data_options(parser: argparse.ArgumentParser, *, positional_dataset: bool = False) -> None:
    """``--dataset``, ``--data``, ``--labels`` and ``--label-set``, the same for every command
    that reads a dataset. ``positional_dataset``: also accept the dataset as the first argument,
    the older spelling of ``data`` and ``prompts``, with a deprecation message (see :func:`dataset_name`)."""
    if positional_dataset:
        # Hidden from the help: new users learn --dataset only.
        parser.add_argument("positional_dataset", nargs="?", metavar="DATASET", help=argparse.SUPPRESS)
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help="a registered dataset: meld, emorynlp, iemocap, cosmic-meld, cosmic-emorynlp, cosmic-iemocap, uime, jsonl",
    )
    parser.add_argument(
        "--data", type=path_arg, metavar="PATH", help="data root (holding meld/, emorynlp/, cosmic/), a dataset folder, or a JSONL file"
    )
    parser.add_argument(
        "--labels", default="original", metavar="SPACE", help="original (default), uime (the paper's unified labels) or uime:feeling-wheel"
    )
    parser.add_argument(
        "--label-set",
        metavar="NAME",
        help="JSONL only: the label set its emotions follow (meld, emorynlp, iemocap, uime, uime:feeling-wheel)",
    )


def add_dtype_option(parser: argparse.ArgumentParser, what: str) -> None:
    from instructerc.modeling.precision import DTYPES

    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        help=f"precision {what}: auto (default: bf16 on GPUs and CPUs that compute it natively, "
        "else float32), float32, bfloat16 or float16",
    )


def add_trust_remote_code_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let the model's own Python files run (off: a model directory never turns it on itself)",
    )


def dataset_name(args: argparse.Namespace) -> str:
    """The dataset of :func:`add_data_options`: ``--dataset``, or the deprecated positional one
    (announced on stderr, so scripts keep working while their authors learn the new spelling)."""
    positional = getattr(args, "positional_dataset", None)
    if positional is not None:
        if args.dataset is not None and args.dataset != positional:
            raise InputError(
                f"the positional DATASET '{positional}' and --dataset {args.dataset} differ: give --dataset only", field="dataset"
            )
        print(f"instructerc: the positional DATASET is deprecated; use --dataset {positional}", file=sys.stderr)
        return positional
    if args.dataset is None:
        raise InputError("--dataset is required (for example --dataset meld; 'instructerc data list' shows them all)", field="dataset")
    return args.dataset


def data_source(args: argparse.Namespace) -> DataSource:
    return DataSource(name=dataset_name(args), path=args.data, labels=args.labels, label_set=args.label_set)


def path_arg(text: str) -> Path:
    """A path option's value (an argparse type). An empty one is refused: ``Path("")`` is the
    working directory, which an unset variable (``--data "$DATA"``) would name without a word."""
    return Path(nonempty_path_text(text))


def nonempty_path_text(text: str) -> str:
    """A path (or hub id) option's value kept as text, refused when empty (see :func:`path_arg`)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset variable?)")
    return text


def output_file(text: str) -> Path:
    """An output file's path (an argparse type). ``-`` is refused: by habit it means stdout, and
    taken as a path it would quietly write a file named ``-`` instead."""
    if text == "-":
        raise argparse.ArgumentTypeError("'-' is not stdout here: give /dev/stdout (or ./- for a file named '-')")
    if text.endswith(("/", os.sep)) and text.strip("/" + os.sep):
        # Path() drops the slash: 'results/' would quietly become a file named 'results'.
        raise argparse.ArgumentTypeError(
            f"'{text}' ends with '/', so it names a folder: give the file to write (e.g. {text}predictions.jsonl)"
        )
    return path_arg(text)


def output_folder(text: str) -> Path:
    """An output folder's path (an argparse type). ``-`` is refused: by habit it means stdout,
    and taken as a path it would quietly make a folder named ``-`` to hold the outputs."""
    if text == "-":
        raise argparse.ArgumentTypeError("'-' is not stdout here: give the folder to write into (or ./- for a folder named '-')")
    return path_arg(text)


def output_folder_text(text: str) -> str:
    """:func:`output_folder` kept as text, as given (a recipe value: ``train --output``)."""
    output_folder(text)
    return text


def check_input_file(path: Path, what: str, why: str = "") -> None:
    """An :class:`InputError` for an input file that cannot be read as one, which would otherwise
    be called "file not found": ``-`` (by habit stdin) where no file has that name, and a pipe,
    device or socket (``<(envsubst < recipe.yaml)``, /dev/stdin, /dev/null). ``what``: what the
    file holds (``the recipe``); ``why``: why a pipe cannot do (`` (predict reads its input twice)``)."""
    if str(path) == "-" and not os.path.lexists(path):
        raise InputError(f"'-' is not stdin here{why}, and no file has that name: save {what} to a file and give its path")
    if path.exists() and not path.is_file() and not path.is_dir():
        raise InputError(f"is not a regular file{why or ' (a pipe or a device)'}: save it to a file first", path=path)


def check_output_file(path: Path, option: str) -> None:
    """An :class:`InputError` when the output file ``path`` is a folder, a folder above it is an
    existing file, or ``path`` is a symlink loop: writing would fail, but only at the end, after
    the data was read and the model has run."""
    if path.is_dir():
        raise InputError(f"is a folder; {option} names the file to write", path=path)
    parent = in_the_way(path.parent, None, f"; {option} names the file to write")
    if parent is not None:
        raise InputError(f"{parent} is a file, not a folder; {option} names the file to write", path=path)
    if path.is_symlink() and is_symlink_loop(path):
        # A link to nowhere is written through (it names the file to create); a loop cannot be.
        raise InputError(f"is a symlink loop (a link that leads back to itself); {option} names the file to write", path=path)


def summary_stream(out: Path) -> TextIO:
    """Where the summary line goes: stderr when the JSONL itself went to stdout (``--out /dev/stdout``,
    ``/dev/fd/1``), where the line would become a last record that is not a dialogue."""
    return sys.stderr if is_stdout(out) else sys.stdout


def is_stdout(path: Path) -> bool:
    """Whether ``path`` names the file stdout is (``/dev/stdout``, ``/dev/fd/1``, or the file it was redirected to)."""
    if sys.stdout is None:  # started with stdout closed (``>&-``)
        return False
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, io.UnsupportedOperation):  # no real stdout (captured, closed): nothing to share
        return False


# The machine failing, not the path given: a full disk or quota (also /dev/full), a device error.
# Said as the CLI says every such error (exit status 1), as train says a full disk under its run.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


def output_error(error: OSError, path: Path) -> Exception:
    """What to raise for ``error`` met writing the output ``path``: an :class:`InputError` naming
    it (a folder that cannot be written, a name in the way), but an ``OSError`` naming ``path``
    for the machine's failures (:data:`MACHINE_ERRNOS`), and a broken pipe on stdout (``--output
    /dev/stdout | head``) as it is, since that is the reader having stopped, which the CLI ends
    quietly with the shell's SIGPIPE status."""
    if isinstance(error, BrokenPipeError) and is_stdout(path):
        return error
    if error.errno in MACHINE_ERRNOS:
        return OSError(error.errno, error.strerror or str(error), str(path))
    return InputError(f"cannot write: {error.strerror or error}", path=path)
