"""Experiment grids with tiny models: expansion, one directory per run, no redo, reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from instructerc.cli.main import main
from instructerc.experiments.grid import expand, load_experiment
from tiny import write_tiny_base


@pytest.fixture(scope="module")
def grid_files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid")
    write_tiny_base(root, {"train": 12, "dev": 4, "test": 4})
    (root / "grid.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "tiny-scaling",
                "base": "base.yaml",
                "output_dir": "runs",
                "seeds": [1, 2],
                "axes": {
                    "fraction": {"1": {"data.fraction": 1.0}, "1/2": {"data.fraction": 0.5}},
                    "history": {"on": {}, "off": {"template.history": False}},
                },
                "plot": {"x": "fraction"},
            }
        )
    )
    return root


def test_a_grid_expands_to_every_combination_and_seed(grid_files):
    config, _ = load_experiment(grid_files / "grid.yaml")
    runs = expand(config)
    assert len(runs) == 2 * 2 * 2
    assert len({r.name for r in runs}) == len(runs)
    off = next(r for r in runs if r.values == {"fraction": "1/2", "history": "off"} and r.seed == 2)
    assert off.overrides == {"data.fraction": 0.5, "template.history": False, "seed": 2}


def test_grid_runs_once_and_reports(grid_files, capsys):
    assert main(["experiment", str(grid_files / "grid.yaml"), "--only", "history=on", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count(": running") == 4
    runs = sorted((grid_files / "runs").glob("run-*/result.json"))
    assert len(runs) == 4
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    # A second invocation finds every run done and redoes none.
    assert main(["experiment", str(grid_files / "grid.yaml"), "--only", "history=on", "--no-progress"]) == 0
    assert capsys.readouterr().out.count(": done") == 4
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps
    table = (grid_files / "runs" / "tiny-scaling.md").read_text()
    assert "| fraction | history | scored on | seeds |" in table and " ± " in table
    csv_lines = (grid_files / "runs" / "tiny-scaling.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 4 and "test_weighted_f1" in csv_lines[0]
    png = (grid_files / "runs" / "tiny-scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_run_resumes(grid_files, tmp_path):
    from instructerc.evaluation.dev_scoring import predictor_dev_scoring
    from instructerc.experiments.runner import run_directory, run_one
    from instructerc.training.config import TrainConfig
    from instructerc.training.trainer import Trainer

    config, root = load_experiment(grid_files / "grid.yaml")
    spec = next(s for s in expand(config) if s.values == {"fraction": "1", "history": "off"} and s.seed == 1)
    directory = run_directory(config, root, spec)
    train_config = TrainConfig.from_yaml(root / config.base, {**spec.overrides, "output_dir": str(directory), "checkpoint_every_steps": 1})
    Trainer(train_config, progress=False, dev_scoring=predictor_dev_scoring, stop_after_steps=1).run()
    assert any((directory / "checkpoints").iterdir()) and not (directory / "model").exists()
    result = run_one(config, root, spec, progress=False)
    assert (directory / "model" / "instructerc.json").is_file()
    assert set(result.test) == {"data"} and 0 <= result.test["data"]["weighted_f1"] <= 100


def test_a_grid_can_score_a_fixed_subset_of_the_evaluation_split(grid_files):
    import json

    from instructerc.data.registry import DataSource, load_dialogues
    from instructerc.data.sampling import per_dataset_subset

    grid = yaml.safe_load((grid_files / "grid.yaml").read_text())
    grid.update(
        {
            "name": "tiny-subset",
            "output_dir": "runs-subset",
            "seeds": [1],
            "evaluate_max_dialogues": 2,
            "axes": {"fraction": {"1/2": {"data.fraction": 0.5}}},
        }
    )
    grid.pop("plot")
    (grid_files / "subset.yaml").write_text(yaml.safe_dump(grid))
    assert main(["experiment", str(grid_files / "subset.yaml"), "--no-progress"]) == 0

    test = load_dialogues(DataSource("jsonl", grid_files / "data", label_set="meld"), "test")
    expected = sum(len(d.utterances) for d in per_dataset_subset(test, 2, seed=0))
    assert expected < sum(len(d.utterances) for d in test)
    (result,) = (grid_files / "runs-subset").glob("run-*/result.json")
    record = json.loads(result.read_text())
    assert record["evaluate_max_dialogues"] == 2 and record["test"]["data"]["count"] == expected
    metrics = json.loads((result.parent / "eval-test" / "metrics.json").read_text())
    assert metrics["data"]["max_dialogues_per_dataset"] == 2
    assert "at most 2 test dialogues per dataset" in (grid_files / "runs-subset" / "tiny-subset.md").read_text()


def test_a_grid_refuses_an_empty_evaluation_subset(grid_files):
    from instructerc.errors import InputError

    grid = yaml.safe_load((grid_files / "grid.yaml").read_text())
    grid["evaluate_max_dialogues"] = 0
    (grid_files / "zero.yaml").write_text(yaml.safe_dump(grid))
    with pytest.raises(InputError, match="at least 1"):
        load_experiment(grid_files / "zero.yaml")


def test_every_shipped_experiment_expands_to_valid_recipes():
    from instructerc.training.config import TrainConfig

    shipped = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))
    assert shipped, "no experiment configs shipped"
    for path in shipped:
        config, root = load_experiment(path)
        runs = expand(config)
        assert runs, path
        for spec in runs:
            TrainConfig.from_yaml(root / config.base, spec.overrides)


def test_identical_runs_in_two_grids_share_one_directory(grid_files):
    import yaml as _yaml

    from instructerc.experiments.runner import run_directory

    other = grid_files / "other.yaml"
    _yaml.safe_dump(
        {
            "name": "other",
            "base": "base.yaml",
            "output_dir": "runs",
            "seeds": [1],
            "axes": {"share": {"all": {"data.fraction": 1.0}}, "with-history": {"yes": {"template.history": True}}},
        },
        other.open("w"),
    )
    first, first_root = load_experiment(grid_files / "grid.yaml")
    second, second_root = load_experiment(other)
    a = next(s for s in expand(first) if s.values == {"fraction": "1", "history": "on"} and s.seed == 1)
    b = expand(second)[0]
    assert a.name != b.name
    assert run_directory(first, first_root, a) == run_directory(second, second_root, b)
    c = next(s for s in expand(first) if s.values == {"fraction": "1", "history": "on"} and s.seed == 2)
    assert run_directory(first, first_root, c) != run_directory(first, first_root, a)


def test_an_axis_named_dataset_keeps_its_value_beside_the_scored_dataset():
    from instructerc.experiments.grid import RunSpec
    from instructerc.experiments.report import rows
    from instructerc.experiments.runner import RunResult

    metrics = {"weighted_f1": 50.0, "macro_f1": 40.0, "accuracy": 55.0}
    result = RunResult(RunSpec("dataset=uime__seed=1", {"dataset": "uime"}, 1, {}), {}, {"meld": metrics, "iemocap": metrics})
    table = rows([result], "test")
    assert [(r["dataset"], r["scored_on"]) for r in table] == [("uime", "meld"), ("uime", "iemocap")]


def test_run_keys_stay_what_earlier_grids_named_their_directories():
    """A fixed recipe's key is pinned (the value of the code that ran the committed grids): a new
    recipe key left at its default must not rename, and so orphan, every earlier run directory."""
    from instructerc.config import from_mapping
    from instructerc.experiments.grid import run_key
    from instructerc.training.config import TrainConfig

    recipe = {"backbone": {"dtype": "float32"}}
    assert run_key(from_mapping(TrainConfig, recipe)) == "790a4f98baf7"
    started = from_mapping(TrainConfig, {**recipe, "finetune": {"init_adapter": "runs/a/model"}})
    assert run_key(started) != "790a4f98baf7"  # set, it is part of the run's identity


def test_only_that_matches_no_run_is_an_error_naming_the_runs(grid_files, run_cli):
    result = run_cli("experiment", grid_files / "grid.yaml", "--list", "--only", "no-such-run")
    assert (result.code, result.out) == (2, "")
    assert "'no-such-run'" in result.err and "fraction=1__history=on__seed=1" in result.err

    result = run_cli("experiment", grid_files / "grid.yaml", "--list", "--only", "history=off")
    assert result.code == 0 and len(result.out.splitlines()) == 4 and "history=on" not in result.out


def test_a_grid_without_its_required_keys_names_them(grid_files, run_cli):
    (grid_files / "bare.yaml").write_text("base: base.yaml\n")
    result = run_cli("experiment", grid_files / "bare.yaml", "--list")
    assert result.code == 2 and "missing required key(s) ['name', 'output_dir']" in result.err


def _grid_variant(grid_files: Path, file: str, **changes) -> Path:
    """The module's grid with ``changes`` (a key set to None is removed), written to ``file``."""
    grid = yaml.safe_load((grid_files / "grid.yaml").read_text())
    grid.update(changes)
    grid = {key: value for key, value in grid.items() if value is not None}
    (grid_files / file).write_text(yaml.safe_dump(grid))
    return grid_files / file


