"""Training options as a user combines them: each wrong one is one line naming the setting, before anything loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from test_train_input_checks import write_recipe
from test_training import recipe


def unreachable_hub(*args, **kwargs):
    raise ConnectionError("[Errno -2] Name or service not known")


@pytest.mark.parametrize("option", ["--model", "--set"])
def test_an_uncached_hub_id_without_a_network_is_one_line(
    run_cli,
    tiny_data,
    backbone,
    tmp_path,
    monkeypatch,
    option,
    no_model_loads,
) -> None:
    # transformers retried the hub for about 50 s and ended with four lines about internet
    # connections (exit 1) that named neither the model nor the setting.
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "model_info", unreachable_hub)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    model = "someorg/no-such-model-xyz"
    given = ["--model", model] if option == "--model" else ["--set", f"backbone.model={model}"]
    result = run_cli("train", path, *given, "--no-progress")
    assert result.code == 2 and result.out == ""
    [line] = result.err.splitlines()
    assert "backbone.model" in line and model in line and "cannot be reached" in line and f"given by {option}" in line
    assert not (tmp_path / "run").exists()


def test_a_model_name_that_is_no_hub_id_is_one_line(run_cli, tiny_data, backbone, tmp_path, no_model_loads) -> None:
    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    result = run_cli("train", path, "--model", "my model", "--no-progress")
    assert result.code == 2
    [line] = result.err.splitlines()
    assert "backbone.model" in line and "'my model' is neither a model folder nor a Hugging Face hub id" in line


def test_an_uncached_hub_id_in_offline_mode_is_one_line(run_cli, tiny_data, backbone, tmp_path, monkeypatch, no_model_loads) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    result = run_cli("train", path, "--model", "someorg/no-such-model-xyz", "--no-progress")
    assert result.code == 2
    [line] = result.err.splitlines()
    assert "backbone.model" in line and "not in the Hugging Face cache" in line and "HF_HUB_OFFLINE" in line


@pytest.mark.parametrize(
    ("option", "field"),
    [
        ("data.dataset_fractions.jsonl=.nan", "data.dataset_fractions.jsonl"),
        ("data.dataset_fractions={a: 0.5, b: 3}", "data.dataset_fractions.b"),
        ("stages[0].tasks.erc=2", "stages[0].tasks.erc"),
    ],
)
def test_a_share_out_of_range_names_its_key_and_the_option(run_cli, tiny_data, backbone, tmp_path, option, field, no_model_loads) -> None:
    # The field used to stop at the section (data.dataset_fractions, stages[0].tasks), so the
    # error could not say which --set gave the value.
    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    result = run_cli("train", path, "--set", option, "--no-progress")
    assert result.code == 2
    [line] = result.err.splitlines()
    assert f"field '{field}'" in line and "given by --set" in line


def test_a_micro_batch_size_below_one_names_its_own_field(run_cli, tiny_data, backbone, tmp_path, no_model_loads) -> None:
    # It was reported as optim.batch_size, a key the user had not touched.
    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    result = run_cli("train", path, "--set", "optim.micro_batch_size=0", "--no-progress")
    assert result.code == 2
    [line] = result.err.splitlines()
    assert "field 'optim.micro_batch_size'" in line and "given by --set optim.micro_batch_size=0" in line


@pytest.mark.parametrize(
    ("option", "field", "says"),
    [
        ("finetune.lora.r=0", "finetune.lora.r", "r must be >= 1, got 0"),
        ("finetune.lora.alpha=-2", "finetune.lora.alpha", "alpha must be positive, got -2"),
        ("max_length=8", "max_length", "at least 16 tokens, got 8"),
    ],
)
def test_a_value_out_of_range_names_its_field_the_limit_and_the_option(
    run_cli,
    tiny_data,
    backbone,
    tmp_path,
    option,
    field,
    says,
    no_model_loads,
) -> None:
    # r and alpha were reported together as the section finetune.lora (so no option was named),
    # and max_length as "too small" without the limit.
    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    result = run_cli("train", path, "--set", option, "--no-progress")
    assert result.code == 2
    [line] = result.err.splitlines()
    assert f"field '{field}'" in line and says in line and f"given by --set {option}" in line


def test_a_grid_whose_backbone_the_hub_cannot_give_stops_before_its_first_run(run_cli, tmp_path, monkeypatch) -> None:
    # The check ran for train only: a grid trained its runs on other backbones first and stopped
    # at this one after retrying the hub.
    import huggingface_hub
    import yaml

    from tiny import write_split

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for split, count in (("train", 4), ("dev", 2), ("test", 2)):
        write_split(tmp_path / f"{split}.jsonl", count, seed=count)
    base = {"data": {"dataset": "jsonl", "path": str(tmp_path), "label_set": "meld"}, "backbone": {"model": "someorg/no-such-model-xyz"}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    axes = {"fraction": {"1": {"data.fraction": 1.0}, "1/2": {"data.fraction": 0.5}}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({"name": "g", "base": "base.yaml", "output_dir": "runs", "axes": axes}))
    result = run_cli("experiment", tmp_path / "grid.yaml", "--no-progress")
    assert result.code == 2 and "Traceback" not in result.err
    [line] = result.err.splitlines()
    assert "backbone.model" in line and "no-such-model-xyz" in line and "HF_HUB_OFFLINE" in line
    assert not (tmp_path / "runs").exists()


def cached_hub_model(cache: Path, backbone: Path, name: str = "someorg/tiny-cached") -> Path:
    """``backbone`` laid out as the Hugging Face cache holds a downloaded hub model."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{name.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(backbone, repo / "snapshots" / revision)
    return repo / "snapshots" / revision


def test_a_cached_hub_model_loads_from_the_cache_when_the_hub_cannot_be_reached(
    run_cli, tiny_data, backbone, tmp_path, monkeypatch
) -> None:
    # transformers asked the unreachable hub about each file and retried for minutes before it
    # used the cached copy.
    import huggingface_hub

    from instructerc.modeling.backbone import BackboneConfig, resolve_model

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = cached_hub_model(tmp_path / "hub", backbone)
    monkeypatch.setattr(huggingface_hub, "model_info", unreachable_hub)
    assert resolve_model(BackboneConfig(model="someorg/tiny-cached")) == str(snapshot)
    assert resolve_model(BackboneConfig(model="someorg/not-cached")) == "someorg/not-cached"

    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    result = run_cli("train", path, "--model", "someorg/tiny-cached", "--no-progress")
    assert result.code == 0, result.err
    assert "someorg/tiny-cached" in (tmp_path / "run" / "model" / "instructerc.json").read_text()

    # With the hub answering, the id goes to transformers, which checks for a newer revision.
    monkeypatch.setattr(huggingface_hub, "model_info", lambda *args, **kwargs: object())
    assert resolve_model(BackboneConfig(model="someorg/tiny-cached")) == "someorg/tiny-cached"
