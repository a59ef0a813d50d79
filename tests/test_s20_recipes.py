"""Recipes as users write them: LoRA settings beside full fine-tuning, errors that name the line of
the recipe holding the bad field (also through YAML merge keys), ``--set`` into a plain value the
recipe leaves out, and the recipe keys added after grids had run. Nothing here loads a model."""

from __future__ import annotations

import pytest
import yaml

from instructerc.errors import InputError
from instructerc.prompts.templates import TemplateConfig
from instructerc.training.config import TrainConfig, later_keys
from test_s19_config import _refused, _write

RECIPE = """\
data:
  dataset: meld
finetune:
  method: lora
  lora: {r: 8, alpha: 16}
optim:
  lr: 1.0e-3
  batch_size: 8
stages:
  - tasks: {erc: 1.0}
    epochs: 1
"""


# -- LoRA settings beside full fine-tuning ----------------------------------------------------------
@pytest.mark.parametrize(
    ("lora", "field"),
    [
        ("{r: 8}", "finetune.lora.r"),
        ("{alpha: 32}", "finetune.lora.alpha"),
        ("{dropout: 0.2}", "finetune.lora.dropout"),
        ("{target_modules: [q_proj]}", "finetune.lora.target_modules"),
        ("{top_layers: 2}", "finetune.lora.top_layers"),
    ],
)
def test_lora_settings_with_full_fine_tuning_are_refused_naming_the_field(tmp_path, lora, field) -> None:
    # They were dropped without a word: the run trained every weight, and its saved config and
    # model card still listed the adapter's settings.
    path = _write(tmp_path, f"finetune:\n  method: full\n  lora: {lora}\n")
    with pytest.raises(InputError, match="finetune.method is full, which trains every weight") as error:
        TrainConfig.from_yaml(path)
    assert (error.value.path, error.value.line, error.value.field) == (str(path), 3, field)
    assert "set it to null" in error.value.message


def test_full_fine_tuning_over_a_lora_recipe_says_how_to_drop_the_adapter(run_cli, tmp_path) -> None:
    path = _write(tmp_path, RECIPE)
    err = _refused(run_cli, tmp_path, path, "--set", "finetune.method=full")
    assert err.startswith(f"instructerc: error: {path}:5: field 'finetune.lora.r': r is 8, but finetune.method is full")
    config = TrainConfig.from_yaml(path, {"finetune.method": "full", "finetune.lora": None})
    assert config.finetune.method == "full"


def test_full_fine_tuning_with_default_lora_settings_still_reads(tmp_path) -> None:
    # A run's saved config.yaml writes every key, the LoRA defaults among them.
    saved = TrainConfig.from_yaml(_write(tmp_path, "finetune: {method: full}\n")).to_dict()
    path = _write(tmp_path, yaml.safe_dump(saved), "saved.yaml")
    assert TrainConfig.from_yaml(path).finetune.method == "full"
    written = "finetune:\n  method: full\n  lora: {r: 16, alpha: 16, dropout: 0.05, target_modules: [q_proj, k_proj, v_proj]}\n"
    assert TrainConfig.from_yaml(_write(tmp_path, written, "written.yaml")).finetune.lora.r == 16


def test_a_grid_axis_of_full_fine_tuning_over_a_lora_base_is_refused_when_loaded(run_cli, tmp_path) -> None:
    _write(tmp_path, RECIPE, "base.yaml")
    grid = {"name": "g", "base": "base.yaml", "output_dir": "out", "axes": {"method": {"lora": {}, "full": {"finetune.method": "full"}}}}
    path = _write(tmp_path, yaml.safe_dump(grid), "grid.yaml")
    result = run_cli("experiment", path, "--list")
    assert result.code == 2 and f"{path}: field 'axes.method.full': field 'finetune.lora.r' of the recipe" in result.err
    grid["axes"]["method"]["full"]["finetune.lora"] = None
    _write(tmp_path, yaml.safe_dump(grid), "grid.yaml")
    assert run_cli("experiment", path, "--list").code == 0


