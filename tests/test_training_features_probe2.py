"""Training features combined as a user would: hub ids cached in part, adapters, class balance."""

from __future__ import annotations

import pytest

from test_train_input_checks import write_recipe
from test_training import recipe
from test_trainopts_probe2 import cached_hub_model, unreachable_hub


@pytest.mark.parametrize("lacking", [["model.safetensors"], ["model.safetensors", "tokenizer.json"]])
@pytest.mark.parametrize("offline", [False, True])
def test_a_hub_id_cached_only_in_part_is_one_line_before_anything_loads(
    run_cli,
    tiny_data,
    backbone,
    tmp_path,
    monkeypatch,
    no_model_loads,
    lacking: list[str],
    offline: bool,
) -> None:
    # A download cut short leaves config.json in the cache, so the id passed as cached; without
    # the hub, transformers then failed on the missing weights with a message naming neither the
    # id nor the setting, or on the missing tokenizer with a traceback.
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(huggingface_hub, "model_info", unreachable_hub)
    snapshot = cached_hub_model(tmp_path / "hub", backbone, "someorg/cut-short")
    for name in lacking:
        (snapshot / name).unlink()
    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    result = run_cli("train", path, "--model", "someorg/cut-short", "--no-progress")
    assert result.code == 2 and result.out == ""
    [line] = result.err.splitlines()
    assert "backbone.model" in line and "'someorg/cut-short' is only partly in the Hugging Face cache" in line
    assert "weights" in line and ("tokenizer" in line) == ("tokenizer.json" in lacking)
    assert ("HF_HUB_OFFLINE" if offline else "cannot be reached") in line
    assert not (tmp_path / "run").exists()


def test_resolving_a_partly_cached_hub_id_without_the_hub_is_an_input_error(backbone, tmp_path, monkeypatch) -> None:
    import huggingface_hub

    from instructerc.errors import InputError
    from instructerc.modeling.backbone import BackboneConfig, resolve_model

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub, "model_info", unreachable_hub)
    snapshot = cached_hub_model(tmp_path / "hub", backbone, "someorg/sharded")
    # A sharded checkpoint whose index names a shard that never arrived.
    (snapshot / "model.safetensors").rename(snapshot / "model-00001-of-00002.safetensors")
    (snapshot / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    )
    with pytest.raises(InputError) as error:
        resolve_model(BackboneConfig(model="someorg/sharded"))
    assert error.value.field == "backbone.model" and "model-00002-of-00002.safetensors" in str(error.value)
    # With the hub answering, transformers fetches what is missing.
    monkeypatch.setattr(huggingface_hub, "model_info", lambda *args, **kwargs: object())
    assert resolve_model(BackboneConfig(model="someorg/sharded")) == "someorg/sharded"


def test_a_whole_cached_hub_id_is_not_asked_of_the_hub_when_checked(backbone, tmp_path, monkeypatch) -> None:
    import huggingface_hub

    from instructerc.modeling.backbone import check_hub_model

    def asked(*args, **kwargs):
        raise AssertionError("the hub was asked about a whole cached model")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub, "model_info", asked)
    cached_hub_model(tmp_path / "hub", backbone, "someorg/whole")
    check_hub_model("someorg/whole")


def test_more_top_layers_than_the_backbone_has_is_refused_before_the_model_loads(
    run_cli,
    tiny_data,
    backbone,
    tmp_path,
    no_model_loads,
) -> None:
    # Refused only once the weights had loaded (minutes for a large backbone).
    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run", finetune__lora__top_layers=3))
    result = run_cli("train", path, "--no-progress")
    assert result.code == 2 and result.out == ""
    [line] = result.err.splitlines()
    assert "finetune.lora.top_layers" in line and "top_layers is 3 but the model has 2 layers" in line


@pytest.mark.parametrize(
    ("override", "field", "fragment"),
    [
        ({"backbone.model": "./no-such-model-folder"}, "backbone.model", "no such model folder"),
        ({"finetune.init_adapter": "default"}, "finetune.init_adapter", "the adapter was trained on the backbone"),
    ],
)
def test_a_grid_run_whose_model_cannot_be_had_stops_the_grid_before_its_first_run(
    run_cli, tiny_data, backbone, tmp_path, override: dict, field: str, fragment: str
) -> None:
    # Only hub ids were checked up front: the grid trained its first run, then stopped at the
    # second with an error that did not say which run it was.
    import yaml

    path = write_recipe(tmp_path / "base.yaml", recipe(tiny_data, backbone, tmp_path / "unused"))
    axes = {"variant": {"plain": {"optim.lr": 0.02}, "broken": override}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({"name": "g", "base": path.name, "output_dir": "runs", "axes": axes}))
    result = run_cli("experiment", tmp_path / "grid.yaml", "--no-progress")
    assert result.code == 2 and "Traceback" not in result.err
    [line] = result.err.splitlines()
    assert f"field '{field}'" in line and "run variant=broken" in line and fragment in line
    assert not (tmp_path / "runs").exists()
