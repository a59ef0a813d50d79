"""``instructerc``: one verb per job; heavy libraries are imported inside the commands."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from instructerc import __version__
from instructerc.errors import InputError

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

    parser = argparse.ArgumentParser(prog="instructerc", description="Emotion recognition in conversation with instruction-tuned LLMs.")
    parser.add_argument("--version", action="version", version=f"instructerc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (data_commands, prompt_commands, train_commands, predict_commands, eval_commands, experiment_commands, serve_commands):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except InputError as error:
        print(f"instructerc: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("instructerc: interrupted", file=sys.stderr)
        return 130
