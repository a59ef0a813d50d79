"""Recipes, grids and options as users write them: YAML that PyYAML reads surprisingly, ``--set``
paths into lists, and overrides a grid would drop. Nothing here loads a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructerc.cli.main import build_parser
from instructerc.errors import InputError
from instructerc.experiments.grid import load_experiment
from instructerc.training.config import TrainConfig


def _recipe(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- YAML read surprisingly ----------------------------------------------------------------------
def test_unknown_keys_of_mixed_types_are_one_line(run_cli, tmp_path) -> None:
    # YAML keys need not be strings (1, yes, a date), and such keys do not sort together.
    path = _recipe(tmp_path, "1: 2\nfoo: 3\noptim:\n  yes: 1\n  lrr: 2\n")
    with pytest.raises(InputError, match=r"unknown key\(s\) \[1, 'foo'\]") as error:
        TrainConfig.from_yaml(path)
    assert error.value.path == str(path)

    result = run_cli("train", path)
    assert result.code == 2 and len(result.err.splitlines()) == 1 and "unknown key(s)" in result.err


def test_an_alias_bomb_in_a_value_is_refused_quickly_in_a_short_message(tmp_path) -> None:
    # Each level repeats the one above nine times: 9**7 leaves from seven short lines. The error
    # showed the value's whole repr, which at nine levels is gigabytes.
    levels = ["&l0 [x, x, x, x, x, x, x, x, x]"] + [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 7)]
    path = _recipe(tmp_path, f"optim:\n  lr: [{', '.join(levels)}]\n")
    with pytest.raises(InputError, match="expected a number") as error:
        TrainConfig.from_yaml(path)
    assert error.value.field == "optim.lr" and len(str(error.value)) < 400


@pytest.mark.parametrize(("value", "fragment"), [("010", "octal"), ("0042", "octal"), ("1:30", "base-60")])
def test_a_number_yaml_reads_as_another_number_is_refused_naming_the_line(run_cli, tmp_path, value, fragment) -> None:
    # YAML 1.1 reads seed 010 as 8 and 1:30 as 90, while 08 stays a string.
    path = _recipe(tmp_path, f"optim:\n  lr: 0.1\nseed: {value}\n")
    with pytest.raises(InputError, match=fragment) as error:
        TrainConfig.from_yaml(path)
    assert (error.value.path, error.value.line) == (str(path), 3)
    assert TrainConfig.from_yaml(_recipe(tmp_path, "seed: 10\n", "plain.yaml")).seed == 10

    result = run_cli("train", tmp_path / "plain.yaml", "--set", f"seed={value}")
    assert result.code == 2 and len(result.err.splitlines()) == 1 and "--set seed" in result.err and fragment in result.err


@pytest.mark.parametrize(
    "text",
    ["output_dir: 2024-13-45\n", "seed: !!int ''\n", "seed: !!int abc\n", "seed: !!bool maybe\n", "output_dir: !!timestamp soon\n"],
    ids=["impossible-date", "empty-int", "int-tag", "bool-tag", "timestamp-tag"],
)
def test_a_value_yaml_cannot_construct_is_one_line_naming_the_line(run_cli, tmp_path, text) -> None:
    # PyYAML fails on these with a bare ValueError, KeyError, IndexError or AttributeError.
    path = _recipe(tmp_path, "optim: {lr: 0.1}\n" + text)
    with pytest.raises(InputError, match="invalid YAML: .* is not a valid") as error:
        TrainConfig.from_yaml(path)
    assert (error.value.path, error.value.line) == (str(path), 2)

    result = run_cli("train", path)
    assert result.code == 2 and len(result.err.splitlines()) == 1 and f"{path}:2:" in result.err


@pytest.mark.parametrize("nested", ["[" * 3000 + "]" * 3000, "{a: " * 3000 + "1" + "}" * 3000], ids=["lists", "mappings"])
def test_values_nested_thousands_deep_are_one_line(run_cli, tmp_path, nested) -> None:
    # PyYAML recurses once per level: this deep, Python's stack ran out (RecursionError).
    path = _recipe(tmp_path, f"optim:\n  lr: {nested}\n")
    with pytest.raises(InputError, match="nested too deeply") as error:
        TrainConfig.from_yaml(path)
    assert error.value.path == str(path)

    result = run_cli("train", _recipe(tmp_path, "seed: 1\n", "plain.yaml"), "--set", f"optim.lr={nested}")
    assert result.code == 2 and len(result.err.splitlines()) == 1 and len(result.err) < 300 and "nested too deeply" in result.err


def test_an_empty_stage_is_refused_not_trained_as_a_default_one(tmp_path) -> None:
    path = _recipe(tmp_path, "stages:\n  - tasks: {speaker: 1.0}\n  -\n  - tasks: {erc: 1.0}\n")
    with pytest.raises(InputError, match="an empty item") as error:
        TrainConfig.from_yaml(path)
    assert error.value.field == "stages[1]"
    # An empty section still means "every key at its default".
    assert TrainConfig.from_yaml(_recipe(tmp_path, "optim:\n  # lr: 0.1\n", "empty-section.yaml")).optim.lr == 2e-4


def test_an_empty_init_adapter_is_refused(tmp_path) -> None:
    # Path("") is the working directory, which was then read as the adapter folder.
    with pytest.raises(InputError, match="must name a model directory") as error:
        TrainConfig.from_yaml(_recipe(tmp_path, "finetune:\n  init_adapter: ''\n"))
    assert error.value.field == "finetune.init_adapter"


# -- --set ---------------------------------------------------------------------------------------
STAGES = "stages:\n  - &stage {tasks: {erc: 1.0}, epochs: 1}\n  - *stage\n"


@pytest.mark.parametrize("key", ["stages[1].epochs", "stages.1.epochs"])
def test_set_reaches_into_a_list_item_as_errors_name_it(tmp_path, key) -> None:
    # The second stage is an alias of the first: one object in the parsed YAML.
    config = TrainConfig.from_yaml(_recipe(tmp_path, STAGES), {key: 3, "stages[0].tasks.speaker": 0.5})
    assert [(stage.tasks, stage.epochs) for stage in config.stages] == [({"erc": 1.0, "speaker": 0.5}, 1.0), ({"erc": 1.0}, 3.0)]


@pytest.mark.parametrize(
    ("key", "field", "fragment"),
    [
        ("stages[2].epochs", "stages", "has 2 item(s)"),
        ("stages.epochs", "stages", "name one of its items"),
        ("optim[0]", "optim", "is not a list"),
    ],
)
def test_set_into_a_list_it_cannot_reach_is_one_line(run_cli, tmp_path, key, field, fragment) -> None:
    path = _recipe(tmp_path, STAGES)
    with pytest.raises(InputError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as error:
        TrainConfig.from_yaml(path, {key: 1})
    assert error.value.field == field

    result = run_cli("train", path, "--set", f"{key}=1")
    assert result.code == 2 and len(result.err.splitlines()) == 1 and fragment in result.err


def test_set_of_a_mapping_merges_into_the_section(tmp_path) -> None:
    path = _recipe(tmp_path, "optim:\n  lr: 0.1\n  warmup_ratio: 0.2\n" + STAGES)
    config = TrainConfig.from_yaml(path, {"optim": {"lr": 0.5}, "stages[0]": {"epochs": 3}})
    assert (config.optim.lr, config.optim.warmup_ratio) == (0.5, 0.2)
    assert (config.stages[0].tasks, config.stages[0].epochs) == ({"erc": 1.0}, 3) and config.stages[1].tasks == {"erc": 1.0}
    # A list is a value, not a section: it replaces.
    assert len(TrainConfig.from_yaml(path, {"stages": [{"tasks": {"erc": 1.0}, "epochs": 2}]}).stages) == 1


def test_set_into_a_section_whose_keys_are_all_commented_out(tmp_path) -> None:
    path = _recipe(tmp_path, "optim:\n  # lr: 0.1\n")
    assert TrainConfig.from_yaml(path, {"optim.lr": 0.5}).optim.lr == 0.5


@pytest.mark.parametrize(
    ("options", "given"),
    [
        (["--set", "optim.lrr=1"], "--set optim.lrr=1"),
        (["--set", "nosuch.key=1"], "--set nosuch.key=1"),
        (["--set", "optim.lr=-1"], "--set optim.lr=-1"),
        (["--set", "stages=[{tasks: {erc: 1}, epochs: 0}]"], "--set 'stages=[{tasks: {erc: 1}, epochs: 0}]'"),
        (["--data-fraction", "0"], "--data-fraction 0.0"),
        (["--seed", "-1"], "--seed -1"),
    ],
    ids=["unknown-key", "unknown-section", "bad-value", "bad-item", "flag", "int-flag"],
)
def test_an_error_of_an_overridden_field_names_the_option(run_cli, tmp_path, options, given) -> None:
    # The recipe alone is fine: an error naming only it sent the reader to a file without the key.
    path = _recipe(tmp_path, "optim:\n  lr: 0.1\n")
    result = run_cli("train", path, *options)
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert str(path) in result.err and result.err.rstrip().endswith(f"(given by {given})")


def test_an_error_of_the_recipe_itself_does_not_blame_an_option(run_cli, tmp_path) -> None:
    path = _recipe(tmp_path, "optim:\n  lrr: 0.1\n")
    result = run_cli("train", path, "--set", "optim.lr=0.5", "--seed", "3")
    assert result.code == 2 and "unknown key(s) ['lrr']" in result.err and "given by" not in result.err


# -- grids ---------------------------------------------------------------------------------------
def _grid(tmp_path: Path, text: str) -> Path:
    _recipe(tmp_path, "optim: {lr: 0.1}\n", "base.yaml")
    return _recipe(tmp_path, "name: g\nbase: base.yaml\noutput_dir: out\n" + text, "grid.yaml")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("seeds: [1, 2]\noverrides: {seed: 5}\n", "overrides.seed"),
        ("axes:\n  s:\n    a: {seed: 1}\n    b: {seed: 2}\n", "axes.s.a.seed"),
        ("overrides: {output_dir: elsewhere}\n", "overrides.output_dir"),
        ("axes:\n  lr:\n    low: {optim.lr: 0.01, output_dir: low}\n", "axes.lr.low.output_dir"),
    ],
    ids=["seed-override", "seed-axis", "output-override", "output-axis"],
)
def test_a_grid_override_the_grid_would_drop_is_refused(run_cli, tmp_path, text, field) -> None:
    # The runner sets each run's seed from seeds and its folder under the grid's output_dir, so
    # these were replaced unseen (an axis of seeds ran the same run twice).
    grid = _grid(tmp_path, text)
    with pytest.raises(InputError, match="cannot be overridden") as error:
        load_experiment(grid)
    assert error.value.field == field

    result = run_cli("experiment", grid, "--list")
    assert (result.code, result.out) == (2, "") and f"{grid}: field '{field}'" in result.err


def test_a_seed_out_of_range_names_the_grid_seeds(tmp_path) -> None:
    with pytest.raises(InputError, match="seed must be in") as error:
        load_experiment(_grid(tmp_path, "seeds: [1, -1]\n"))
    assert error.value.field == "seeds[1]"


# -- serve options -------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", ["0", "99999999999", "x"])
def test_serve_threads_torch_cannot_take_is_a_usage_error(capsys, threads) -> None:
    # torch.set_num_threads overflows past 32 bits, after the port was taken.
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", "--threads", threads])
    assert exit_.value.code == 2 and "argument --threads: must be 1 to" in capsys.readouterr().err


@pytest.mark.parametrize(("key", "field"), [("model", "backbone.model"), ("cache_dir", "backbone.cache_dir")])
def test_an_empty_backbone_model_or_cache_dir_is_refused_naming_the_field(key: str, field: str) -> None:
    from instructerc.modeling.backbone import BackboneConfig

    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        BackboneConfig(**{key: "  "})
