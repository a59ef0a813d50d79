"""Experiment grids with tiny models: expansion, one directory per run, no redo, reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from instructerc.cli.main import main
from instructerc.experiments.grid import expand, load_experiment
from tiny import tiny_backbone, write_split


@pytest.fixture(scope="module")
def grid_files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid")
    data = root / "data"
    data.mkdir()
    write_split(data / "train.jsonl", 12, seed=1)
    write_split(data / "dev.jsonl", 4, seed=2)
    write_split(data / "test.jsonl", 4, seed=3)
    backbone = tiny_backbone(root / "backbone")
    (root / "base.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {"dataset": "jsonl", "path": str(data), "label_set": "meld"},
                "backbone": {"model": str(backbone)},
                "template": {"name": "dialogue-prefix", "demonstration": False},
                "finetune": {"method": "lora", "lora": {"r": 2, "alpha": 4, "target_modules": ["q_proj"]}},
                "optim": {"lr": 0.01, "batch_size": 8, "micro_batch_size": 8},
                "stages": [{"tasks": {"erc": 1.0}, "epochs": 1}],
            }
        )
    )
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
    from instructerc.experiments.runner import run_key
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
