"""``--output /dev/stdout | head``: the reader stopping early ends the command quietly with the
shell's SIGPIPE status (141), as it does for the summaries printed on stdout, not with an error
line blaming the output file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from instructerc.labels.benchmarks import MELD
from tiny import tiny_model_dir, write_split

SRC = Path(__file__).resolve().parent.parent / "src"


def first_bytes_then_close(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Runs the CLI with stdout a pipe, reads a little of it and closes it, as ``| head -c 100`` does."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "instructerc", *argv]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env)
    assert process.stdout is not None and process.stderr is not None
    assert len(process.stdout.read(100)) == 100
    process.stdout.close()
    err = process.stderr.read().decode()
    return process.wait(timeout=300), err


@pytest.fixture(scope="module")
def dialogues(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "many.jsonl"
    write_split(path, 1500, seed=4)  # far more than a pipe's buffer
    return path


def test_data_export_to_a_closed_stdout_is_quiet(dialogues: Path, tmp_path: Path) -> None:
    argv = ["data", "export", "--dataset", "jsonl", "--data", str(dialogues), "--split", "test", "--out", "/dev/stdout"]
    assert first_bytes_then_close(argv, tmp_path) == (128 + signal.SIGPIPE, "")


def test_predict_to_a_closed_stdout_is_quiet(dialogues: Path, tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "model", MELD)
    argv = ["predict", "--input", str(dialogues), "--output", "/dev/stdout", "--model", str(model), "--no-progress", "--chunk-size", "8"]
    assert first_bytes_then_close(argv, tmp_path) == (128 + signal.SIGPIPE, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
