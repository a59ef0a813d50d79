"""``instructerc baseline`` options: a bad C grid or encoder is one line naming it, before any embedding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructerc.data.registry import DataSource, load_dialogues
from instructerc.errors import InputError
from instructerc.evaluation import baselines
from instructerc.evaluation.baselines import DiscriminativeBaseline
from instructerc.labels.benchmarks import MELD
from instructerc.retrieval.encoder import SentenceEncoder, resolve_encoder

TURNS = [["neutral", "joy"], ["anger", "neutral"], ["joy", "anger"]]


def write_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        records = [
            {"id": f"{split}{i}", "utterances": [{"speaker": "A", "text": f"{label} {split} {i}", "emotion": label} for label in turns]}
            for i, turns in enumerate(TURNS)
        ]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


class NoEncoder:
    """Fails the test if anything is embedded."""

    identity = "never@1"

    def encode(self, texts: list[str], batch_size: int = 128, progress: bool = False):
        raise AssertionError("the options were checked only after embedding")


def assert_one_line(result, *fragments: str) -> None:
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def run_baseline(run_cli, tmp_path: Path, *options: str):
    data = write_folder(tmp_path / "data")
    common = ("--dataset", "jsonl", "--data", data, "--label-set", "meld", "--split", "test", "--out", tmp_path / "out", "--no-progress")
    return run_cli("baseline", *common, "--cache-dir", tmp_path / "cache", *options)


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf"])
def test_a_c_that_is_not_finite_and_positive_is_refused_before_encoding(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setattr(baselines, "load_encoder", lambda name: NoEncoder())

    result = run_baseline(run_cli, tmp_path, "--c-grid", "1", bad)

    assert_one_line(result, "argument --c-grid:", "finite number greater than 0")
    assert not (tmp_path / "out").exists()


def test_fit_checks_the_c_grid_before_encoding(tmp_path: Path) -> None:
    from instructerc.evaluation.baselines import check_c_grid

    source = DataSource("jsonl", path=write_folder(tmp_path / "data"), label_set="meld")
    train, dev = load_dialogues(source, "train"), load_dialogues(source, "dev")

    with pytest.raises(InputError, match="c-grid"):
        DiscriminativeBaseline.fit(train, dev, MELD, NoEncoder(), c_grid=(0.0,), cache_dir=tmp_path)
    assert check_c_grid([1, 0.5]) == (1.0, 0.5)
    assert check_c_grid([1, 0.5, 1.0, 1]) == (1.0, 0.5)  # --c-grid 1 1 fitted C=1 twice


@pytest.mark.parametrize("name", ["/nonexistent-encoder", "./missing-encoder", "~/missing-encoder"])
def test_a_missing_encoder_folder_is_named_in_one_line(run_cli, tmp_path: Path, name: str) -> None:
    result = run_baseline(run_cli, tmp_path, "--only", "minilm-logreg", "--encoder", name)

    assert_one_line(result, f"{name}: no such sentence encoder folder")


def test_a_hub_id_is_left_to_the_hub_cache_and_a_path_is_not(tmp_path: Path) -> None:
    assert resolve_encoder("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match="a model folder, not a file"):
        resolve_encoder(str(tmp_path / "a-file"))


def test_a_folder_without_a_model_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    with pytest.raises(InputError, match="cannot load this sentence encoder") as error:
        SentenceEncoder.load(str(tmp_path / "empty"))

    assert error.value.path == str(tmp_path / "empty") and "\n" not in str(error.value)
