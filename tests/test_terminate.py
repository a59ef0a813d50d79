"""A command stopped by SIGTERM leaves no temporary output behind and its earlier output intact."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from instructerc.cli.main import terminate_as_exit
from instructerc.files import atomic_write


def test_sigterm_mid_write_removes_the_temporary_file_and_keeps_the_old_output(tmp_path: Path) -> None:
    output = tmp_path / "predictions.jsonl"
    output.write_text("earlier\n", encoding="utf-8")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped, terminate_as_exit():
        with atomic_write(output) as handle:
            handle.write("half of a new output\n")
            os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert output.read_text(encoding="utf-8") == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the command's only
