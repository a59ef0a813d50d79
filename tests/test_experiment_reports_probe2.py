"""Aggregates and experiment reports with odd histories: written all or nothing, plots that do not
mix conditions, runs on different subsets kept apart, an empty grid's table, --only repeated."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from instructerc.errors import InputError
from instructerc.evaluation import aggregate as aggregate_module
from instructerc.evaluation.aggregate import aggregate, render_aggregate, write_aggregate
from instructerc.evaluation.metrics import compute_metrics
from instructerc.evaluation.results import EvaluationResult, SystemResult
from instructerc.experiments.grid import ExperimentConfig, PlotConfig, expand
from instructerc.experiments.report import write_report
from instructerc.experiments.runner import RunResult
from instructerc.labels.benchmarks import MELD
from tiny import tiny_backbone, write_split


def evaluation(hits: int, subset: int | None = None) -> EvaluationResult:
    gold = ["joy", "joy", "anger", "neutral"]
    predicted = gold[:hits] + ["sadness"] * (len(gold) - hits)
    system = SystemResult("llm", {"meld": compute_metrics(gold, predicted, MELD.labels)}, {"mode": "score", "paper_parsing": False})
    data = {"dataset": "meld", "labels": "original"}
    if subset is not None:
        data["max_dialogues_per_dataset"] = subset
    return EvaluationResult("test", data, {"llm": system})


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- evaluate --runs --------------------------------------------------------------------------------
def test_an_aggregate_stopped_while_writing_leaves_the_earlier_files_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "aggregate"
    write_aggregate(aggregate([evaluation(1), evaluation(2)], ["a", "b"]), out)
    before = contents(out)

    def interrupted(summary: dict) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(aggregate_module, "render_aggregate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_aggregate(aggregate([evaluation(3), evaluation(4)], ["a", "b"]), out)
    assert contents(out) == before  # not the new aggregate.json beside the old aggregate.md


def test_runs_on_subsets_of_different_sizes_are_not_aggregated() -> None:
    # The same number of utterances, but not the same dialogues: no mean of one split.
    with pytest.raises(InputError) as caught:
        aggregate([evaluation(1, subset=40), evaluation(2)], ["a", "b"])
    assert caught.value.path == "b" and caught.value.field == "data.max_dialogues_per_dataset"


def test_an_aggregate_of_subset_runs_says_it_is_a_subset() -> None:
    markdown = render_aggregate(aggregate([evaluation(1, subset=40), evaluation(2, subset=40)], ["a", "b"]))
    assert "at most 40 dialogues per dataset, not the whole split" in markdown


# -- experiment reports -----------------------------------------------------------------------------
def grid(name: str, axes: dict, seeds: list[int], plot: PlotConfig | None = PlotConfig(x="fraction")) -> ExperimentConfig:
    return ExperimentConfig(name=name, base="base.yaml", output_dir="runs", axes=axes, seeds=seeds, plot=plot)


def results_of(config: ExperimentConfig, score) -> list[RunResult]:
    metrics = lambda w: {"weighted_f1": w, "macro_f1": w / 2, "accuracy": w, "count": 10}  # noqa: E731
    return [RunResult(s, {"by_dataset": {"meld": {"weighted_f1": 50.0}}}, {"meld": metrics(score(s))}) for s in expand(config)]


def test_a_report_stopped_while_drawing_leaves_the_earlier_files_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    config = grid("scaling", {"fraction": {"1/2": {}, "1/4": {}}}, [1, 2])
    write_report(config, results_of(config, lambda s: 40.0), tmp_path)
    before = contents(tmp_path)

    def interrupted(*args, **kwargs) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(config, results_of(config, lambda s: 60.0), tmp_path)
    assert contents(tmp_path) == before  # not a new table beside the old plot


def test_the_plot_does_not_average_runs_that_differ_on_another_axis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    drawn: dict[str, list[float]] = {}
    errorbar = Axes.errorbar

    def recording(self, x, y, *args, **kwargs):
        drawn[kwargs["label"]] = list(y)
        return errorbar(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", recording)
    config = grid("history", {"fraction": {"1/2": {}, "1/4": {}}, "history": {"on": {}, "off": {}}}, [1])
    write_report(config, results_of(config, lambda s: 60.0 if s.values["history"] == "on" else 20.0), tmp_path)
    # No point at 40, which no run measured: history on and off are two lines.
    assert drawn == {"meld, history=on": [60.0, 60.0], "meld, history=off": [20.0, 20.0]}


def test_a_grid_with_no_finished_run_writes_a_table_with_its_header(tmp_path: Path) -> None:
    config = grid("empty", {"fraction": {"1/2": {}}}, [1])
    write_report(config, [], tmp_path)
    assert (tmp_path / "empty.csv").read_text().splitlines() == [
        "run,fraction,seed,scored_on,dev_weighted_f1,test_weighted_f1,test_macro_f1,test_accuracy"
    ]


# -- experiment --only ------------------------------------------------------------------------------
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
    axes = {"fraction": {"1": {"data.fraction": 1.0}, "1/2": {"data.fraction": 0.5}, "1/4": {"data.fraction": 0.25}}}
    (root / "grid.yaml").write_text(yaml.safe_dump({"name": "g", "base": "base.yaml", "output_dir": "runs", "axes": axes}))
    return root / "grid.yaml"


def test_only_given_twice_selects_the_runs_of_both(grid_file: Path, run_cli) -> None:
    result = run_cli("experiment", grid_file, "--list", "--only", "fraction=1-2", "--only", "fraction=1-4")
    assert result.code == 0, result.err
    assert sorted(line.split()[-1] for line in result.out.splitlines()) == ["fraction=1-2__seed=42", "fraction=1-4__seed=42"]


def test_only_given_twice_with_one_typo_names_it(grid_file: Path, run_cli) -> None:
    result = run_cli("experiment", grid_file, "--list", "--only", "fraction=1-2", "--only", "fracton=1-4")
    assert (result.code, result.out) == (2, "")
    assert f"{grid_file}: field 'only': no run of the grid has 'fracton=1-4'" in result.err


def test_two_x_values_at_one_position_share_a_tick_that_names_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    labelled: list[list[str]] = []
    set_labels = Axes.set_xticklabels

    def recording(self, labels, *args, **kwargs):
        labelled.append(list(labels))
        return set_labels(self, labels, *args, **kwargs)

    monkeypatch.setattr(Axes, "set_xticklabels", recording)
    config = grid("same-fraction", {"fraction": {"1/2": {}, "0.5": {}, "1/4": {}}}, [1])
    write_report(config, results_of(config, lambda s: 40.0), tmp_path)
    assert labelled == [["1/4", "1/2 = 0.5"]]  # not two labels drawn over each other at 0.5


def test_a_score_that_does_not_exist_shows_as_n_a_not_nan() -> None:
    from instructerc.experiments.report import mean_std

    assert mean_std([float("nan")]) == "n/a"
    assert mean_std([float("nan"), float("nan")]) == "n/a"
    assert mean_std([50.0, 52.0]) == "51.00 ± 1.41"
