"""``evaluate --runs`` on a damaged metrics.json: one line naming the file and the field, no traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from instructerc.evaluation.metrics import compute_metrics
from instructerc.evaluation.results import EvaluationResult, SystemResult
from instructerc.labels.benchmarks import MELD


def save_run(folder: Path, hits: int) -> Path:
    gold = ["joy", "joy", "anger", "neutral"]
    predicted = gold[:hits] + ["sadness"] * (len(gold) - hits)
    system = SystemResult("llm", {"meld": compute_metrics(gold, predicted, MELD.labels)}, {"mode": "score", "paper_parsing": False})
    folder.mkdir()
    return EvaluationResult("test", {"dataset": "meld", "labels": "original"}, {"llm": system}).save(folder)


def damage(file: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(file.read_text(encoding="utf-8"))
    change(data["systems"]["llm"]["by_dataset"]["meld"])
    file.write_text(json.dumps(data), encoding="utf-8")  # json writes NaN and Infinity as such


def set_key(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda meld: meld.__setitem__(key, value)


def set_class_f1(value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda meld: meld["per_class"]["joy"].__setitem__("f1", value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (set_key("weighted_f1", "high"), "systems.llm.by_dataset.meld.weighted_f1"),
        (set_key("weighted_f1", float("nan")), "systems.llm.by_dataset.meld.weighted_f1"),
        (set_key("accuracy", float("inf")), "systems.llm.by_dataset.meld.accuracy"),
        (set_key("macro_f1", None), "systems.llm.by_dataset.meld.macro_f1"),
        (set_class_f1("0.5"), "systems.llm.by_dataset.meld.per_class.joy.f1"),
        (set_class_f1(float("nan")), "systems.llm.by_dataset.meld.per_class.joy.f1"),
        (lambda meld: meld["per_class"].pop("joy"), "systems.llm.by_dataset.meld.per_class.joy"),
    ],
    ids=["string", "nan", "infinity", "null", "class-f1-string", "class-f1-nan", "class-missing"],
)
def test_a_metric_that_is_not_a_finite_number_is_named_with_its_file(
    run_cli, tmp_path: Path, change: Callable[[dict[str, Any]], None], field: str
) -> None:
    save_run(tmp_path / "a", 2)
    damaged = save_run(tmp_path / "b", 3)
    damage(damaged, change)

    result = run_cli("evaluate", "--runs", tmp_path / "a", tmp_path / "b")

    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    assert f"{damaged.resolve()}: field '{field}'" in lines[0], lines[0]


def test_a_system_without_scores_on_a_dataset_is_named(run_cli, tmp_path: Path) -> None:
    save_run(tmp_path / "a", 2)
    damaged = save_run(tmp_path / "b", 3)
    data = json.loads(damaged.read_text(encoding="utf-8"))
    data["systems"]["other"] = {"kind": "baseline", "by_dataset": dict(data["systems"]["llm"]["by_dataset"])}
    data["systems"]["llm"]["by_dataset"] = {}
    damaged.write_text(json.dumps(data), encoding="utf-8")

    result = run_cli("evaluate", "--runs", tmp_path / "a", tmp_path / "b")

    assert result.code == 2 and "Traceback" not in result.err, result
    assert f"{damaged.resolve()}: field 'systems.llm.by_dataset.meld'" in result.err
