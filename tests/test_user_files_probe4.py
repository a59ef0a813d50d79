"""A user's own conversation files given to ``predict``, ``evaluate``, ``data`` and ``prompts``
(fourth probe): names that are empty, files that hold nothing, ids given twice, folders without
the split asked for, files joined with their byte-order marks, labels on two lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from instructerc.labels.benchmarks import MELD
from tiny import tiny_model_dir

ANN = {"speaker": "Ann", "text": "Hi!", "emotion": "joy"}


@pytest.fixture(scope="module")
def meld_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny-meld", MELD)


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def one_line_error(result) -> str:
    """The single error line of a run that failed on its input (exit 2, no traceback)."""
    assert result.code == 2, result
    [line] = result.err.splitlines()
    assert line.startswith("instructerc: error: "), line
    return line


def test_predict_refuses_an_empty_label_set_name_instead_of_ignoring_it(run_cli, meld_model: Path, tmp_path: Path) -> None:
    source = write_records(tmp_path / "in.jsonl", [{"id": "d", "utterances": [{**ANN, "emotion": "glee"}]}])
    out = tmp_path / "out.jsonl"

    line = one_line_error(run_cli("predict", "--input", source, "--output", out, "--model", meld_model, "--label-set", ""))

    assert "unknown label set ''" in line and "label_set" in line
    assert not out.exists()