def test_a_result_is_reused_only_for_the_split_and_subset_it_was_scored_on(grid_files, run_cli):
    import csv
    import json

    from instructerc.data.registry import DataSource, load_dialogues
    from instructerc.data.sampling import per_dataset_subset

    one = {"seeds": [1], "axes": {"fraction": {"1/2": {"data.fraction": 0.5}}}, "plot": None, "output_dir": "runs-scoring"}
    on_test = _grid_variant(grid_files, "on-test.yaml", name="on-test", **one)
    on_dev = _grid_variant(grid_files, "on-dev.yaml", name="on-dev", evaluate_split="dev", evaluate_max_dialogues=2, **one)
    assert run_cli("experiment", on_test, "--no-progress").code == 0
    (result,) = (grid_files / "runs-scoring").glob("run-*/result.json")
    trained = (result.parent / "model" / "instructerc.json").stat().st_mtime_ns

    # The same run, scored on a subset of dev: scored again (not retrained), never given the test numbers.
    assert "pending" not in run_cli("experiment", on_dev, "--list").out
    assert "to score" in run_cli("experiment", on_dev, "--list").out
    out = run_cli("experiment", on_dev, "--no-progress").out
    assert ": done" not in out and "scoring on dev" in out
    assert (result.parent / "model" / "instructerc.json").stat().st_mtime_ns == trained
    dev = load_dialogues(DataSource("jsonl", grid_files / "data", label_set="meld"), "dev")
    record = json.loads(result.read_text())
    assert record["dev_eval"]["data"]["count"] == sum(len(d.utterances) for d in per_dataset_subset(dev, 2, seed=0))
    selection = record["dev"]["by_dataset"]["data"]["weighted_f1"]  # the model's own dev metrics, kept

    # Both grids now read their own scores back; the test grid's table holds the test numbers.
    for grid, column, scores in ((on_test, "test_weighted_f1", "test"), (on_dev, "dev_eval_weighted_f1", "dev_eval")):
        assert ": done" in run_cli("experiment", grid, "--no-progress").out
        name = grid.stem
        (row,) = csv.DictReader((grid_files / "runs-scoring" / f"{name}.csv").read_text().splitlines())
        scored = record[scores] if scores in record else record["other_scorings"][0][scores]
        assert float(row[column]) == round(scored["data"]["weighted_f1"], 2)
        assert float(row["dev_weighted_f1"]) == round(selection, 2)
    assert (result.parent / "model" / "instructerc.json").stat().st_mtime_ns == trained


