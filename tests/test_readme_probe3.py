"""README.md and each command's --help, checked against what the commands do."""

from __future__ import annotations

import argparse
from pathlib import Path

from instructerc.cli.eval_commands import default_out
from instructerc.cli.main import build_parser


def _option_help(command: str, option: str) -> str:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return next(a.help for a in commands.choices[command]._actions if option in a.option_strings) or ""


def test_evaluate_help_names_the_folder_generate_mode_writes_to() -> None:
    # --help promised MODEL/eval-DATASET-SPLIT, but generate mode writes beside it, under another
    # name: a user looking for the metrics in the documented folder found the score run's, or none.
    written = default_out(Path("m"), "meld", "test", "generate", paper_parsing=True).name
    assert written == "eval-meld-test-generate-paper-parsing"
    shown = _option_help("evaluate", "--out")
    assert "-generate" in shown and "-generate-paper-parsing" in shown, shown
