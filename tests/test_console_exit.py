"""The ``instructerc`` command's exit: under a launcher every status ends without the interpreter's
teardown (where the process group's threads could abort a finished process); alone, as usual."""

from __future__ import annotations

import pytest

from instructerc.cli import main as cli_main
from instructerc.cli import process_group


class Exited(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


@pytest.fixture
def launched(monkeypatch):
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}.items():
        monkeypatch.setenv(name, value)

    def exit_group_member(status: int) -> None:
        raise Exited(status)

    monkeypatch.setattr(process_group, "exit_group_member", exit_group_member)


def _main_ending(monkeypatch, ending) -> None:
    def main(argv=None):
        if isinstance(ending, BaseException):
            raise ending
        return ending

    monkeypatch.setattr(cli_main, "main", main)


@pytest.mark.parametrize("ending, status", [(0, 0), (2, 2), (SystemExit(141), 141), (SystemExit(None), 0), (SystemExit("bye"), 1)])
def test_a_launched_process_ends_through_the_group_exit_with_its_status(launched, monkeypatch, ending, status):
    _main_ending(monkeypatch, ending)
    with pytest.raises(Exited) as exited:
        cli_main.console()
    assert exited.value.status == status


@pytest.mark.parametrize("ending, status", [(0, 0), (2, 2), (SystemExit(141), 141)])
def test_a_process_alone_exits_as_usual(monkeypatch, ending, status):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    _main_ending(monkeypatch, ending)
    with pytest.raises(SystemExit) as stop:
        cli_main.console()
    assert stop.value.code == status


def test_launcher_variables_that_do_not_hold_together_exit_as_usual(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    _main_ending(monkeypatch, 2)
    with pytest.raises(SystemExit) as stop:
        cli_main.console()
    assert stop.value.code == 2


def test_a_message_as_exit_code_is_printed_and_is_status_1(capsys):
    assert cli_main.exit_status("no way") == 1
    assert "no way" in capsys.readouterr().err
