"""A command that fails for a reason outside its input (a missing optional extra, a full disk) ends with one line, not a traceback."""

from __future__ import annotations

import pytest

from instructerc.cli import data_commands
from instructerc.cli.main import main


def _raising(name: str):
    def handler(args):
        raise ModuleNotFoundError(f"No module named '{name}'", name=name)

    return handler


@pytest.mark.parametrize(("module", "extra"), [("torch", "train"), ("sklearn.linear_model", "train"), ("fastapi", "serve")])
def test_a_missing_library_names_its_extra(monkeypatch, capsys, module, extra):
    monkeypatch.setattr(data_commands, "list_sources", _raising(module))
    assert main(["data", "list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("instructerc: error: data needs the")
    assert f"'{extra}' extra" in err[0] and f"instructerc[{extra}]" in err[0]


def test_a_module_no_extra_installs_is_not_hidden(monkeypatch):
    monkeypatch.setattr(data_commands, "list_sources", _raising("no_such_module_anywhere"))
    with pytest.raises(ModuleNotFoundError):
        main(["data", "list"])


def test_a_machine_error_is_one_line_naming_the_file(monkeypatch, capsys):
    def full_disk(args):
        raise OSError(28, "No space left on device", "/tmp/out.jsonl")

    monkeypatch.setattr(data_commands, "list_sources", full_disk)
    assert main(["data", "list"]) == 1
    assert capsys.readouterr().err == "instructerc: error: /tmp/out.jsonl: No space left on device\n"