def test_a_recorded_result_counts_only_for_the_scoring_it_records(grid_files, run_cli):
    import json

    from instructerc.experiments.grid import RunSpec
    from instructerc.experiments.runner import Scoring, load_result

    spec = RunSpec("x", {}, 1, {})
    dev = {"by_dataset": {"data": {"weighted_f1": 40.0}}}
    metrics = {"data": {"weighted_f1": 50.0, "macro_f1": 40.0, "accuracy": 55.0}}
    path = grid_files / "legacy-result.json"
    # Written before subsets existed: the whole test split.
    path.write_text(json.dumps({"dev": dev, "test": metrics, "evaluate_split": "test"}))
    assert load_result(path, spec, Scoring("test", None)).test == metrics
    assert load_result(path, spec, Scoring("test", 2)) is None
    assert load_result(path, spec, Scoring("dev", None)) is None
    # A dev evaluation recorded under "dev" overwrote the selection scores: it is scored again.
    path.write_text(json.dumps({"dev": metrics, "evaluate_split": "dev", "evaluate_max_dialogues": None}))
    assert load_result(path, spec, Scoring("dev", None)) is None


def test_the_selection_score_and_a_dev_evaluation_have_distinct_columns():
    from instructerc.experiments.grid import ExperimentConfig, RunSpec
    from instructerc.experiments.report import markdown_table, rows
    from instructerc.experiments.runner import RunResult

    evaluated = {"weighted_f1": 50.0, "macro_f1": 40.0, "accuracy": 55.0}
    result = RunResult(RunSpec("a=b__seed=1", {"a": "b"}, 1, {}), {"by_dataset": {"meld": {"weighted_f1": 61.0}}}, {"meld": evaluated})
    (row,) = rows([result], "dev")
    assert row["dev_weighted_f1"] == 61.0 and row["dev_eval_weighted_f1"] == 50.0 and row["dev_eval_accuracy"] == 55.0
    table = markdown_table(ExperimentConfig("g", "b.yaml", "o", axes={"a": {"b": {}}}, evaluate_split="dev"), [row], "dev")
    assert "| dev W-F1 | dev eval W-F1 |" in table and "| 61.00 | 50.00 |" in table
    (row,) = rows([result], "test")  # the committed tables' names where nothing collides
    assert row["dev_weighted_f1"] == 61.0 and row["test_weighted_f1"] == 50.0


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"evaluate_split": "bogus"}, "evaluate_split", "unknown split 'bogus'"),
        ({"axes": {"lr": {"low": {"optim.lr": 0.01}}}, "plot": {"x": "lr"}}, "plot.x", "'low' is not a positive"),
        ({"axes": {"fraction": {"0": {"data.fraction": 1.0}}}, "plot": {"x": "fraction"}}, "plot.x", "'0' is not a positive"),
        ({"axes": {"seed": {"a": {}}}, "plot": None}, "axes.seed", "name of a column"),
        ({"name": "../../outside"}, "name", "plain file name"),
        ({"name": "sub/name"}, "name", "plain file name"),
        ({"axes": {"lr": {"low": {"optim.lrr": 0.1}}}, "plot": None}, "axes.lr.low", "field 'optim' of the recipe: unknown key(s) ['lrr']"),
        ({"overrides": {"optim.lr": "abc"}}, "overrides", "field 'optim.lr' of the recipe: expected a number"),
        ({"axes": {"a": {"x": {"stages": []}}}, "plot": None}, "axes.a.x", "at least one stage"),
        ({"base": "missing.yaml"}, "base", "is not a file"),
    ],
    ids=["split", "plot-names", "plot-zero", "axis-column", "name-up", "name-folder", "axis-key", "override-type", "axis-value", "base"],
)
def test_a_bad_grid_entry_is_refused_when_loaded_naming_the_grid_and_field(grid_files, run_cli, changes, field, fragment):
    grid = _grid_variant(grid_files, "bad.yaml", **changes)
    result = run_cli("experiment", grid, "--list")
    assert (result.code, result.out) == (2, "")
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert f"{grid}: field '{field}':" in result.err and fragment in result.err
    assert "base.yaml" not in result.err


