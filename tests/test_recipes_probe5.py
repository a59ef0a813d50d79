"""Recipes and grids as a user training on their own data writes them: ``--set`` mappings into
fields whose keys are data, grids whose axes change one section. Nothing here loads a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructerc.training.config import TrainConfig

RECIPE = """\
data: {dataset: jsonl, path: data, dataset_fractions: {a: 0.5, b: 0.25}}
optim: {lr: 0.1, warmup_ratio: 0.2}
stages:
  - tasks: {erc: 1.0, emotion_prediction: 0.5}
    epochs: 2
"""


def _write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("overrides", "tasks"),
    [
        ({"stages[0].tasks": {"erc": 1.0}}, {"erc": 1.0}),
        ({"stages.0": {"tasks": {"speaker": 1.0, "erc": 0.5}}}, {"speaker": 1.0, "erc": 0.5}),
        ({"stages[0]": {"epochs": 3}}, {"erc": 1.0, "emotion_prediction": 0.5}),
    ],
    ids=["the-field", "inside-its-section", "another-key-of-the-section"],
)
def test_a_mapping_for_a_field_whose_keys_are_data_replaces_it(tmp_path, overrides, tasks) -> None:
    # A stage's tasks are the stage's own choice of keys, not a section of recipe keys: merged,
    # --set 'stages[0].tasks={erc: 1.0}' kept emotion_prediction, and no --set could remove it.
    config = TrainConfig.from_yaml(_write(tmp_path, RECIPE), overrides)
    assert config.stages[0].tasks == tasks


def test_dataset_fractions_given_as_a_mapping_replace_the_recipes(tmp_path) -> None:
    config = TrainConfig.from_yaml(_write(tmp_path, RECIPE), {"data": {"dataset_fractions": {}}})
    assert config.data.dataset_fractions == {} and config.data.path == "data"
    config = TrainConfig.from_yaml(_write(tmp_path, RECIPE), {"data.dataset_fractions": {"b": 1.0}})
    assert config.data.dataset_fractions == {"b": 1.0}


def test_a_mapping_for_a_section_still_merges_at_every_depth(tmp_path) -> None:
    config = TrainConfig.from_yaml(_write(tmp_path, RECIPE), {"optim": {"lr": 0.5}, "finetune": {"lora": {"r": 2}}})
    assert (config.optim.lr, config.optim.warmup_ratio) == (0.5, 0.2)
    assert (config.finetune.lora.r, config.finetune.lora.alpha) == (2, 16)


# -- grids ---------------------------------------------------------------------------------------
def _grid(tmp_path: Path, text: str) -> Path:
    _write(tmp_path, RECIPE, "base.yaml")
    return _write(tmp_path, "name: g\nbase: base.yaml\noutput_dir: out\nseeds: [1]\n" + text, "grid.yaml")


def test_two_axes_changing_one_section_both_apply(tmp_path) -> None:
    from instructerc.experiments.grid import expand, load_experiment
    from instructerc.experiments.runner import resolved_config, run_directory

    # Each axis value and the grid's overrides give a mapping for `optim`: a dict update kept
    # only the last, so lr=a and lr=b were one run, trained once and reported twice.
    grid = _grid(
        tmp_path,
        "overrides: {optim: {warmup_ratio: 0.3}}\n"
        "axes:\n  lr:\n    a: {optim: {lr: 0.02}}\n    b: {optim: {lr: 0.01}}\n"
        "  wd:\n    x: {optim: {weight_decay: 0.0}}\n    y: {optim: {weight_decay: 0.1}}\n",
    )
    config, root = load_experiment(grid)
    specs = expand(config)
    optims = {spec.name: resolved_config(config, root, spec).optim for spec in specs}
    assert {name: (o.lr, o.weight_decay, o.warmup_ratio) for name, o in optims.items()} == {
        "lr=a__wd=x__seed=1": (0.02, 0.0, 0.3),
        "lr=a__wd=y__seed=1": (0.02, 0.1, 0.3),
        "lr=b__wd=x__seed=1": (0.01, 0.0, 0.3),
        "lr=b__wd=y__seed=1": (0.01, 0.1, 0.3),
    }
    assert len({run_directory(config, root, spec) for spec in specs}) == 4


def test_runs_that_resolve_to_one_recipe_are_refused_naming_both(run_cli, tmp_path) -> None:
    # Two axes setting one key: the last wins, so lr=a and lr=b are the same run.
    grid = _grid(tmp_path, "axes:\n  lr:\n    a: {optim.lr: 0.02}\n    b: {optim.lr: 0.01}\n  other:\n    x: {optim.lr: 0.03}\n")
    result = run_cli("experiment", grid, "--list")
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert str(grid) in result.err and "lr=a__other=x__seed=1 and lr=b__other=x__seed=1" in result.err and result.out == ""


def test_an_axis_value_named_on_or_off_says_to_quote_it(run_cli, tmp_path) -> None:
    # YAML 1.1 reads unquoted on/off as booleans: "expected a string, got True" named a value the
    # grid file does not hold.
    grid = _grid(tmp_path, "axes:\n  history:\n    on: {}\n    off: {template.history: false}\n")
    result = run_cli("experiment", grid, "--list")
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert "field 'axes.history'" in result.err and "quote it for a name" in result.err
    quoted = _grid(tmp_path, "axes:\n  history:\n    'on': {}\n    'off': {template.history: false}\n")
    assert run_cli("experiment", quoted, "--list").code == 0


def test_a_grid_output_dir_inside_a_file_is_refused_before_any_run(run_cli, tmp_path) -> None:
    grid = _grid(tmp_path, "axes:\n  lr:\n    a: {optim.lr: 0.02}\n")
    (tmp_path / "out").write_text("not a folder", encoding="utf-8")
    result = run_cli("experiment", grid, "--no-progress")
    # It failed with exit 1 and "out/run-...: Not a directory", once the first run had begun.
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert f"{tmp_path / 'out'}: field 'output_dir': is not a folder" in result.err and "running" not in result.out
    report = run_cli("experiment", grid, "--report-only")
    assert report.code == 2 and "field 'output_dir'" in report.err
    assert (tmp_path / "out").read_text(encoding="utf-8") == "not a folder"
