"""A model directory lacking a file its form needs is refused, naming the file, before anything
heavy loads: transformers and peft would take the folder for a Hub repo id and go online."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.modeling import model_dir
from instructerc.modeling.backbone import EMBEDDED_MODEL, BackboneConfig
from instructerc.modeling.default_model import DEFAULT_MODEL_DIR
from instructerc.modeling.model_dir import Manifest, load_model
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.templates import TemplateConfig
from instructerc.retrieval.index import RetrievalConfig

DIALOGUE = {"id": "d", "utterances": [{"speaker": "Ann", "text": "Hi! How are you?"}, {"speaker": "Bob", "text": "Great news!"}]}


class Loaded(Exception):
    """Raised by the heavy loaders here: reaching one means every check passed."""


@pytest.fixture(autouse=True)
def nothing_heavy_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(*args, **kwargs):
        raise Loaded(args[0] if args else "")

    for name in ("load_tokenizer", "load_causal_lm", "resolve_model"):
        monkeypatch.setattr(model_dir, name, load)


def model_files(directory: Path, method: str, backbone: str, files: tuple[str, ...]) -> Path:
    """A model directory whose weight files are empty stand-ins (the loaders never open them here)."""
    directory.mkdir(parents=True)
    Manifest(BackboneConfig(model=backbone), method).save(directory)
    PromptSetup(TemplateConfig(demonstration=False), MELD, 512, RetrievalConfig()).save(directory)
    for name in files:
        stand_in(directory / name)
    return directory


def stand_in(file: Path) -> None:
    """An empty file of its kind: a weights file is a whole safetensors file of no tensors."""
    from safetensors.torch import save_file

    if file.suffix == ".safetensors":
        save_file({}, str(file))
    else:
        file.write_text("{}", encoding="utf-8")


def local_backbone(directory: Path) -> Path:
    directory.mkdir()
    (directory / "config.json").write_text("{}", encoding="utf-8")
    return directory


FULL = ("config.json", "model.safetensors", "tokenizer.json")
ADAPTER = ("adapter_config.json", "adapter_model.safetensors")


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_a_full_model_directory_without_its_weights_is_refused_by_name(tmp_path: Path, missing: str) -> None:
    complete = model_files(tmp_path / "complete", "full", str(tmp_path / "elsewhere"), FULL)
    with pytest.raises(Loaded):
        load_model(complete)
    model = model_files(tmp_path / "model", "full", str(tmp_path / "elsewhere"), tuple(f for f in FULL if f != missing))

    with pytest.raises(InputError) as error:
        load_model(model)

    assert str(error.value).startswith(f"{model / missing}: missing: a fully fine-tuned model directory")


def test_a_sharded_full_model_needs_every_shard_its_index_lists(tmp_path: Path) -> None:
    model = model_files(tmp_path / "model", "full", "unused", ("config.json", "tokenizer.json", "model-1-of-2.safetensors"))
    index = {"metadata": {}, "weight_map": {"a": "model-1-of-2.safetensors", "b": "model-2-of-2.safetensors"}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")

    with pytest.raises(InputError, match="model-2-of-2.safetensors: missing"):
        load_model(model)
    stand_in(model / "model-2-of-2.safetensors")
    with pytest.raises(Loaded):
        load_model(model)


@pytest.mark.parametrize("missing", ADAPTER)
def test_an_adapter_over_another_backbone_without_its_adapter_files_is_refused_by_name(tmp_path: Path, missing: str) -> None:
    backbone = local_backbone(tmp_path / "backbone")
    with pytest.raises(Loaded):
        load_model(model_files(tmp_path / "complete", "lora", str(backbone), ADAPTER))
    model = model_files(tmp_path / "model", "lora", str(backbone), tuple(f for f in ADAPTER if f != missing))

    with pytest.raises(InputError) as error:
        load_model(model)

    assert str(error.value).startswith(f"{model / missing}: missing: a LoRA model directory")


def test_an_adapter_over_a_backbone_folder_that_is_no_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "backbone").mkdir()
    model = model_files(tmp_path / "model", "lora", str(tmp_path / "backbone"), ADAPTER)
    with pytest.raises(InputError, match="backbone folder .* has no config.json"):
        load_model(model)


def test_an_adapter_over_a_backbone_folder_that_is_gone_is_refused_naming_it(tmp_path: Path) -> None:
    # A hub id is left to transformers (the cache, or a download where the machine is online).
    model = model_files(tmp_path / "model", "lora", str(tmp_path / "moved-away"), ADAPTER)
    with pytest.raises(InputError, match="backbone folder .*moved-away does not exist"):
        load_model(model)


def test_a_manifest_with_an_unknown_method_is_refused(tmp_path: Path) -> None:
    model = model_files(tmp_path / "model", "full", "unused", FULL)
    manifest = json.loads((model / "instructerc.json").read_text(encoding="utf-8"))
    (model / "instructerc.json").write_text(json.dumps({**manifest, "method": "qlora"}), encoding="utf-8")
    with pytest.raises(InputError, match="instructerc.json: field 'method': unknown fine-tuning method 'qlora'"):
        load_model(model)


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
@pytest.mark.parametrize("missing", ADAPTER)
def test_predict_with_a_default_model_copy_lacking_an_adapter_file_is_one_line(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str, relative: bool
) -> None:
    # The probe: a relative folder name is a valid Hub repo id, which peft went online for.
    assert Manifest.load(DEFAULT_MODEL_DIR).backbone.model == EMBEDDED_MODEL
    shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "m")
    (tmp_path / "m" / missing).unlink()
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(DIALOGUE) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    model = Path("m") if relative else tmp_path / "m"

    result = run_cli("predict", "--input", source, "--output", tmp_path / "out.jsonl", "--model", model, "--no-progress")

    assert result.code == 2
    assert result.err.splitlines() == [f"instructerc: error: {model / missing}: missing: {model_dir._WEIGHTS_OF['lora']}"]
    assert not (tmp_path / "out.jsonl").exists()
