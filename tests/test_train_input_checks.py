"""Bad training input is one clear line, found before the model loads where it can be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import tiny
from instructerc.config import read_yaml
from instructerc.errors import InputError
from instructerc.evaluation.dev_scoring import predictor_dev_scoring
from instructerc.training.config import TrainConfig
from instructerc.training.trainer import Trainer
from test_training import recipe


def write_recipe(path: Path, config: TrainConfig) -> Path:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    return path


def unlabelled_copy(source: Path, target: Path) -> None:
    """``source`` with every emotion left out."""
    lines = []
    for line in source.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for utterance in record["utterances"]:
            utterance.pop("emotion", None)
        lines.append(json.dumps(record))
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def data_folder(root: Path, unlabelled: str | None = None) -> Path:
    """A train/dev folder like ``tiny_data``; ``unlabelled``: the split whose emotions are left out."""
    root.mkdir(parents=True)
    tiny.write_split(root / "train.jsonl", 24, seed=1)
    tiny.write_split(root / "dev.jsonl", 6, seed=2)
    if unlabelled is not None:
        labelled = root / f"{unlabelled}.jsonl"
        unlabelled_copy(labelled, labelled)
    return root


def run(config: TrainConfig) -> None:
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()


# -- data ---------------------------------------------------------------------------------------------
def test_a_single_jsonl_file_is_refused_as_training_data(run_cli, tiny_data, backbone, tmp_path, no_model_loads) -> None:
    # One file would be train, dev and test at once: the checkpoint selected on the training data.
    single = tiny_data / "train.jsonl"
    with pytest.raises(InputError, match="needs a folder with train.jsonl and dev.jsonl") as error:
        run(recipe(single, backbone, tmp_path / "run"))
    assert error.value.path == str(single) and error.value.field == "data.path"

    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    result = run_cli("train", path, "--data", single, "--no-progress")
    assert result.code == 2 and result.out == ""
    [line] = result.err.splitlines()
    assert str(single) in line and "data.path" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("label_set", ["meld", None], ids=["named-label-set", "inferred"])
def test_training_data_without_labels_is_refused_before_the_model_loads(backbone, tmp_path, label_set, no_model_loads) -> None:
    data = data_folder(tmp_path / "data", unlabelled="train")
    with pytest.raises(InputError, match="training data has no labelled utterances") as error:
        run(recipe(data, backbone, tmp_path / "run", data__label_set=label_set))
    assert error.value.path == str(data / "train.jsonl")


def test_dev_data_without_labels_is_refused_before_the_model_loads(backbone, tmp_path, no_model_loads) -> None:
    data = data_folder(tmp_path / "data", unlabelled="dev")
    with pytest.raises(InputError, match="dev data has no labelled utterances .*select a checkpoint") as error:
        run(recipe(data, backbone, tmp_path / "run"))
    assert error.value.path == str(data / "dev.jsonl")


def test_a_fraction_for_a_dataset_the_data_lacks_is_refused(run_cli, tiny_data, backbone, tmp_path, no_model_loads) -> None:
    # tiny_data's dialogues name no dataset, so they are from the folder's.
    with pytest.raises(InputError, match=rf"unknown dataset\(s\) meldd; .*datasets are: {tiny_data.name}$") as error:
        run(recipe(tiny_data, backbone, tmp_path / "run", data__dataset_fractions={"meldd": 0.5}))
    assert error.value.field == "data.dataset_fractions"

    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    result = run_cli("train", path, "--set", "data.dataset_fractions={meldd: 0.5}", "--no-progress")
    assert result.code == 2 and len(result.err.splitlines()) == 1 and "meldd" in result.err


# -- the run directory -----------------------------------------------------------------------------------
@pytest.mark.parametrize("file", ["run", "run/checkpoints", "run/model", "run/best"])
def test_a_file_where_the_run_needs_a_folder_is_refused_before_loading(tiny_data, backbone, tmp_path, file, no_model_loads) -> None:
    (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / file).write_text("mine\n", encoding="utf-8")
    for resume in (False, True):
        with pytest.raises(InputError, match="is a file, but the run needs a folder") as error:
            Trainer(recipe(tiny_data, backbone, tmp_path / "run"), progress=False, dev_scoring=predictor_dev_scoring).run(resume=resume)
        assert error.value.path == str(tmp_path / file)
    assert (tmp_path / file).read_text(encoding="utf-8") == "mine\n"


def test_an_output_inside_a_file_is_refused(run_cli, tiny_data, backbone, tmp_path, no_model_loads) -> None:
    (tmp_path / "afile").write_text("mine\n", encoding="utf-8")
    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    for output in (tmp_path / "afile", tmp_path / "afile" / "run"):
        result = run_cli("train", path, "--output", output, "--no-progress")
        assert result.code == 2 and result.out == ""
        [line] = result.err.splitlines()
        assert str(tmp_path / "afile") in line and "output_dir" in line


def test_an_empty_output_dir_is_refused(run_cli, tiny_data, backbone, tmp_path, no_model_loads) -> None:
    # Path("") is ".": the run would be written into the working directory.
    with pytest.raises(InputError) as error:
        recipe(tiny_data, backbone, "")
    assert error.value.field == "output_dir"

    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    # (--output '' is refused by the option parser itself: tests/test_cli_surface.py)
    result = run_cli("train", path, "--set", "output_dir=''")
    assert result.code == 2 and "field 'output_dir'" in result.err


# -- the model ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["/nonexistent/model", "./no-such-model", "../no-such-model", "~/no-such-model-xyz"])
def test_a_model_folder_that_does_not_exist_is_one_line(run_cli, tiny_data, backbone, tmp_path, model, no_model_loads) -> None:
    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    for option in (["--model", model], ["--set", f"backbone.model={model}"]):
        result = run_cli("train", path, *option, "--no-progress")
        assert result.code == 2 and result.out == ""
        [line] = result.err.splitlines()
        assert "no such model folder" in line and "backbone.model" in line and model in line


def test_a_hub_id_is_not_taken_for_a_missing_folder() -> None:
    from instructerc.modeling.backbone import EMBEDDED_MODEL, check_model_folder

    for name in ("HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2", EMBEDDED_MODEL):
        check_model_folder(name)


def test_empty_lora_target_modules_are_refused_by_the_config(tiny_data, backbone, tmp_path) -> None:
    for targets in ([], [""]):
        with pytest.raises(InputError) as error:
            recipe(tiny_data, backbone, tmp_path / "run", finetune__lora__target_modules=targets)
        assert error.value.field == "finetune.lora.target_modules"


def test_an_unknown_lora_target_module_lists_the_linear_layers(run_cli, tiny_data, backbone, tmp_path) -> None:
    from instructerc.modeling.backbone import load_causal_lm
    from instructerc.modeling.finetune import make_trainable

    config = recipe(tiny_data, backbone, tmp_path / "run", finetune__lora__target_modules=["q_proj", "nope_proj"])
    with pytest.raises(InputError, match="nope_proj") as error:
        make_trainable(load_causal_lm(str(backbone), config.backbone), "lora", config.finetune.lora)
    assert error.value.field == "finetune.lora.target_modules"
    assert "k_proj, lm_head, o_proj, q_proj, up_proj, v_proj" in error.value.message

    # A dotted suffix names layers too, as peft reads it.
    dotted = recipe(tiny_data, backbone, tmp_path / "run", finetune__lora__target_modules=["self_attn.q_proj"])
    make_trainable(load_causal_lm(str(backbone), dotted.backbone), "lora", dotted.finetune.lora)

    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    result = run_cli("train", path, "--set", "finetune.lora.target_modules=[nope_proj]", "--no-progress")
    assert result.code == 2 and "Traceback" not in result.err
    last = result.err.splitlines()[-1]  # after the weights' loading bar
    assert last.startswith("instructerc: error:") and "finetune.lora.target_modules" in last and "q_proj" in last


def test_more_top_layers_than_the_model_has_is_refused(tiny_data, backbone, tmp_path) -> None:
    # It silently became "every layer", an adapter of another shape than the recipe says.
    from instructerc.modeling.backbone import load_causal_lm
    from instructerc.modeling.finetune import make_trainable

    model = load_causal_lm(str(backbone), recipe(tiny_data, backbone, tmp_path / "run").backbone)
    count = model.config.num_hidden_layers
    config = recipe(tiny_data, backbone, tmp_path / "run", finetune__lora__top_layers=count + 1)
    with pytest.raises(InputError, match=f"top_layers is {count + 1} but the model has {count} layers") as error:
        make_trainable(model, "lora", config.finetune.lora)
    assert error.value.field == "finetune.lora.top_layers"
    exact = recipe(tiny_data, backbone, tmp_path / "run", finetune__lora__top_layers=count)
    make_trainable(load_causal_lm(str(backbone), exact.backbone), "lora", exact.finetune.lora)


# -- the recipe and --set ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_numpy_cannot_take_is_refused_by_the_config(run_cli, tiny_data, backbone, tmp_path, seed, no_model_loads) -> None:
    with pytest.raises(InputError) as error:
        recipe(tiny_data, backbone, tmp_path / "run", seed=seed)
    assert error.value.field == "seed"
    assert recipe(tiny_data, backbone, tmp_path / "run", seed=2**32 - 1).seed == 2**32 - 1

    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    result = run_cli("train", path, f"--seed={seed}")
    assert result.code == 2 and "field 'seed'" in result.err and len(result.err.splitlines()) == 1


@pytest.mark.parametrize("value", ["[1", ": :", "{lr: 1, lr: 2}"])
def test_a_set_value_that_is_not_yaml_is_one_line(run_cli, tmp_path, value) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("seed: 1\n", encoding="utf-8")
    result = run_cli("train", path, "--set", f"optim.lr={value}")
    assert result.code == 2 and result.out == ""
    [line] = result.err.splitlines()
    assert "--set optim.lr" in line and value in line


def test_a_recipe_that_is_not_utf8_is_one_line_naming_it(run_cli, tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"seed: \xff\xfe")
    with pytest.raises(InputError, match="not UTF-8") as error:
        TrainConfig.from_yaml(path)
    assert error.value.path == str(path)

    result = run_cli("train", path)
    assert result.code == 2
    [line] = result.err.splitlines()
    assert str(path) in line and "UTF-8" in line


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("seed: 1\nseed: 2\n", "seed", 2),
        ("optim: {lr: 0.5}\nseed: 3\noptim: {batch_size: 4}\n", "optim", 3),
        ("optim:\n  lr: 0.5\n  lr: 0.1\n", "lr", 3),
    ],
    ids=["top-level", "section", "nested"],
)
def test_a_repeated_key_is_refused_naming_key_and_line(run_cli, tmp_path, text, key, line) -> None:
    # YAML keeps the last of two equal keys: a second optim section would drop the first whole.
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=f"duplicate key '{key}'") as error:
        TrainConfig.from_yaml(path)
    assert error.value.path == str(path) and error.value.line == line

    result = run_cli("train", path)
    assert result.code == 2 and f"{path}:{line}:" in result.err and len(result.err.splitlines()) == 1


def test_merge_keys_still_override_and_merge(tmp_path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("base: &base {lr: 0.1, batch_size: 4}\noptim:\n  <<: *base\n  lr: 0.5\n", encoding="utf-8")
    assert read_yaml(path)["optim"] == {"lr": 0.5, "batch_size": 4}


def test_datasets_dev_cannot_score_are_named() -> None:
    from instructerc.data.dialogue import Dialogue, Utterance
    from instructerc.training.data_checks import datasets_without_dev

    def dialogue(dataset: str, emotion: str | None) -> Dialogue:
        return Dialogue(f"{dataset}-{emotion}", dataset, "train", (Utterance("A", "hi", emotion),))

    train = [dialogue("alpha", "joy"), dialogue("beta", "joy"), dialogue("gamma", None)]
    assert datasets_without_dev(train, [dialogue("alpha", "joy"), dialogue("beta", None)]) == ["beta"]
    assert datasets_without_dev(train, [dialogue("alpha", "joy"), dialogue("beta", "sad")]) == []


def test_a_partial_train_split_warns_nothing_above_a_broken_dev_splits_error(run_cli, backbone, tmp_path, no_model_loads) -> None:
    from test_data_probe18 import MELD_HEADER, _meld_folder

    (tmp_path / "data").mkdir()
    folder = _meld_folder(tmp_path / "data")  # a train split far smaller than MELD's: a warning on its own
    (folder / "dev_sent_emo.csv").write_text(MELD_HEADER + "1,Hi.,Ann,joy\n", encoding="utf-8")
    config = recipe(tmp_path / "data", backbone, tmp_path / "run", data__dataset="meld", data__label_set=None)
    result = run_cli("train", write_recipe(tmp_path / "recipe.yaml", config))
    assert result.code == 2
    [line] = result.err.splitlines()
    assert line.startswith(f"instructerc: error: {folder / 'dev_sent_emo.csv'}:2: row has 4 fields")


@pytest.mark.parametrize("rank", [10**12, 17])
def test_a_lora_rank_above_the_adapted_layers_rank_is_refused_naming_it(tiny_data, backbone, tmp_path, rank) -> None:
    from instructerc.modeling.backbone import load_causal_lm
    from instructerc.modeling.finetune import make_trainable

    config = recipe(tiny_data, backbone, tmp_path / "run", finetune__lora__r=rank)
    model = load_causal_lm(str(backbone), config.backbone)
    with pytest.raises(InputError, match=rf"r is {rank}, more than the rank of .*proj \(16 x 32\): at most 16") as error:
        make_trainable(model, "lora", config.finetune.lora)
    assert error.value.field == "finetune.lora.r"


def test_a_lora_rank_equal_to_the_adapted_layers_rank_trains(tiny_data, backbone, tmp_path) -> None:
    from instructerc.modeling.backbone import load_causal_lm
    from instructerc.modeling.finetune import make_trainable

    config = recipe(tiny_data, backbone, tmp_path / "run", finetune__lora__r=16)  # v_proj is 16 x 32
    make_trainable(load_causal_lm(str(backbone), config.backbone), "lora", config.finetune.lora)
