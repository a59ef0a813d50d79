"""``instructerc predict`` on conversations as users bring them (probe 19)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructerc.labels.registry import named_label_set
from tiny import tiny_model_dir


@pytest.fixture(scope="module")
def unified_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny-uime", named_label_set("uime"))


@pytest.mark.parametrize("spelling", ["meld\u200b", "\ufeffMELD", "\u200dMeld\u2060", "ＭＥＬＤ"])
def test_a_benchmark_named_with_invisible_or_full_width_characters_is_that_benchmark(
    run_cli, unified_model: Path, tmp_path: Path, spelling: str
) -> None:
    """A dataset name pasted with a zero-width space (or typed in full-width letters) reads as
    ``meld`` on screen; it was kept as an unknown dataset, so no turn got its MELD label."""
    record = {"id": "d1", "dataset": spelling, "utterances": [{"speaker": "Ann", "text": "I got the job!", "emotion": "joy"}]}
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run_cli("predict", "--input", source, "--output", out, "--model", unified_model, "--no-progress")
    assert result.code == 0, result
    [written] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert written["dataset"] == "meld"
    [turn] = written["utterances"]
    assert turn["predicted_original_emotion"] in named_label_set("meld").labels
    assert "warning" not in result.err


@pytest.mark.parametrize("name", ["\u200b", "\ufeff \u2060"])
def test_a_dataset_name_of_invisible_characters_only_is_refused(run_cli, unified_model: Path, tmp_path: Path, name: str) -> None:
    """``"dataset": "\\u200b"`` was accepted as a dataset that shows as nothing in every report."""
    record = {"id": "d1", "dataset": name, "utterances": [{"speaker": "Ann", "text": "Hi!"}]}
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(record) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run_cli("predict", "--input", source, "--output", out, "--model", unified_model, "--no-progress")
    assert result.code == 2, result
    assert result.err.strip() == f"instructerc: error: {source}:1: field 'dataset': 'dataset' must be a non-empty string"
    assert not out.exists()
