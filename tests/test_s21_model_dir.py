"""Model directories as untrusted input: a shard index that leads out of its folder, a converted
cache damaged by a crash, a model with fewer positions than its prompts, names that are no
model directory."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.modeling import backbone as backbone_module
from instructerc.modeling import model_dir
from instructerc.modeling.backbone import BackboneConfig, check_model_folder, load_causal_lm, missing_from_snapshot
from instructerc.modeling.model_dir import Manifest, load_model
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.templates import TemplateConfig
from instructerc.retrieval.index import RetrievalConfig

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_backbone, tiny_model_dir, tiny_tokenizer  # noqa: E402

INDEX = "model.safetensors.index.json"
DIALOGUE = {"id": "d", "utterances": [{"speaker": "Ann", "text": "Hi! How are you?"}, {"speaker": "Bob", "text": "Great news!"}]}


@pytest.fixture(scope="module")
def full_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("full") / "model", MELD)


def sharded(model: Path, into: Path, second: str, link: bool = False) -> Path:
    """A copy ``into`` of the full model directory ``model`` whose weights are two shards, the
    second saved in a folder beside it and named by the index as ``second`` (with ``link``: a
    symlink named ``second`` inside the copy leads to it)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(model, into)
    tensors = load_file(str(into / "model.safetensors"))
    (into / "model.safetensors").unlink()
    names = sorted(tensors)
    first, rest = names[: len(names) // 2], names[len(names) // 2 :]
    save_file({name: tensors[name].contiguous() for name in first}, str(into / "model-1.safetensors"))
    outside = into.parent / "outside"
    outside.mkdir(exist_ok=True)
    save_file({name: tensors[name].contiguous() for name in rest}, str(outside / "model-2.safetensors"))
    if link:
        os.symlink(outside / "model-2.safetensors", into / second)
    weight_map = {name: "model-1.safetensors" for name in first} | {name: second for name in rest}
    (into / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}), encoding="utf-8")
    return into


def outside_shard(tmp_path: Path) -> str:
    return str(tmp_path / "outside" / "model-2.safetensors")


ESCAPES = {
    "absolute": lambda tmp_path: (outside_shard(tmp_path), False),
    "dot-dot": lambda tmp_path: ("../outside/model-2.safetensors", False),
    "symlink": lambda tmp_path: ("model-2.safetensors", True),
}


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_a_shard_index_leading_out_of_the_model_folder_is_refused_before_any_shard_is_read(
    full_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, escape: str
) -> None:
    second, link = ESCAPES[escape](tmp_path)
    model = sharded(full_model, tmp_path / "model", second, link)
    read = []
    real = model_dir.saved_tensors
    monkeypatch.setattr(model_dir, "saved_tensors", lambda file, *rest: read.append(Path(file)) or real(file, *rest))

    with pytest.raises(InputError) as error:
        load_model(model)

    assert error.value.path == str(model / INDEX)
    assert "names a shard outside the model folder" in error.value.message and repr(second) in error.value.message
    assert "'model.layers." in error.value.message  # the entry's tensor name
    assert all(file.parent == model for file in read)  # nothing outside was opened


def test_a_sharded_model_whose_shards_stay_inside_still_loads(full_model: Path, tmp_path: Path) -> None:
    model = sharded(full_model, tmp_path / "model", "model-2.safetensors")
    (tmp_path / "outside" / "model-2.safetensors").rename(model / "model-2.safetensors")
    (model / "weights").mkdir()
    (model / "model-1.safetensors").rename(model / "weights" / "model-1.safetensors")
    os.symlink("weights/model-1.safetensors", model / "model-1.safetensors")  # a link inside the folder is fine

    loaded, _, _ = load_model(model)

    assert loaded.config.num_hidden_layers == 2


def test_a_backbone_folder_whose_shards_lead_out_is_refused_for_training_and_for_an_adapter(full_model: Path, tmp_path: Path) -> None:
    backbone = sharded(full_model, tmp_path / "backbone", "model-2.safetensors", link=True)
    config = BackboneConfig(model=str(backbone))

    for check in (lambda: check_model_folder(str(backbone)), lambda: load_causal_lm(str(backbone), config)):
        with pytest.raises(InputError, match="names a shard outside the model folder") as error:
            check()
        assert error.value.path == str(backbone / INDEX)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    Manifest(config, "lora").save(adapter)
    with pytest.raises(InputError, match="names a shard outside the model folder"):
        model_dir.check_backbone_available(adapter, config)


