"""The argument parser of every command: an option given twice with two different values is refused.

argparse keeps the last value and drops the first without a word: ``--output a.jsonl ... --output
b.jsonl`` writes only b.jsonl, and ``--batching ... --no-batching`` serves without batching. The
same value twice (a wrapper script adding a default the user also gave) stays harmless.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Any

# The namespace attribute that records the options given so far, for each destination.
_GIVEN = "_options_given"


class CommandParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose value options and ``--x/--no-x`` switches refuse a
    second, different value; its sub-parsers (and their argument groups) are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviations (``--mod`` for ``--model``): an option added later would change what an
        # old script's abbreviation means, or make it ambiguous. Sub-parsers are made by
        # ``add_parser`` without the flag, so the default is set here for them too.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.register("action", None, StoreOnce)
        self.register("action", "store", StoreOnce)
        self.register("action", argparse.BooleanOptionalAction, BooleanOnce)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        """As argparse's, but a sub-command refuses what it does not know itself, with its own
        usage and the option meant; argparse would leave that to the top parser, whose usage
        (``instructerc [-h] [--version] COMMAND ...``) says nothing of the mistyped option."""
        args = list(args) if args is not None else None
        # The words parsed, as argparse takes them (the command line when none are given).
        self._words = [str(word) for word in (args if args is not None else sys.argv[1:])]
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}{self._suggestion(extras)}")
        return parsed, extras

    def error(self, message: str) -> Any:
        """As argparse's, but a required option reported missing also names the unknown options
        given (``--inptu`` for ``--input``; ``--output`` where the command's is ``--out``): argparse
        checks the required options first and would never mention them."""
        if message.startswith("the following arguments are required"):
            unknown = [word for word in getattr(self, "_words", []) if word.startswith("--") and not self._known(word)]
            if unknown:
                message = f"{message}; unrecognized arguments: {' '.join(unknown)}{self._suggestion(unknown)}"
        # Before any process group exists: under a launcher, every process would print it.
        from instructerc.inference.sharding import said_by_the_first_process

        quiet = said_by_the_first_process(2)
        if quiet is not None:
            self.exit(quiet)
        return super().error(message)

    def _print_message(self, message: str, file: Any = None) -> None:
        """As argparse's, but under a launcher the help, usage and version (``torchrun ...
        instructerc predict --help``) are printed by the first process alone, not once per process."""
        from instructerc.inference.sharding import left_to_the_first_process

        if left_to_the_first_process():
            return
        super()._print_message(message, file)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """As argparse's, but a mistyped choice (the command ``prdict``, ``prompt`` for ``prompts``,
        ``--mode scor``) is also told the choice it is closest to: argparse lists them all."""
        choices = action.choices
        if choices is None or value in choices:
            return
        named = [str(choice) for choice in choices]
        close = difflib.get_close_matches(str(value), named, n=1, cutoff=0.6)
        close = close or [name for name in named if name.lower() == str(value).lower()]
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise argparse.ArgumentError(action, f"invalid choice: {value!r} ({hint}choose from {', '.join(map(repr, named))})")

    def _known(self, word: str) -> bool:
        name = word.split("=", 1)[0]
        return name == "--" or name in self._option_string_actions

    def _suggestion(self, extras: list[str]) -> str:
        options = [option for option in self._option_string_actions if option.startswith("--")]
        for word in extras:
            name = word.split("=", 1)[0]
            if not word.startswith("--") or name == "--":
                continue
            # An abbreviation (``--mod``, ``--thr``) is told the options it begins, and why it fails.
            longer = sorted(option for option in options if option.startswith(name))
            if longer:
                return f" (did you mean {' or '.join(longer[:4])}? options are not abbreviated)"
            close = difflib.get_close_matches(name, options, n=1, cutoff=0.8)
            # A longer spelling of an option (``--output`` for ``--out``, ``--labels-set``).
            close = close or sorted((option for option in options if name.startswith(option) and option != "--"), key=len)[-1:]
            if close:
                return f" (did you mean {close[0]}?)"
        return ""


def refuse_a_second_value(
    parser: argparse.ArgumentParser, namespace: argparse.Namespace, action: argparse.Action, value: str, shown: str
) -> None:
    """Exits through ``parser.error`` when ``action`` was given before with another ``value``."""
    seen: dict[str, tuple[str, str]] = vars(namespace).setdefault(_GIVEN, {})
    first_value, first_shown = seen.setdefault(action.dest, (value, shown))
    if first_value != value:
        names = "/".join(action.option_strings)
        parser.error(f"argument {names}: given twice, as '{first_shown}' and '{shown}'; give it once")


class StoreOnce(argparse.Action):
    """``action="store"`` (argparse's default) that refuses a second, different value."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None
    ) -> None:
        words = [str(word) for word in (values if isinstance(values, list) else [values])]
        refuse_a_second_value(parser, namespace, self, repr(words), " ".join([option_string or self.dest, *words]))
        setattr(namespace, self.dest, values)


class BooleanOnce(argparse.BooleanOptionalAction):
    """``--x/--no-x`` that refuses both spellings in one command line."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None
    ) -> None:
        spelling = option_string or ""
        refuse_a_second_value(parser, namespace, self, repr(spelling.startswith("--no-")), spelling)
        super().__call__(parser, namespace, values, option_string)
