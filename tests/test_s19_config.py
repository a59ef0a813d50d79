"""Recipes, grids and ``--set`` overrides with values past every range, misspelt keys, keys that
name no place, and settings another one silently overrules. Nothing here loads a model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from instructerc.errors import InputError
from instructerc.experiments.grid import load_experiment
from instructerc.training.config import TrainConfig

RECIPE = """\
data:
  dataset: meld
optim:
  lr: 1.0e-3
  batch_size: 8
stages:
  - tasks: {erc: 1.0}
    epochs: 1
eval_every_steps: 100
"""


def _write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _refused(run_cli, tmp_path: Path, *argv: str | Path) -> str:
    """The one line a refused ``train`` says; nothing may be written."""
    result = run_cli("train", *argv, "--output", tmp_path / "run")
    assert result.code == 2, result.err
    assert len(result.err.splitlines()) == 1 and "Traceback" not in result.err
    assert not (tmp_path / "run").exists()
    return result.err


# -- numbers no Python float or 64-bit integer holds --------------------------------------------
@pytest.mark.parametrize(
    ("text", "field"),
    [
        (RECIPE.replace("lr: 1.0e-3", "lr: 1" + "0" * 400), "optim.lr"),
        (RECIPE.replace("epochs: 1", "epochs: " + "9" * 320), "stages[0].epochs"),
        (RECIPE + "max_length: " + "9" * 30 + "\n", "max_length"),
        (RECIPE.replace("batch_size: 8", f"batch_size: {2**63}"), "optim.batch_size"),
    ],
    ids=["float-field", "stage-epochs", "int-field", "just-past-int64"],
)
def test_a_number_too_large_for_its_field_is_refused_naming_it(run_cli, tmp_path, text, field) -> None:
    # A float field raised a bare OverflowError ("int too large to convert to float"); an integer
    # field took any size, to fail far from the recipe.
    path = _write(tmp_path, text)
    with pytest.raises(InputError, match="too large a number") as error:
        TrainConfig.from_yaml(path)
    assert (error.value.path, error.value.field) == (str(path), field)
    assert "too large a number" in _refused(run_cli, tmp_path, path)


def test_a_huge_number_given_by_set_or_a_grid_is_refused(run_cli, tmp_path) -> None:
    recipe = _write(tmp_path, RECIPE)
    err = _refused(run_cli, tmp_path, recipe, "--set", "optim.lr=1" + "0" * 400)
    assert "field 'optim.lr'" in err and "too large a number" in err and "given by --set optim.lr=" in err

    grid = _grid(tmp_path, recipe, {"overrides": {"optim.lr": 10**400}})
    with pytest.raises(InputError, match="too large a number") as error:
        load_experiment(grid)
    assert (error.value.path, error.value.field) == (str(grid), "overrides")


def test_the_largest_64_bit_integer_is_still_a_value(tmp_path) -> None:
    config = TrainConfig.from_yaml(_write(tmp_path, RECIPE + f"checkpoint_every_steps: {2**63 - 1}\n"))
    assert config.checkpoint_every_steps == 2**63 - 1


# -- unknown keys say which known key was meant ---------------------------------------------------
@pytest.mark.parametrize(
    ("text", "meant"),
    [
        (RECIPE + "Seed: 3\n", "'seed' for 'Seed'"),
        (RECIPE + "' seed': 3\n", "'seed' for ' seed'"),
        (RECIPE + "max-length: 512\n", "'max_length' for 'max-length'"),
        (RECIPE.replace("  lr: 1.0e-3", "  lrr: 1.0e-3"), "'lr' for 'lrr'"),
        (RECIPE.replace("    epochs: 1", "    epoch: 1"), "'epochs' for 'epoch'"),
        (RECIPE + "finetune: {lora: {top_layer: 4}}\n", "'top_layers' for 'top_layer'"),
    ],
    ids=["case", "space", "dash", "optim", "stage", "lora"],
)
def test_an_unknown_key_suggests_the_known_one_meant(run_cli, tmp_path, text, meant) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputError, match="unknown key") as error:
        TrainConfig.from_yaml(path)
    assert f"(did you mean {meant}?)" in str(error.value)
    assert f"(did you mean {meant}?)" in _refused(run_cli, tmp_path, path)


def test_an_unknown_key_far_from_every_known_one_suggests_nothing(tmp_path) -> None:
    with pytest.raises(InputError, match="unknown key") as error:
        TrainConfig.from_yaml(_write(tmp_path, RECIPE + "colour: red\n"))
    assert "did you mean" not in str(error.value)


def test_a_suggestion_does_not_make_a_set_look_like_the_cause(run_cli, tmp_path) -> None:
    # The recipe's own typo 'lrr' suggests 'lr'; the --set optim.lr beside it is not at fault.
    path = _write(tmp_path, RECIPE.replace("  lr: 1.0e-3", "  lrr: 1.0e-3"))
    err = _refused(run_cli, tmp_path, path, "--set", "optim.lr=0.1")
    assert "unknown key(s) ['lrr']" in err and "given by" not in err
    # The typo given by --set is still named as the option's.
    err = _refused(run_cli, tmp_path, _write(tmp_path, RECIPE, "good.yaml"), "--set", "optim.lrr=0.1")
    assert "(did you mean 'lr' for 'lrr'?)" in err and "(given by --set optim.lrr=0.1)" in err


# -- --set keys that name no place -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("optim..lr", "an empty key between dots"),
        ("optim.", "an empty key between dots"),
        (".seed", "an empty key between dots"),
        ("stages[-1].epochs", "'stages[-1]' is no list item"),
        ("stages[0.epochs", "'stages[0' is no list item"),
        ("stages[first].epochs", "'stages[first]' is no list item"),
        ("stages]0[.epochs", "'stages]0[' is no list item"),
    ],
)
def test_a_set_key_with_an_empty_part_or_a_bad_index_says_so(run_cli, tmp_path, key, said) -> None:
    # They were refused as an unknown key '' or 'stages[-1]', which hid what was mistyped.
    recipe = _write(tmp_path, RECIPE)
    with pytest.raises(InputError, match="is no list item|an empty key") as error:
        TrainConfig.from_yaml(recipe, {key: 2})
    assert said in str(error.value) and f"--set {key}" in str(error.value)
    err = _refused(run_cli, tmp_path, recipe, "--set", f"{key}=2")
    assert said in err


def test_good_set_keys_into_lists_still_reach_their_item(tmp_path) -> None:
    recipe = _write(tmp_path, RECIPE)
    config = TrainConfig.from_yaml(recipe, {"stages[0].epochs": 2, "optim.betas[1]": 0.9, "stages.0.tasks": {"erc": 0.5}})
    assert config.stages[0].epochs == 2 and config.optim.betas == [0.9, 0.9] and config.stages[0].tasks == {"erc": 0.5}


# -- a setting another one silently overrules -------------------------------------------------------
def test_evals_per_epoch_beside_eval_every_steps_is_refused(run_cli, tmp_path) -> None:
    # eval_every_steps wins when set: evals_per_epoch 4 was dropped without a word.
    recipe = _write(tmp_path, RECIPE)
    with pytest.raises(InputError, match="not used while eval_every_steps is set") as error:
        TrainConfig.from_yaml(recipe, {"evals_per_epoch": 4})
    assert (error.value.path, error.value.field) == (str(recipe), "evals_per_epoch")
    err = _refused(run_cli, tmp_path, recipe, "--set", "evals_per_epoch=4")
    assert "(given by --set evals_per_epoch=4)" in err

    assert TrainConfig.from_yaml(recipe, {"evals_per_epoch": 4, "eval_every_steps": None}).evals_per_epoch == 4
    # A run's saved config.yaml writes every key, the default evals_per_epoch among them.
    assert TrainConfig.from_yaml(recipe, {"evals_per_epoch": 1}).eval_every_steps == 100


def test_dialogue_chunk_without_shared_prefix_is_refused(tmp_path) -> None:
    # Without shared_prefix every example is shuffled alone and the chunk size was ignored.
    recipe = _write(tmp_path, RECIPE + "packing: {shared_prefix: false, dialogue_chunk: 8}\n")
    with pytest.raises(InputError, match="dialogue_chunk applies only with shared_prefix") as error:
        TrainConfig.from_yaml(recipe)
    assert error.value.field == "packing.dialogue_chunk"
    assert TrainConfig.from_yaml(recipe, {"packing.dialogue_chunk": None}).packing.shared_prefix is False


# -- the data a recipe names is checked with the recipe ----------------------------------------------
@pytest.mark.parametrize(
    ("change", "field", "said"),
    [
        ({"data.dataset": "MELD"}, "data.dataset", "unknown dataset 'MELD' (did you mean 'meld'?)"),
        ({"data.labels": "UIME"}, "data.labels", "unknown label space 'UIME' (did you mean 'uime'?)"),
        ({"data.label_set": "iemocap"}, "data.label_set", "is for JSONL data"),
    ],
)
def test_a_bad_data_source_names_the_recipe_and_its_key(run_cli, tmp_path, change, field, said) -> None:
    # Found only when the data was read, the error named neither the recipe nor the recipe key
    # ("field 'dataset': unknown dataset 'MELD'").
    recipe = _write(tmp_path, RECIPE)
    with pytest.raises(InputError) as error:
        TrainConfig.from_yaml(recipe, change)
    assert (error.value.path, error.value.field) == (str(recipe), field) and said in error.value.message
    [(key, value)] = change.items()
    err = _refused(run_cli, tmp_path, recipe, "--set", f"{key}={value}")
    assert err.startswith(f"instructerc: error: {recipe}: field '{field}'") and f"(given by --set {key}={value})" in err


# -- grids ----------------------------------------------------------------------------------------
def _grid(tmp_path: Path, base: Path, changes: dict) -> Path:
    grid = {"name": "g", "base": str(base), "output_dir": "runs", **changes}
    return _write(tmp_path, yaml.safe_dump(grid), "grid.yaml")


@pytest.mark.parametrize("key", ["output_dir", "base", "name"])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_grid_path_is_refused_naming_it(run_cli, tmp_path, key, value) -> None:
    # An empty output_dir put every run among the grid's own files; an empty base was "not a file"
    # without saying why; a blank name wrote the report as "  .csv".
    grid = _grid(tmp_path, _write(tmp_path, RECIPE), {key: value})
    with pytest.raises(InputError) as error:
        load_experiment(grid)
    assert (error.value.path, error.value.field) == (str(grid), key)
    result = run_cli("experiment", grid, "--results", tmp_path / "results")
    assert result.code == 2 and len(result.err.splitlines()) == 1 and f"field '{key}'" in result.err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_a_misspelt_grid_key_suggests_the_one_meant(tmp_path) -> None:
    grid = _grid(tmp_path, _write(tmp_path, RECIPE), {"axis": {}})
    with pytest.raises(InputError, match=r"\(did you mean 'axes' for 'axis'\?\)"):
        load_experiment(grid)