def test_an_error_of_the_base_recipe_itself_names_the_base_recipe(grid_files, run_cli):
    (grid_files / "broken-base.yaml").write_text("optim: {lrr: 1}\n")
    result = run_cli("experiment", _grid_variant(grid_files, "on-broken.yaml", base="broken-base.yaml"), "--list")
    assert result.code == 2 and f"{grid_files / 'broken-base.yaml'}:1: field 'optim': unknown key(s) ['lrr']" in result.err


def test_a_grid_name_with_a_folder_writes_nothing_outside_the_results(grid_files, run_cli, tmp_path):
    results = tmp_path / "a" / "results"
    grid = _grid_variant(grid_files, "evil.yaml", name="../evil", seeds=[1])
    assert run_cli("experiment", grid, "--report-only", "--results", results).code == 2
    assert not (tmp_path / "a" / "evil.csv").exists() and not results.exists()


def test_a_report_after_only_keeps_the_runs_finished_before(grid_files, capsys):
    """Running a grid one slice at a time (--only) ends with the whole grid's table, not the last slice's."""
    assert main(["experiment", str(grid_files / "grid.yaml"), "--only", "history=on", "--no-progress"]) == 0
    assert main(["experiment", str(grid_files / "grid.yaml"), "--only", "history=off", "--no-progress"]) == 0
    csv_lines = (grid_files / "runs" / "tiny-scaling.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 8
    assert {"on", "off"} <= {cell for line in csv_lines[1:] for cell in line.split(",")}


def test_list_tells_a_stopped_run_and_a_trained_unscored_one_from_a_pending_one(grid_files, run_cli):
    from instructerc.experiments.runner import run_directory

    grid = _grid_variant(grid_files, "states.yaml", name="states", output_dir="runs-states")
    config, root = load_experiment(grid)
    stopped, trained, *rest = [run_directory(config, root, spec) for spec in expand(config)]
    (stopped / "checkpoints" / "step-0000300").mkdir(parents=True)
    (stopped / "checkpoints" / "step-0000300" / "state.json").write_text("{}")
    (trained / "model").mkdir(parents=True)
    (trained / "model" / "instructerc.json").write_text("{}")
    lines = run_cli("experiment", grid, "--list").out.splitlines()
    states = {line.split()[-1]: line.split(" run-")[0].strip() for line in lines}
    names = [spec.name for spec in expand(config)]
    assert states[names[0]] == "stopped at step 300"
    assert states[names[1]] == "to score"
    assert all(states[name] == "pending" for name in names[2:]) and rest
    assert len({line.index(" run-") for line in lines}) == 1, "the columns line up"


def test_a_template_key_added_later_renames_a_run_only_when_set():
    from instructerc.config import from_mapping
    from instructerc.experiments.grid import run_key
    from instructerc.training.config import TrainConfig

    recipe = {"backbone": {"dtype": "float32"}, "data": {"dataset": "uime", "labels": "uime"}}
    plain = run_key(from_mapping(TrainConfig, recipe))
    assert run_key(from_mapping(TrainConfig, {**recipe, "template": {"dataset_classes": False, "unnamed_share": 0.0}})) == plain
    assert run_key(from_mapping(TrainConfig, {**recipe, "template": {"dataset_classes": True}})) != plain
