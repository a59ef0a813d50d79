"""Baselines on odd data: a dev split that is the test split, errors about the dev or train split
that say which split and data they mean, and a single class in train refused before encoding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from instructerc.data.registry import DataSource
from instructerc.errors import InputError
from instructerc.evaluation import baselines
from instructerc.evaluation.baselines import run_baselines
from instructerc.evaluation.report import render_report
from test_baselines import SMALL, FakeEncoder, write_folder


def source(folder: Path) -> DataSource:
    return DataSource("jsonl", path=folder, label_set="meld")


def test_a_dev_split_identical_to_test_is_reported_as_choosing_c_on_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_folder(tmp_path / "data", SMALL)
    shutil.copy(folder / "test.jsonl", folder / "dev.jsonl")  # a copied file: dev is the test split

    result = run_baselines(source(folder), "test", encoder=FakeEncoder(), cache_dir=tmp_path / "cache", progress=False)

    assert result.systems["minilm-logreg"].settings["selected_on"] == "test"
    assert "C was chosen on the test split itself, so its figure here is optimistic" in render_report(result)
    assert "optimistic" in capsys.readouterr().err


def test_a_dev_split_sharing_some_test_dialogues_says_how_many(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_folder(tmp_path / "data", SMALL)
    test_lines = (folder / "test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    dev_lines = (folder / "dev.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "dev.jsonl").write_text(dev_lines[0] + test_lines[1], encoding="utf-8")

    result = run_baselines(source(folder), "test", encoder=FakeEncoder(), cache_dir=tmp_path / "cache", progress=False)

    assert result.systems["minilm-logreg"].settings["selected_on"] == "dev (1 of its 2 dialogues also in test)"
    assert "1 of the dev split's 2 dialogues are also in the test split" in capsys.readouterr().err


def test_separate_dev_and_test_keep_the_plain_dev_selection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_baselines(
        source(write_folder(tmp_path / "data", SMALL)), "test", encoder=FakeEncoder(), cache_dir=tmp_path / "cache", progress=False
    )
    assert result.systems["minilm-logreg"].settings["selected_on"] == "dev"
    assert "warning" not in capsys.readouterr().err


def test_an_unlabelled_dev_split_is_named_as_the_dev_split_of_the_data(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "data", SMALL)
    dev = [json.loads(line) for line in (folder / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    for dialogue in dev:
        for utterance in dialogue["utterances"]:
            del utterance["emotion"]
    (folder / "dev.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dev), encoding="utf-8")

    with pytest.raises(InputError) as caught:
        run_baselines(source(folder), "test", encoder=FakeEncoder(), cache_dir=tmp_path / "cache", progress=False)
    assert caught.value.path == str(folder) and caught.value.field == "emotion"
    assert caught.value.message.startswith("the dev split (minilm-logreg chooses its C on it): ")


def test_a_single_training_class_is_refused_before_anything_is_encoded(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "data", {**SMALL, "train": [["joy", "joy"], ["joy"]]})
    encoder = FakeEncoder()

    with pytest.raises(InputError) as caught:
        run_baselines(source(folder), "test", encoder=encoder, cache_dir=tmp_path / "cache", progress=False)
    assert caught.value.path == str(folder) and "only 'joy'" in caught.value.message
    assert "the majority baseline alone" in caught.value.message
    assert encoder.calls == []
    assert run_baselines(source(folder), "test", which=["majority"]).systems["majority"].settings["label"] == "joy"


def test_one_baseline_named_as_a_string_is_that_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baselines, "load_encoder", lambda name: FakeEncoder())
    result = run_baselines(source(write_folder(tmp_path / "data", SMALL)), "test", which="majority")
    assert list(result.systems) == ["majority"]
