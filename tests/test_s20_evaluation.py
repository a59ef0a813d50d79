"""Evaluation and experiment outputs written over earlier ones, and scores set beside each other:
a missing score is an empty CSV cell, a grid report that would drop earlier rows keeps the earlier
report, a baseline written over a model's evaluation leaves none of its predictions, and scores of
other gold labels are not set beside (or averaged with) these."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from instructerc.errors import InputError
from instructerc.evaluation.aggregate import aggregate
from instructerc.evaluation.metrics import compute_metrics
from instructerc.evaluation.report import write_outputs
from instructerc.evaluation.results import EvaluationResult, SystemResult, check_comparable
from instructerc.experiments.grid import ExperimentConfig, PlotConfig, expand
from instructerc.experiments.report import write_report
from instructerc.experiments.runner import RunResult
from instructerc.labels.benchmarks import MELD
from tiny import tiny_backbone, tiny_model_dir, write_split


def grid(name: str = "g", values: tuple[str, ...] = ("1/2", "1"), seeds: tuple[int, ...] = (1,), plot: bool = True) -> ExperimentConfig:
    axes = {"fraction": {value: {} for value in values}}
    return ExperimentConfig(
        name=name, base="base.yaml", output_dir="runs", axes=axes, seeds=list(seeds), plot=PlotConfig(x="fraction") if plot else None
    )


def results_of(config: ExperimentConfig, score: float = 40.0, dev: dict | None = None) -> list[RunResult]:
    scores = {"weighted_f1": score, "macro_f1": 20.0, "accuracy": 45.0, "count": 10}
    dev = {"by_dataset": {"meld": {"weighted_f1": 50.0}}} if dev is None else dev
    return [RunResult(spec, dev, {"meld": scores}) for spec in expand(config)]


def csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


# -- the experiment CSV: a missing score ----------------------------------------------------------------
def test_a_score_that_does_not_exist_is_an_empty_csv_cell_and_n_a_in_the_table(tmp_path: Path) -> None:
    config = grid(seeds=(1, 2))
    # The dev split held no 'meld' dialogues: the run has no dev score for the dataset it is scored on.
    write_report(config, results_of(config, dev={"by_dataset": {}}), tmp_path)

    rows = csv_rows(tmp_path / "g.csv")
    assert len(rows) == 4
    assert all(row["dev_weighted_f1"] == "" for row in rows)
    assert all(float(row["test_weighted_f1"]) == 40.0 for row in rows)
    assert "nan" not in (tmp_path / "g.csv").read_text(encoding="utf-8")
    table = (tmp_path / "g.md").read_text(encoding="utf-8")
    assert "| 1/2 | meld | 2 | n/a | 40.00 ± 0.00 |" in table


# -- the experiment report written again under the same name ----------------------------------------------
def test_a_report_that_only_adds_runs_replaces_the_earlier_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = grid()
    write_report(config, results_of(config)[:1], tmp_path)
    capsys.readouterr()

    written = write_report(config, results_of(config), tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.csv", "g.md", "g.png"]
    assert sorted(p.name for p in written) == ["g.csv", "g.md", "g.png"]
    assert len(csv_rows(tmp_path / "g.csv")) == 2
    assert capsys.readouterr().err == ""


def test_a_report_that_would_drop_earlier_rows_keeps_the_earlier_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = grid(values=("1/2", "1", "1/4"))
    write_report(before, results_of(before), tmp_path)
    earlier = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()

    # The grid lost its value 1/4 (or its base recipe changed, and only some runs are done again).
    after = grid(values=("1/2", "1"))
    written = write_report(after, results_of(after), tmp_path)

    for suffix in (".csv", ".md", ".png"):
        assert (tmp_path / f"g.earlier-1{suffix}").read_bytes() == earlier[f"g{suffix}"]
        assert tmp_path / f"g.earlier-1{suffix}" in written
    assert {row["fraction"] for row in csv_rows(tmp_path / "g.csv")} == {"1/2", "1"}
    err = capsys.readouterr().err
    assert err.startswith("instructerc: warning: ") and "fraction=1-4__seed=1 on meld" in err and "g.earlier-1.csv" in err


def test_a_report_of_other_scores_keeps_the_earlier_one_and_never_overwrites_a_kept_one(tmp_path: Path) -> None:
    config = grid(plot=False)
    for score in (40.0, 41.0, 42.0):
        write_report(config, results_of(config, score), tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "g.csv",
        "g.earlier-1.csv",
        "g.earlier-1.md",
        "g.earlier-2.csv",
        "g.earlier-2.md",
        "g.md",
    ]
    kept = [
        {float(row["test_weighted_f1"]) for row in csv_rows(tmp_path / name)} for name in ("g.earlier-1.csv", "g.earlier-2.csv", "g.csv")
    ]
    assert kept == [{40.0}, {41.0}, {42.0}]


def test_an_earlier_report_that_wrote_nan_for_a_missing_score_counts_as_the_same_rows(tmp_path: Path) -> None:
    config = grid(plot=False)
    results = results_of(config, dev={"by_dataset": {}})
    write_report(config, results, tmp_path)
    older = (tmp_path / "g.csv").read_text(encoding="utf-8").replace(",,", ",nan,")
    (tmp_path / "g.csv").write_text(older, encoding="utf-8")

    write_report(config, results, tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.csv", "g.md"]


def test_a_file_of_the_report_name_that_is_no_table_is_kept(tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_bytes(b"\xff\xfe not a table")
    config = grid(plot=False)

    write_report(config, results_of(config), tmp_path)

    assert (tmp_path / "g.earlier-1.csv").read_bytes() == b"\xff\xfe not a table"
    assert len(csv_rows(tmp_path / "g.csv")) == 2


def test_a_report_that_fails_to_write_keeps_nothing_and_warns_of_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from instructerc.experiments import report as report_module

    config = grid(plot=False)
    write_report(config, results_of(config, 40.0), tmp_path)
    earlier = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()

    def full_disk(directory: Path, files: dict) -> list[Path]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_module, "write_together", full_disk)
    with pytest.raises(OSError):
        write_report(config, results_of(config, 41.0), tmp_path)

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == earlier
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grid")
    for split, count in (("train", 4), ("dev", 2), ("test", 2)):
        write_split(root / f"{split}.jsonl", count, seed=count)
    recipe = {
        "data": {"dataset": "jsonl", "path": str(root), "label_set": "meld"},
        "backbone": {"model": str(tiny_backbone(root / "backbone"))},
        "finetune": {"method": "lora", "lora": {"r": 2, "alpha": 4, "target_modules": ["q_proj"]}},
    }
    (root / "base.yaml").write_text(yaml.safe_dump(recipe))
    axes = {"fraction": {"1/2": {"data.fraction": 0.5}, "1": {"data.fraction": 1.0}}}
    (root / "grid.yaml").write_text(yaml.safe_dump({"name": "g", "base": "base.yaml", "output_dir": "runs", "axes": axes, "seeds": [1]}))
    return root / "grid.yaml"


def test_report_only_after_the_base_recipe_changed_keeps_the_earlier_table(grid_file: Path, run_cli) -> None:
    # The earlier report of this grid, whose runs (under the recipe of then) are no longer its runs.
    config = grid(plot=False)
    runs = grid_file.parent / "runs"
    write_report(config, results_of(config), runs)
    earlier = (runs / "g.md").read_bytes()

    result = run_cli("experiment", grid_file, "--report-only")

    assert result.code == 0, result.err
    assert (runs / "g.earlier-1.md").read_bytes() == earlier
    assert csv_rows(runs / "g.csv") == []
    assert "kept as g.earlier-1.csv, g.earlier-1.md" in result.err
    assert f"wrote {runs / 'g.earlier-1.md'}" in result.out


# -- an evaluation folder written over --------------------------------------------------------------------
def evaluation(gold: list[str], name: str = "llm", kind: str = "llm") -> EvaluationResult:
    system = SystemResult(
        kind, {"meld": compute_metrics(gold, ["joy"] * len(gold), MELD.labels)}, {"mode": "score", "paper_parsing": False}
    )
    return EvaluationResult("test", {"dataset": "meld", "labels": "original"}, {name: system})


def test_a_baseline_written_over_a_model_evaluation_leaves_none_of_its_predictions(tmp_path: Path) -> None:
    write_outputs(evaluation(["joy", "anger"]), tmp_path, {"predictions.jsonl": '{"id": "d1"}\n'})
    assert (tmp_path / "predictions.jsonl").is_file()

    write_outputs(evaluation(["joy", "anger"], "majority", "baseline"), tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion-majority-meld.png", "metrics.json", "report.md"]
    assert list(EvaluationResult.load(tmp_path).systems) == ["majority"]


def test_an_evaluation_written_again_replaces_its_predictions(tmp_path: Path) -> None:
    write_outputs(evaluation(["joy", "anger"]), tmp_path, {"predictions.jsonl": "first\n"})
    write_outputs(evaluation(["joy", "anger"]), tmp_path, {"predictions.jsonl": "second\n"})
    assert (tmp_path / "predictions.jsonl").read_text() == "second\n"


# -- scores of other gold labels --------------------------------------------------------------------------
def test_scores_on_as_many_utterances_of_other_gold_labels_are_not_comparable() -> None:
    with pytest.raises(InputError) as error:
        check_comparable(evaluation(["joy", "anger", "anger"]), evaluation(["joy", "joy", "anger"]), "other")
    message = str(error.value)
    assert message.startswith("other: meld: these scores are on other gold labels")
    assert "joy 2 there, 1 here" in message and "anger 1 there, 2 here" in message


def test_scores_on_the_same_gold_in_another_order_are_comparable() -> None:
    check_comparable(evaluation(["joy", "anger", "anger"]), evaluation(["anger", "joy", "anger"]), "other")


def test_seeds_scored_on_other_gold_labels_are_not_averaged() -> None:
    with pytest.raises(InputError, match="other gold labels"):
        aggregate([evaluation(["joy", "anger"]), evaluation(["joy", "joy"])], ["a", "b"])


def test_evaluate_refuses_baselines_scored_on_another_version_of_the_file(tmp_path: Path, run_cli) -> None:
    for version in ("first", "second"):
        data = tmp_path / version / "data"
        data.mkdir(parents=True)
        write_split(data / "train.jsonl", 4, seed=1)
        write_split(data / "test.jsonl", 3, seed=3)
    changed = tmp_path / "second" / "data" / "test.jsonl"
    dialogues = [json.loads(line) for line in changed.read_text(encoding="utf-8").splitlines()]
    first = dialogues[0]["utterances"][0]
    first["emotion"] = "anger"  # re-annotated: as many utterances, other gold
    changed.write_text("".join(json.dumps(d) + "\n" for d in dialogues), encoding="utf-8")
    baselines = tmp_path / "baselines"
    data_options = ("--dataset", "jsonl", "--label-set", "meld", "--split", "test")
    assert (
        run_cli(
            "baseline", *data_options, "--data", tmp_path / "first" / "data", "--out", baselines, "--only", "majority", "--no-progress"
        ).code
        == 0
    )
    model = tiny_model_dir(tmp_path / "model", MELD)

    result = run_cli(
        "evaluate",
        "--model",
        model,
        *data_options,
        "--data",
        tmp_path / "second" / "data",
        "--baselines",
        baselines,
        "--out",
        tmp_path / "ev",
    )

    assert result.code == 2
    assert result.err.startswith(f"instructerc: error: {baselines}: data: these scores are on other gold labels")
    assert "anger 0 there, 1 here" in result.err
    assert not (tmp_path / "ev").exists()