def test_a_cached_hub_snapshot_may_link_into_its_blobs_but_no_further(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--org--name"
    snapshot = repo / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for blob in ("1", "2", "tok"):
        (repo / "blobs" / blob).write_text("x", encoding="utf-8")
    os.symlink("../../blobs/1", snapshot / "model-1.safetensors")
    os.symlink("../../blobs/2", snapshot / "model-2.safetensors")
    os.symlink("../../blobs/tok", snapshot / "tokenizer.json")
    index = {"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    assert missing_from_snapshot(snapshot) == []

    index["weight_map"]["b"] = "../../blobs/2"
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(InputError, match=r"entry 'b': '\.\./\.\./blobs/2' names a shard outside"):
        missing_from_snapshot(snapshot)
    (tmp_path / "secret").write_text("x", encoding="utf-8")
    (snapshot / "model-2.safetensors").unlink()
    os.symlink(tmp_path / "secret", snapshot / "model-2.safetensors")
    index["weight_map"]["b"] = "model-2.safetensors"
    (snapshot / "pytorch_model.bin.index.json").write_text(json.dumps(index), encoding="utf-8")
    (snapshot / "model.safetensors.index.json").unlink()
    with pytest.raises(InputError, match="names a shard outside"):
        missing_from_snapshot(snapshot)


@pytest.mark.parametrize("value", [1, None, "", ["model-1.safetensors"]])
def test_a_shard_entry_that_names_no_file_is_a_malformed_index(full_model: Path, tmp_path: Path, value: Any) -> None:
    # A number was read as the shard "1" and reported as a missing file.
    model = sharded(full_model, tmp_path / "model", "model-2.safetensors")
    data = json.loads((model / INDEX).read_text(encoding="utf-8"))
    data["weight_map"][next(iter(data["weight_map"]))] = value
    (model / INDEX).write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(InputError, match="malformed index of the weight shards.*names no shard file") as error:
        load_model(model)

    assert error.value.path == str(model / INDEX)


def conversion(backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The embedded model's conversion, made from the tiny backbone; returns the list its
    conversions are counted in."""
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(backbone_module, "embedded_gguf", lambda: gguf)
    done: list[int] = []

    def convert(path: Path) -> tuple[Any, Any]:
        done.append(1)
        return LlamaForCausalLM.from_pretrained(str(backbone)), PreTrainedTokenizerFast.from_pretrained(str(backbone))

    monkeypatch.setattr(backbone_module, "_from_gguf", convert)
    return done


DAMAGES = {
    "config.json cut short": lambda target: (target / "config.json").write_text('{"model_type": "lla', encoding="utf-8"),
    "config.json emptied": lambda target: (target / "config.json").write_bytes(b""),
    "tokenizer.json cut short": lambda target: (target / "tokenizer.json").write_bytes((target / "tokenizer.json").read_bytes()[:500]),
    "tokenizer_config.json missing": lambda target: (target / "tokenizer_config.json").unlink(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_converted_cache_with_a_damaged_file_is_converted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    # Only the weights were checked: a config or tokenizer emptied by a crash was used for ever,
    # every load failing on a cache file the user never made.
    from instructerc.modeling.model_dir import damaged_tokenizer_file

    done = conversion(tiny_backbone(tmp_path / "backbone"), tmp_path, monkeypatch)
    target = backbone_module.converted_embedded_model(tmp_path / "cache")
    assert backbone_module.converted_embedded_model(tmp_path / "cache") == target and len(done) == 1
    DAMAGES[damage](target)

    assert backbone_module.converted_embedded_model(tmp_path / "cache") == target and len(done) == 2

    assert json.loads((target / "config.json").read_text(encoding="utf-8"))["model_type"] == "llama"
    assert (target / "tokenizer_config.json").is_file() and damaged_tokenizer_file(target) is None


def test_a_conversion_is_on_the_disk_before_it_is_renamed_into_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Renamed unsynced, a crash could leave the cache folder in place with empty files.
    conversion(tiny_backbone(tmp_path / "backbone"), tmp_path, monkeypatch)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    target = backbone_module.converted_embedded_model(tmp_path / "cache")

    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= set(synced)
    assert synced[-1] != target.name and synced[-1].startswith(".convert-")  # the folder itself, before its rename


def gpt2_model_dir(directory: Path, max_length: int) -> Path:
    """A full model directory around a tiny GPT-2: 64 learned positions."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4, pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    Manifest(BackboneConfig(model=str(directory)), "full").save(directory)
    PromptSetup(TemplateConfig(name="dialogue-prefix", demonstration=False), MELD, max_length, RetrievalConfig()).save(directory)
    return directory


def test_prompts_longer_than_a_models_learned_positions_are_refused_as_it_loads(tmp_path: Path, run_cli) -> None:
    # The first long prompt failed in the forward pass: IndexError: index out of range in self.
    model = gpt2_model_dir(tmp_path / "model", max_length=512)
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(DIALOGUE) + "\n", encoding="utf-8")

    result = run_cli("predict", "--input", source, "--output", tmp_path / "out.jsonl", "--model", model, "--no-progress")

    assert result.code == 2 and not (tmp_path / "out.jsonl").exists()
    assert result.err.strip() == (
        f"instructerc: error: {model / 'prompting.json'}: field 'max_length': max_length is 512 tokens, but the model has "
        "learned positions for 64 only: lower it to at most 64"
    )
    setup = json.loads((model / "prompting.json").read_text(encoding="utf-8"))
    (model / "prompting.json").write_text(json.dumps(setup | {"max_length": 64}), encoding="utf-8")
    assert load_model(model)[0].config.n_positions == 64


def test_a_rotary_model_takes_prompts_past_its_nominal_positions(full_model: Path, tmp_path: Path) -> None:
    model = shutil.copytree(full_model, tmp_path / "model")
    setup = json.loads((model / "prompting.json").read_text(encoding="utf-8"))
    (model / "prompting.json").write_text(json.dumps(setup | {"max_length": 4096}), encoding="utf-8")

    loaded, _, _ = load_model(model)

    assert loaded.config.max_position_embeddings == 2048


def test_a_hub_id_given_as_model_says_that_model_takes_a_trained_folder(tmp_path: Path, run_cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text(json.dumps(DIALOGUE) + "\n", encoding="utf-8")

    result = run_cli("predict", "--input", "in.jsonl", "--output", "out.jsonl", "--model", "HuggingFaceTB/SmolLM2-135M")

    assert result.code == 2
    assert result.err.startswith("instructerc: error: HuggingFaceTB/SmolLM2-135M: no such model directory (nor is a Hugging Face hub id")


def test_a_manifest_that_is_a_folder_is_said_so(tmp_path: Path) -> None:
    # It was called "a bare Hugging Face model or adapter".
    model = tmp_path / "model"
    (model / "instructerc.json").mkdir(parents=True)
    (model / "adapter_config.json").write_text("{}", encoding="utf-8")

    with pytest.raises(InputError) as error:
        load_model(model)

    assert str(error.value) == f"{model}: its instructerc.json is not a file"


CONFIG_FAULTS = {
    "a list": (lambda config: [config], "not a usable model config"),
    "a size as a string": (lambda config: config | {"hidden_size": "32"}, "Field 'hidden_size' expected int"),
    "no attention heads": (lambda config: config | {"num_attention_heads": 0}, "ZeroDivisionError"),
}


@pytest.mark.parametrize("fault", sorted(CONFIG_FAULTS))
def test_a_config_of_wrong_types_is_one_error_naming_it(full_model: Path, tmp_path: Path, fault: str) -> None:
    # Each was a traceback: TypeError, StrictDataclassFieldValidationError, ZeroDivisionError.
    model = shutil.copytree(full_model, tmp_path / "model")
    change, problem = CONFIG_FAULTS[fault]
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    (model / "config.json").write_text(json.dumps(change(config)), encoding="utf-8")

    with pytest.raises(InputError, match="not a usable model config") as error:
        load_model(model)

    assert error.value.path == str(model / "config.json") and problem in error.value.message


def test_a_backbone_config_of_wrong_types_is_named_for_an_adapter(full_model: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    backbone = tiny_backbone(tmp_path / "backbone")
    adapter = tmp_path / "adapter"
    lora = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    get_peft_model(AutoModelForCausalLM.from_pretrained(str(backbone)), lora).save_pretrained(adapter)
    Manifest(BackboneConfig(model=str(backbone)), "lora").save(adapter)
    shutil.copy(full_model / "prompting.json", adapter / "prompting.json")
    config = json.loads((backbone / "config.json").read_text(encoding="utf-8"))
    (backbone / "config.json").write_text(json.dumps(config | {"num_attention_heads": 0}), encoding="utf-8")

    with pytest.raises(InputError, match="not a usable model config") as error:
        load_model(adapter)

    assert error.value.path == str(backbone / "config.json")


def test_a_library_the_models_config_asks_for_is_said_missing_in_one_line(
    full_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # transformers' check for a quantization's library raised a bare ImportError: a traceback.
    def needs(*args: Any, **kwargs: Any) -> None:
        raise ImportError("Using `bitsandbytes` 8-bit quantization requires bitsandbytes: `pip install -U bitsandbytes>=0.46.1`")

    monkeypatch.setattr(model_dir, "load_causal_lm", needs)
    with pytest.raises(InputError, match="this model needs a library that is not installed: ImportError: Using `bitsandbytes`") as error:
        load_model(full_model)
    assert error.value.path == str(full_model)

    def extra_missing(*args: Any, **kwargs: Any) -> None:
        raise ModuleNotFoundError("No module named 'peft'", name="peft")

    monkeypatch.setattr(model_dir, "load_causal_lm", extra_missing)
    with pytest.raises(ModuleNotFoundError):  # the CLI's to say as a missing extra
        load_model(full_model)


def ship_script() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("ship_default_model", Path(__file__).parents[1] / "scripts" / "ship_default_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "start, problem",
    [
        ('{"event": "start", "time": 1, "processes": "2", "device": "cpu"}', "field 'processes': a positive number of processes"),
        ('{"event": "start", "time": 1, "processes": null, "device": "cpu"}', "field 'processes': a positive number of processes"),
        ('{"event": "start", "time": true, "processes": 1, "device": "cpu"}', "not a run event"),
    ],
)
def test_ship_refuses_a_run_log_of_wrong_types_naming_its_line(tmp_path: Path, start: str, problem: str) -> None:
    # A string or null process count was a TypeError traceback; a time of true counted as 1 second.
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(start + '\n{"event": "done", "time": 9}\n', encoding="utf-8")

    with pytest.raises(InputError) as error:
        ship_script()._run_summary(metrics)

    assert str(error.value).startswith(f"{metrics}:1: ") and problem in str(error.value)


def test_ship_refuses_test_metrics_whose_systems_are_no_object(tmp_path: Path) -> None:
    # An AttributeError traceback: 'list' object has no attribute 'get'.
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"systems": []}', encoding="utf-8")

    with pytest.raises(InputError, match="not the metrics.json of instructerc evaluate") as error:
        ship_script()._test_scores(metrics)

    assert error.value.path == str(metrics)


def test_the_position_check_serves_a_recipe_too(tmp_path: Path) -> None:
    # For the trainer, whose recipe max_length (default 1024) crashed a GPT-2 backbone the same way.
    from instructerc.modeling.backbone import check_positions

    model = gpt2_model_dir(tmp_path / "model", max_length=64)
    loaded = load_causal_lm(str(model), BackboneConfig(model=str(model)))
    recipe = tmp_path / "recipe.yaml"

    with pytest.raises(InputError) as error:
        check_positions(loaded, 1024, path=recipe)

    assert error.value.path == str(recipe) and error.value.field == "max_length"
    assert error.value.message == "max_length is 1024 tokens, but the model has learned positions for 64 only: lower it to at most 64"
    check_positions(loaded, 64, path=recipe)


def test_a_recipes_tilde_in_backbone_cache_dir_is_the_home_folder_not_a_folder_named_tilde(tmp_path: Path, monkeypatch) -> None:
    import instructerc.modeling.backbone as backbone

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(backbone, "converted_embedded_model", lambda cache: cache)
    assert backbone.resolve_model(BackboneConfig(cache_dir="~/models")) == str(tmp_path / "home" / "models")
