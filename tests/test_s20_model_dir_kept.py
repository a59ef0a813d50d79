"""A finished run's model directory rewritten (``--resume --force``, a run trained again in its
folder): what the earlier one held beyond a model (evaluations of it) is kept, not deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructerc.modeling.model_dir import write_model_dir
from tiny import write_tiny_base


def _fill(names: list[str]):
    def fill(directory: Path) -> None:
        for name in names:
            (directory / name).write_text(name, encoding="utf-8")

    return fill


def test_a_model_directory_holding_only_model_files_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "model"
    assert write_model_dir(target, _fill(["a", "b"]), keep_earlier=True) is None
    assert write_model_dir(target, _fill(["a", "b"]), keep_earlier=True) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_model_directory_holding_more_is_kept_beside_the_new_one_numbered(tmp_path: Path) -> None:
    target = tmp_path / "model"
    write_model_dir(target, _fill(["a"]))
    (target / "eval-meld-test").mkdir()
    (target / "eval-meld-test" / "metrics.json").write_text("{}", encoding="utf-8")
    kept = write_model_dir(target, _fill(["a"]), keep_earlier=True)
    assert kept == tmp_path / "model.earlier-1"
    assert (kept / "eval-meld-test" / "metrics.json").read_text(encoding="utf-8") == "{}"
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    (target / "notes.txt").write_text("mine", encoding="utf-8")
    assert write_model_dir(target, _fill(["a"]), keep_earlier=True) == tmp_path / "model.earlier-2"


def test_without_keep_earlier_the_directory_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "model"
    write_model_dir(target, _fill(["a"]))
    (target / "extra").write_text("x", encoding="utf-8")
    assert write_model_dir(target, _fill(["a"])) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.fixture(scope="module")
def small_base(tmp_path_factory) -> Path:
    return write_tiny_base(tmp_path_factory.mktemp("kept"), {"train": 8, "dev": 3, "test": 3})


def test_a_forced_resume_keeps_the_evaluations_of_the_model_it_replaces(small_base: Path, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "run"
    first = run_cli("train", small_base, "--output", run, "--set", "checkpoint_every_steps=1", "--no-progress")
    assert first.code == 0, first.err
    evaluation = run / "model" / "eval-jsonl-test"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text('{"weighted_f1": 1.0}', encoding="utf-8")
    again = run_cli("train", small_base, "--output", run, "--resume", "--force", "--set", "stages[0].epochs=2", "--no-progress")
    assert again.code == 0, again.err
    kept = run / "model.earlier-1"
    assert f"the earlier model and all it held are kept as {kept}" in again.err
    assert (kept / "eval-jsonl-test" / "metrics.json").read_text(encoding="utf-8") == '{"weighted_f1": 1.0}'
    assert (kept / "instructerc.json").is_file() and (run / "model" / "instructerc.json").is_file()
    assert not (run / "model" / "eval-jsonl-test").exists()
