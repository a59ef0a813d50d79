"""The CLI surface a newcomer meets: numbers out of range are refused naming their option, in
one line, before a model loads or any output is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny import write_split


@pytest.mark.parametrize("size", ["0", "-5"])
def test_evaluate_refuses_a_chunk_size_below_one_before_the_model_loads(run_cli, tmp_path: Path, size: str) -> None:
    data = tmp_path / "dialogues.jsonl"
    write_split(data, 3, seed=0)
    out = tmp_path / "eval"
    # The model folder does not exist: the option is refused before anything reads it.
    argv = ["evaluate", "--model", tmp_path / "no-model", "--dataset", "jsonl", "--data", data, "--split", "test", "--out", out]
    result = run_cli(*argv, "--chunk-size", size, "--no-progress")
    assert result.code == 2
    assert result.err == "instructerc: error: field 'chunk-size': the chunk size must be at least 1\n"
    assert not out.exists()
