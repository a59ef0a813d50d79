"""``instructerc``: one verb per job; heavy libraries are imported inside the commands."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import stat
import sys
import threading
from typing import Any, Callable, Iterator, Sequence

from instructerc import __version__
from instructerc.errors import InputError
from instructerc.extras import EXTRA_OF_MODULE, MissingExtra, missing_extra, missing_modules
from instructerc.inference.sharding import left_to_the_first_process, said_by_the_first_process

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from instructerc.cli import (
        data_commands,
        eval_commands,
        experiment_commands,
        predict_commands,
        prompt_commands,
        serve_commands,
        train_commands,
    )
    from instructerc.cli.parser import CommandParser

    parser = CommandParser(prog="instructerc", description="Emotion recognition in conversation with instruction-tuned LLMs.")
    parser.add_argument("--version", action="version", version=f"instructerc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (data_commands, prompt_commands, train_commands, predict_commands, eval_commands, experiment_commands, serve_commands):
        module.register(commands)
    return parser


def console() -> None:
    """The ``instructerc`` command (and ``python -m instructerc``): :func:`main` on the command
    line, its status the process's exit status. A process started by a launcher ends without the
    interpreter's teardown whatever its status (an error, ``| head`` leaving, success), since
    there the process group's C++ threads are destroyed after Python has begun to shut down and
    a process that had finished sometimes aborted (SIGABRT) instead of exiting with its status."""
    try:
        status = main()
    except SystemExit as stop:
        if not _launched():
            raise
        status = exit_status(stop.code)
    if _launched():
        from instructerc.cli.process_group import exit_group_member

        exit_group_member(status)
    sys.exit(status)


def _launched() -> bool:
    """Whether a multi-process launcher started this process; launcher variables that do not
    hold together count as none here (the command has said so by then)."""
    from instructerc.distributed import launched_world_size

    try:
        return launched_world_size() > 1
    except InputError:
        return False


def exit_status(code: object) -> int:
    """The exit status :class:`SystemExit` ``code`` stands for, as the interpreter reads it: None
    is 0, a number itself, anything else (a message, which is printed) 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    # Ctrl-C and SIGTERM are caught around everything: they can also come while the parser and the
    # libraries are still being imported (a second or more), which ends with one line too.
    try:
        with terminate_as_exit():
            return _run(argv)
    except KeyboardInterrupt:
        return interrupted()
    except Terminated as stop:
        return terminated(stop)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    quiet_libraries(progress=not getattr(args, "no_progress", False))
    try:
        status = handler(args)
        # A reader that has gone (``| head``) shows here, not in Python's flush at exit.
        if sys.stdout is not None:  # None: started with stdout closed (``>&-``); print() drops output
            sys.stdout.flush()
        return status
    except BrokenPipeError:
        if not stdout_is_pipe():
            raise
        return reader_gone()
    except InputError as error:
        if isinstance(error, MissingExtra):
            return _missing_extra_said(status=2, line=str(error))
        print(f"instructerc: error: {shown(error, command_parser(parser, args.command))}", file=sys.stderr)
        return 2
    except OSError as error:
        # The machine, not the input: a full disk, a device error, a file that went away. One line
        # naming it; outputs are written through temporary files, so earlier ones are intact.
        where = f"{error.filename}: " if error.filename else ""
        print(f"instructerc: error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        extra = EXTRA_OF_MODULE.get((error.name or "").split(".")[0])
        if extra is None:
            raise
        # All the extra lacks, not only the first library imported: installing that one would not do.
        missing = missing_modules(extra) or [str(error.name)]
        return _missing_extra_said(status=2, line=str(missing_extra(args.command, extra, missing)))


def _missing_extra_said(status: int, line: str) -> int:
    """A missing extra, met before any process group exists: under a launcher every process lacks
    it alike, and the first process alone says so (the others exit with its status silently)."""
    quiet = said_by_the_first_process(status)
    if quiet is not None:
        return quiet
    print(f"instructerc: error: {line}", file=sys.stderr)
    return status


def shown(error: InputError, parser: argparse.ArgumentParser) -> str:
    """The error's line. A field that is one of the command's options is named as the option the
    user typed (``argument --label-set: ...``, as argparse names them), not as the field it sets
    (``field 'label_set'``); an error about a file keeps the file's own field names."""
    if error.path is not None or error.field is None:
        return str(error)
    option = options_by_dest(parser).get(error.field.replace("-", "_"))
    if option is None:
        return str(error)
    return str(InputError(error.message if option in error.message else f"argument {option}: {error.message}"))


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-parser of ``command`` (``predict``); the whole parser if there is none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def options_by_dest(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each destination of ``parser`` and its sub-parsers, by the long option that sets it."""
    found: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for dest, option in options_by_dest(sub).items():
                    found.setdefault(dest, option)
        long = [option for option in action.option_strings if option.startswith("--")]
        if long and action.dest != "help":
            found.setdefault(action.dest, long[0])
    return found


def interrupted() -> int:
    """Ctrl-C: the shell's status for a command stopped by SIGINT. A second Ctrl-C while the
    process ends is ignored: it would break into the libraries' exit handlers with a traceback."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("instructerc: interrupted", file=sys.stderr)
    return 128 + int(signal.SIGINT)


def terminated(stop: Terminated) -> int:
    """SIGTERM: said on stderr, so that a stopped run's log does not just end without a word."""
    if stop.quiet:
        return int(stop.code)
    print("instructerc: terminated (SIGTERM)", file=sys.stderr)
    return int(stop.code)


def stdout_is_pipe() -> bool:
    """Whether stdout goes to a pipe or socket, the only place a broken pipe can be the reader's
    doing; one met elsewhere (a socket of a distributed run) is a real failure and is raised."""
    try:
        mode = os.fstat(sys.stdout.fileno()).st_mode
    except (OSError, ValueError, AttributeError):  # closed, None (started closed), or not a real file (an in-memory stream)
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def reader_gone() -> int:
    """The program reading stdout (``instructerc data stats ... | head``) stopped reading: what
    is left has nowhere to go. Nothing more is printed (a traceback is noise here), stdout is
    pointed at /dev/null so that the flush at exit cannot fail again, and the status is the
    shell's for a command stopped by SIGPIPE, as ``git log | head`` gives."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 128 + int(getattr(signal, "SIGPIPE", 13))  # 13 on every POSIX system; Windows lacks the name


def quiet_libraries(progress: bool) -> None:
    """Keep the libraries' output to what a user can act on: peft asks transformers 5 for an
    attribute it deprecated, a FutureWarning on every model load that no user of ours can fix; and
    ``--no-progress`` also silences transformers' own bars (loading weights)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
    if not progress:
        try:
            from transformers.utils import logging as transformers_logging
        except ImportError:  # without the train extra no command loads a model
            return
        transformers_logging.disable_progress_bar()


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM (``kill``, or a launcher stopping the other processes of a run) ends the command
    as an exception, like Ctrl-C, so temporary outputs are removed on the way out; by default
    Python would die on the spot and leave them. Only the main thread can install a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Terminated(SystemExit):
    """SIGTERM as an exception. A SystemExit, so that no ``except Exception`` on the way out
    swallows it; its code is the shell's status for a command stopped by SIGTERM."""

    # Stopped before its process group exists, in a process other than RANK 0 of a launched run:
    # the launcher stops the others when the first fails there (a missing extra), and the first
    # alone says why; and a SIGTERM to every process is said once.
    quiet = False


def _terminated(signum: int, frame: Any) -> None:
    stop = Terminated(128 + signum)
    stop.quiet = left_to_the_first_process()
    raise stop
