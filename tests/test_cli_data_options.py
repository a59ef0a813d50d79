"""One set of data options (``--dataset``, ``--data``, ``--labels``, ``--label-set``) for every
command that reads a dataset; the older positional dataset of ``data`` and ``prompts`` still works,
with a deprecation message."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from instructerc.cli.main import build_parser

DEPRECATED = "instructerc: the positional DATASET is deprecated; use --dataset jsonl"
DATA_OPTIONS = {"--dataset", "--data", "--labels", "--label-set"}
COMMANDS = [("data", "stats"), ("data", "export"), ("prompts", "show"), ("evaluate",), ("baseline",)]


@pytest.fixture
def chat(tmp_path: Path) -> Path:
    """A labelled JSONL file of two dialogues (three utterances)."""
    records = [
        {
            "id": "a",
            "utterances": [{"speaker": "Ann", "text": "Hi!", "emotion": "joy"}, {"speaker": "Ben", "text": "Oh.", "emotion": "sad"}],
        },
        {"id": "b", "utterances": [{"speaker": "Ann", "text": "Bye.", "emotion": "joy"}]},
    ]
    file = tmp_path / "chat.jsonl"
    file.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return file


def subcommand(*path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        (choices,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = choices.choices[name]
    return parser


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_that_reads_a_dataset_takes_the_same_options(command: tuple[str, ...]) -> None:
    options = {option for action in subcommand(*command)._actions for option in action.option_strings}
    assert DATA_OPTIONS <= options


def test_the_new_spelling_works_without_a_warning(run_cli, chat: Path, tmp_path: Path) -> None:
    stats = run_cli("data", "stats", "--dataset", "jsonl", "--data", chat)
    assert stats.code == 0 and stats.err == ""
    assert stats.out.splitlines()[0] == "jsonl (labels: chat)"
    out = tmp_path / "out.jsonl"
    export = run_cli("data", "export", "--dataset", "jsonl", "--data", chat, "--split", "test", "--out", out)
    assert export.code == 0 and export.err == ""
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2


def test_the_positional_spelling_still_works_and_says_it_is_deprecated(run_cli, chat: Path) -> None:
    new = run_cli("data", "stats", "--dataset", "jsonl", "--data", chat)
    old = run_cli("data", "stats", "jsonl", "--data", chat)
    assert old.code == 0
    assert old.out == new.out
    assert old.err.splitlines() == [DEPRECATED]


def test_both_spellings_agreeing_are_accepted_with_the_warning(run_cli, chat: Path) -> None:
    result = run_cli("data", "stats", "jsonl", "--dataset", "jsonl", "--data", chat)
    assert result.code == 0 and result.err.splitlines() == [DEPRECATED]


def test_both_spellings_differing_are_refused(run_cli, chat: Path) -> None:
    result = run_cli("data", "stats", "meld", "--dataset", "jsonl", "--data", chat)
    assert result.code == 2 and result.out == ""
    assert result.err.splitlines() == ["instructerc: error: the positional DATASET 'meld' and --dataset jsonl differ: give --dataset only"]


@pytest.mark.parametrize(
    "argv",
    [
        ("data", "stats"),
        ("data", "export", "--split", "test", "--out", "o.jsonl"),
        ("prompts", "show"),
        ("baseline", "--split", "test", "--out", "out"),
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_a_missing_dataset_is_a_clear_error(run_cli, chat: Path, argv: tuple[str, ...]) -> None:
    result = run_cli(*argv, "--data", chat)
    assert result.code == 2 and result.out == ""
    assert result.err.splitlines() == [
        "instructerc: error: --dataset is required (for example --dataset meld; 'instructerc data list' shows them all)"
    ]


def test_evaluate_names_a_missing_dataset_too(run_cli, chat: Path, tmp_path: Path) -> None:
    result = run_cli("evaluate", "--model", tmp_path, "--split", "test", "--data", chat)
    assert result.code == 2 and "--dataset" in result.err


def test_prompts_show_reads_the_positional_dataset_with_the_warning(run_cli, chat: Path) -> None:
    result = run_cli("prompts", "show", "chatter", "--data", chat)
    assert result.code == 2
    deprecation, error = result.err.splitlines()
    assert deprecation == "instructerc: the positional DATASET is deprecated; use --dataset chatter"
    assert "unknown dataset 'chatter'" in error


def test_the_positional_dataset_is_not_advertised(capsys: pytest.CaptureFixture[str]) -> None:
    help_text = subcommand("data", "stats").format_help()
    assert "--dataset NAME" in help_text and "DATASET" not in help_text.replace("--dataset", "")