# -- errors name the line of the recipe -------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        (RECIPE.replace("lr: 1.0e-3", "lr: .nan"), 7, "optim.lr"),
        (RECIPE.replace("batch_size: 8", "batch_size: 0"), 8, "optim.batch_size"),
        (RECIPE + "  - tasks: {erc: 1.0}\n    epochs: 0\n", 13, "stages[1].epochs"),
        (RECIPE.replace("{erc: 1.0}", "{erc: 1.0, speaker: 2}"), 10, "stages[0].tasks.speaker"),
        (RECIPE.replace("alpha: 16", "alpha: 0.5"), 5, "finetune.lora.alpha"),
        (RECIPE + "max_length: 8\n", 12, "max_length"),
        (RECIPE.replace("{erc: 1.0}", "{speaker: 1.0}"), 9, "stages"),
    ],
    ids=["nan", "zero-batch", "second-stage", "task-share", "float-alpha", "top-level", "cross-field"],
)
def test_a_bad_field_names_its_line(tmp_path, text, line, field) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as error:
        TrainConfig.from_yaml(path)
    assert (error.value.path, error.value.line, error.value.field) == (str(path), line, field)
    assert str(error.value).startswith(f"{path}:{line}: field '{field}': ")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (RECIPE.replace("  batch_size: 8\n", "  batch_size: 8\n  lrr: 0.1\n"), 9),
        ("# a recipe\ndata:\n  dataset: meld\nstage:\n  - tasks: {erc: 1.0}\n", 4),
        (RECIPE.replace("    epochs: 1\n", "    epoch: 2\n"), 11),
    ],
    ids=["in-a-section", "top-level", "in-a-list-item"],
)
def test_an_unknown_key_names_its_own_line(tmp_path, text, line) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputError, match="unknown key") as error:
        TrainConfig.from_yaml(path)
    assert error.value.line == line


def test_a_field_merged_in_with_a_merge_key_names_the_line_it_is_written_on(tmp_path) -> None:
    text = "finetune:\n  method: full\n  lora:\n    <<: {r: 8}\n"
    with pytest.raises(InputError) as error:
        TrainConfig.from_yaml(_write(tmp_path, text))
    assert (error.value.line, error.value.field) == (4, "finetune.lora.r")
    text = "stages:\n  - &first {tasks: {erc: 1.0}, epochs: 1}\n  - <<: *first\n    epochs: -1\n"
    with pytest.raises(InputError) as error:
        TrainConfig.from_yaml(_write(tmp_path, text))
    assert (error.value.line, error.value.field) == (4, "stages[1].epochs")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"optim.lr": -1}, "optim.lr"),
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"stages.0.epochs": 0}, "stages[0].epochs"),
        ({"optim.lrr": 1}, "optim"),
    ],
)
def test_a_field_an_override_gave_names_no_line_of_the_file(tmp_path, overrides, field) -> None:
    # The recipe's line of a value an override replaced would send the reader to the wrong place.
    path = _write(tmp_path, RECIPE)
    with pytest.raises(InputError) as error:
        TrainConfig.from_yaml(path, overrides)
    assert (error.value.path, error.value.line, error.value.field) == (str(path), None, field)


def test_the_cli_says_the_line_on_one_line(run_cli, tmp_path) -> None:
    path = _write(tmp_path, RECIPE.replace("epochs: 1", "epochs: .inf"))
    err = _refused(run_cli, tmp_path, path)
    assert err.startswith(f"instructerc: error: {path}:11: field 'stages[0].epochs': epochs must be a positive number")
    err = _refused(run_cli, tmp_path, _write(tmp_path, RECIPE), "--set", "stages[0].epochs=0")
    assert ".yaml: field 'stages[0].epochs'" in err and "(given by --set 'stages[0].epochs=0')" in err


# -- --set into a value ----------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["seed.x", "max_length.value", "data.max_dev_dialogues.n"])
def test_set_into_a_value_the_recipe_leaves_out_is_refused_as_no_section(run_cli, tmp_path, key) -> None:
    # Taken as an empty section, "seed.x=1" was refused as "expected an integer, got {'x': 1}":
    # an error about a recipe that has no seed, naming no option.
    path = _write(tmp_path, RECIPE)
    field = key.rsplit(".", 1)[0]
    with pytest.raises(InputError, match=f"'{field}' is not a section of keys, so --set {key} cannot go into it") as error:
        TrainConfig.from_yaml(path, {key: 1})
    assert error.value.field == field
    assert f"--set {key} cannot go into it" in _refused(run_cli, tmp_path, path, "--set", f"{key}=1")


def test_set_into_a_section_or_list_the_recipe_leaves_out_still_works(tmp_path) -> None:
    path = _write(tmp_path, "data: {dataset: meld}\n")
    config = TrainConfig.from_yaml(path, {"packing.max_tokens": 64, "stages[0].epochs": 2, "data.dataset_fractions.meld": 0.5})
    assert (config.packing.max_tokens, config.stages[0].epochs, config.data.dataset_fractions) == (64, 2.0, {"meld": 0.5})


# -- the recipe keys added after grids had run -----------------------------------------------------------
def test_later_keys_take_the_template_keys_from_the_template() -> None:
    assert later_keys() == (
        ("finetune", "init_adapter", None),
        ("optim", "class_balance", 0.0),
        ("template", "dataset_classes", False),
        ("template", "unnamed_share", 0.0),
    )
    written = TemplateConfig().to_dict()
    assert {key for section, key, _ in later_keys() if section == "template"} == set(TemplateConfig.__dataclass_fields__) - set(written)
