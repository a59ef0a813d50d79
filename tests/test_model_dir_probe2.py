"""Damaged or foreign model directories and artifacts are one error naming the file (and key):
adapters cut short or of other tensors, adapter configs and manifests of wrong types or a newer
format, tokenizers of another model, checkpoints' state of wrong types, folders that are no model
directory; and what instructerc writes survives another working directory, a symlinked folder
and a damaged conversion cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.modeling.backbone import BackboneConfig
from instructerc.modeling.model_dir import MANIFEST, Manifest, load_model
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.templates import TemplateConfig
from instructerc.retrieval.index import RetrievalConfig

ADAPTER = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import tiny_backbone

    return tiny_backbone(tmp_path_factory.mktemp("backbone") / "backbone")


@pytest.fixture(scope="module")
def adapter_model(backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA model directory over the tiny backbone, as a trained run leaves one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    directory = tmp_path_factory.mktemp("lora") / "model"
    directory.mkdir()
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(backbone)), LoraConfig(task_type="CAUSAL_LM", **LORA))
    model.save_pretrained(directory)
    Manifest(BackboneConfig(model=str(backbone)), "lora").save(directory)
    PromptSetup(TemplateConfig(name="dialogue-prefix", demonstration=False), MELD, 512, RetrievalConfig()).save(directory)
    return directory


def copy_of(model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model, tmp_path / "copy"))


def rewrite_adapter(directory: Path, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    from safetensors.torch import load_file, save_file

    save_file(change(load_file(str(directory / ADAPTER))), str(directory / ADAPTER))


def edit_json(file: Path, change: Callable[[Any], Any]) -> None:
    file.write_text(json.dumps(change(json.loads(file.read_text(encoding="utf-8")))), encoding="utf-8")


# -- adapter weights ------------------------------------------------------------------------------


def test_an_adapter_cut_short_is_refused_naming_its_file(adapter_model: Path, tmp_path: Path) -> None:
    model = copy_of(adapter_model, tmp_path)
    weights = model / ADAPTER
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    with pytest.raises(InputError, match="corrupt or cut short") as error:
        load_model(model)

    assert error.value.path == str(weights)


def _renamed(weights: dict[str, Any]) -> dict[str, Any]:
    return {name.replace("lora_A", "lora_X"): tensor for name, tensor in weights.items()}


def _one_dropped(weights: dict[str, Any]) -> dict[str, Any]:
    return dict(list(weights.items())[1:])


def _reshaped(weights: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {name: torch.zeros(t.shape[0] + 1, t.shape[1]) for name, t in weights.items()}


def _integers(weights: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {name: t.to(torch.int64) for name, t in weights.items()}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_renamed, "not in this adapter's layers"),
        (_one_dropped, "1 missing"),
        (lambda weights: {}, "8 missing"),
        (_reshaped, r"of another shape, e.g. \S+ \(5x32 saved, 4x32 expected\)"),
        (_integers, r"not floating point, e.g. \S+ \(I64\)"),
    ],
    ids=["renamed", "one-missing", "empty", "reshaped", "integers"],
)
def test_adapter_weights_that_are_not_the_adapters_are_refused(adapter_model: Path, tmp_path: Path, change, problem: str) -> None:
    # peft loaded what matched with a warning (predicting from untrained weights, exit code 0),
    # cast integers silently, and raised a bare RuntimeError for another shape.
    model = copy_of(adapter_model, tmp_path)
    rewrite_adapter(model, change)

    with pytest.raises(InputError, match=problem) as error:
        load_model(model)

    assert error.value.path == str(model / ADAPTER)


def test_predict_with_an_adapter_of_integer_weights_fails_in_one_line(run_cli, adapter_model: Path, tmp_path: Path) -> None:
    model = copy_of(adapter_model, tmp_path)
    rewrite_adapter(model, _integers)
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "utterances": [{"speaker": "Ann", "text": "Hi there."}]}\n', encoding="utf-8")

    result = run_cli("predict", "--input", source, "--output", tmp_path / "out.jsonl", "--model", model, "--no-progress")

    assert result.code == 2 and not (tmp_path / "out.jsonl").exists()
    [line] = result.err.splitlines()
    assert line.startswith(f"instructerc: error: {model / ADAPTER}: the adapter weights do not fit") and "not floating point" in line


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{bad", "not a readable adapter config"),
        ("[1]", "an adapter config is a JSON object, not list"),
        (None, r"key 'r' \(the LoRA rank\) must be a positive integer, not '4'"),
        ("no-type", "key 'peft_type' is None: instructerc loads LoRA adapters"),
    ],
    ids=["not-json", "a-list", "rank-as-text", "no-peft-type"],
)
def test_a_damaged_adapter_config_is_refused_naming_it(adapter_model: Path, tmp_path: Path, text: str | None, problem: str) -> None:
    model = copy_of(adapter_model, tmp_path)
    config = model / ADAPTER_CONFIG
    if text is None:
        edit_json(config, lambda data: {**data, "r": "4"})
    elif text == "no-type":
        edit_json(config, lambda data: {key: value for key, value in data.items() if key != "peft_type"})
    else:
        config.write_text(text, encoding="utf-8")

    with pytest.raises(InputError, match=problem) as error:
        load_model(model)

    assert error.value.path == str(config)


def test_an_adapter_predicts_as_peft_loads_it(adapter_model: Path, backbone: Path) -> None:
    """Loading through the checks gives the weights peft's own loader gives."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ours, _, _ = load_model(adapter_model, dtype="float32")
    theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(backbone)), str(adapter_model)).merge_and_unload()
    mine = dict(ours.named_parameters())
    for name, parameter in theirs.named_parameters():
        assert torch.equal(mine[name], parameter), name


# -- finetune.init_adapter ------------------------------------------------------------------------


def start_from(adapter: Path, backbone: Path) -> None:
    from transformers import AutoModelForCausalLM

    from instructerc.modeling.finetune import make_trainable
    from instructerc.training.config import LoraConfig

    lora = LoraConfig(r=LORA["r"], alpha=LORA["lora_alpha"], target_modules=LORA["target_modules"], dropout=0.0)
    make_trainable(AutoModelForCausalLM.from_pretrained(str(backbone)), "lora", lora, str(adapter))


@pytest.mark.parametrize(
    ("damage", "name", "problem"),
    [
        (lambda model: (model / ADAPTER_CONFIG).write_text("{bad", encoding="utf-8"), ADAPTER_CONFIG, "not a readable adapter config"),
        (lambda model: (model / ADAPTER_CONFIG).write_text("[1]", encoding="utf-8"), ADAPTER_CONFIG, "a JSON object"),
        (lambda model: (model / ADAPTER).unlink(), ADAPTER, "missing"),
        (lambda model: (model / ADAPTER).write_bytes(b"garbage"), ADAPTER, "corrupt or cut short"),
        (lambda model: rewrite_adapter(model, _integers), ADAPTER, "not floating point"),
    ],
    ids=["not-json", "a-list", "no-weights", "garbage", "integers"],
)
def test_a_damaged_init_adapter_is_refused_naming_the_file(
    adapter_model: Path, backbone: Path, tmp_path: Path, damage, name: str, problem: str
) -> None:
    # A JSON error, an AttributeError, a Hub download attempt for the missing file, a
    # SafetensorError; integers were cast to weights of zero and trained from.
    model = copy_of(adapter_model, tmp_path)
    damage(model)

    with pytest.raises(InputError, match=problem) as error:
        start_from(model, backbone)

    assert (error.value.path, error.value.field) == (str(model / name), "finetune.init_adapter")


# -- manifest -------------------------------------------------------------------------------------


def manifest_of(tmp_path: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    Manifest(BackboneConfig(model="org/model"), "lora").save(directory)
    edit_json(directory / MANIFEST, change)
    return directory


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (lambda m: {**m, "format": 2}, "format", "written by a newer instructerc"),
        (lambda m: {**m, "format": 1.7}, "format", "must be an integer"),
        (lambda m: {**m, "format": True}, "format", "must be an integer"),
        (lambda m: {key: value for key, value in m.items() if key != "format"}, None, r"missing required key\(s\) \['format'\]"),
        (lambda m: {**m, "backbone": {**m["backbone"], "model": 5}}, "backbone.model", "expected a string"),
        (lambda m: {**m, "backbone": {**m["backbone"], "trust_remote_code": "no"}}, "backbone.trust_remote_code", "true or false"),
        (lambda m: {**m, "backbone": {**m["backbone"], "cache_dir": 3}}, "backbone.cache_dir", "expected a string"),
        (lambda m: {**m, "comment": "x"}, None, r"unknown key\(s\) \['comment'\]"),
        (lambda m: [m], None, "a JSON object"),
    ],
    ids=[
        "newer-format",
        "fractional-format",
        "boolean-format",
        "no-format",
        "numeric-model",
        "text-flag",
        "numeric-cache",
        "extra-key",
        "a-list",
    ],
)
def test_a_manifest_of_wrong_types_or_a_newer_format_is_refused_naming_the_key(
    tmp_path: Path, change, field: str | None, problem: str
) -> None:
    # A newer format, a fractional or boolean one, an extra key and a text flag were read as if
    # valid; a number as the backbone was a TypeError traceback.
    directory = manifest_of(tmp_path, change)

    with pytest.raises(InputError, match=problem) as error:
        Manifest.load(directory)

    assert (error.value.path, error.value.field) == (str(directory / MANIFEST), field)


def test_a_relative_backbone_folder_is_recorded_so_the_model_loads_from_anywhere(
    adapter_model: Path, backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A recipe's backbone.model: ./backbone was written as is, so predict from another working
    # directory found no backbone (or another folder of that name).
    model = copy_of(adapter_model, tmp_path)
    monkeypatch.chdir(backbone.parent)
    Manifest(BackboneConfig(model="./backbone"), "lora").save(model)
    monkeypatch.chdir(tmp_path)

    assert Manifest.load(model).backbone.model == str(backbone)
    load_model(model)


def test_a_relative_backbone_that_is_not_there_says_where_it_was_looked_for(adapter_model: Path, tmp_path: Path) -> None:
    model = copy_of(adapter_model, tmp_path)
    edit_json(model / MANIFEST, lambda m: {**m, "backbone": {**m["backbone"], "model": "./moved"}})

    with pytest.raises(InputError, match=f"read from the working directory {Path.cwd()}") as error:
        load_model(model)

    assert error.value.field == "backbone.model"


# -- what --model points at -----------------------------------------------------------------------


def _made(path: Path, files: tuple[str, ...]) -> Path:
    """``path`` as a folder of empty ``files`` (a file itself when ``files`` is just ``"."``)."""
    if files == (".",):
        path.write_text("{}", encoding="utf-8")
        return path
    for name in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("{}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ((), "no such model directory"),
        ((".",), "is a file, not an instructerc model directory"),
        ((f"model/{MANIFEST}", "config.yaml"), "it is a training run; its model is .*given/model"),
        (("state.json", "trainable.pt", "optim.pt"), "it is a training checkpoint"),
        (("config.json", "model.safetensors"), "bare Hugging Face model"),
    ],
    ids=["missing", "a-file", "a-run", "a-checkpoint", "a-hf-checkpoint"],
)
def test_a_folder_that_is_no_model_directory_says_what_it_is(tmp_path: Path, files: tuple[str, ...], problem: str) -> None:
    # Each was "not an instructerc model directory (no instructerc.json)", a missing path included.
    path = _made(tmp_path / "given", files)

    with pytest.raises(InputError, match=problem) as error:
        Manifest.load(path)

    assert error.value.path == str(path)


def test_a_tokenizer_of_another_model_is_refused_naming_it(adapter_model: Path, tmp_path: Path) -> None:
    # Its first token past the embedding was an IndexError traceback in the forward pass.
    from tiny import tiny_tokenizer

    model = copy_of(adapter_model, tmp_path)
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens([f"word{i}" for i in range(100)])
    tokenizer.save_pretrained(model)

    with pytest.raises(InputError, match="tokens but the model of .* embeds only") as error:
        load_model(model)

    assert error.value.path == str(model / "tokenizer.json")


def test_full_weights_cut_short_are_refused_naming_the_file(tmp_path: Path) -> None:
    from tiny import tiny_model_dir

    model = tiny_model_dir(tmp_path / "full", MELD)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3000])

    with pytest.raises(InputError, match="corrupt or cut short") as error:
        load_model(model)

    assert error.value.path == str(weights)


def test_a_backbone_whose_weights_are_cut_short_is_named(adapter_model: Path, backbone: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(backbone, tmp_path / "backbone"))
    (broken / "model.safetensors").write_bytes((backbone / "model.safetensors").read_bytes()[:3000])
    model = copy_of(adapter_model, tmp_path)
    Manifest(BackboneConfig(model=str(broken)), "lora").save(model)

    with pytest.raises(InputError, match="corrupt or cut short") as error:
        load_model(model)

    assert error.value.path == str(broken / "model.safetensors")


# -- checkpoints ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("stage", "0", "expected an integer"),
        ("step_in_epoch", "1", "expected an integer"),
        ("global_step", None, "expected an integer"),
        ("best_score", "x", "expected a number"),
        ("forced_changes", 5, "expected a list"),
        ("best_step", 2.5, "expected an integer"),
        ("epoch", -1, "must not be negative"),
    ],
)
def test_a_checkpoint_state_of_wrong_types_is_refused_naming_the_key(tmp_path: Path, key: str, value: Any, problem: str) -> None:
    # Each was a TypeError or ValueError traceback later in the resumed run, or resumed at a wrong step.
    from instructerc.training.checkpoint import TrainState, load_checkpoint

    checkpoint = tmp_path / "step-0000004"
    checkpoint.mkdir()
    for name in ("trainable.pt", "optim.pt"):
        (checkpoint / name).write_bytes(b"")
    state = {**TrainState(global_step=4, step_in_epoch=4).__dict__, key: value}
    (checkpoint / "state.json").write_text(json.dumps(state), encoding="utf-8")

    with pytest.raises(InputError, match=f"corrupt checkpoint file \\({problem}") as error:
        load_checkpoint(checkpoint)

    assert (error.value.path, error.value.field) == (str(checkpoint / "state.json"), key)


# -- what instructerc writes ----------------------------------------------------------------------


def test_a_symlinked_model_folder_is_replaced_where_it_leads_and_stays_a_link(tmp_path: Path) -> None:
    from instructerc.modeling.model_dir import write_model_dir

    real = tmp_path / "elsewhere" / "model"
    real.mkdir(parents=True)
    (real / "old").write_text("old", encoding="utf-8")
    link = tmp_path / "run" / "model"
    link.parent.mkdir()
    link.symlink_to(real)

    write_model_dir(link, lambda staging: (staging / "new").write_text("new", encoding="utf-8"))

    assert link.is_symlink() and os.readlink(link) == str(real)
    assert sorted(p.name for p in real.iterdir()) == ["new"]
    assert sorted(p.name for p in link.parent.iterdir()) == ["model"]  # no stale link or staging left beside it


def test_a_damaged_conversion_cache_is_converted_again(backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A converted checkpoint cut short (a full disk, a crash before the data reached it) was
    # reused for ever, every load failing on a file the user never made.
    import transformers

    from instructerc.modeling import backbone as backbone_module

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(backbone_module, "embedded_gguf", lambda: gguf)
    conversions = []

    def from_gguf(loader: Any) -> Any:
        def load(*args, **kwargs):
            conversions.append(loader)
            return loader.from_pretrained(str(backbone))

        return load

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_gguf(transformers.LlamaForCausalLM))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_gguf(transformers.PreTrainedTokenizerFast))

    target = backbone_module.converted_embedded_model(tmp_path / "cache")
    assert backbone_module.converted_embedded_model(tmp_path / "cache") == target and len(conversions) == 2  # once
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3000])

    assert backbone_module.converted_embedded_model(tmp_path / "cache") == target and len(conversions) == 4
    backbone_module.saved_tensors(weights)  # whole again
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_an_unwritable_conversion_cache_is_said_before_converting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # It converted first, then failed as "cannot load ... its backbone 'SmolLM2-135M-Instruct' (not a
    # local folder, so it must be in the Hugging Face cache or downloadable)", naming the model folder.
    from instructerc.modeling import backbone as backbone_module

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(backbone_module, "embedded_gguf", lambda: gguf)
    monkeypatch.setattr(
        backbone_module, "_from_gguf", lambda path: pytest.fail("converted although the cache cannot be written"), raising=False
    )
    cache = tmp_path / "a-file"
    cache.write_text("", encoding="utf-8")

    with pytest.raises(InputError, match=r"cannot write the embedded model's converted checkpoint here \(Not a directory\)") as error:
        backbone_module.converted_embedded_model(cache)

    assert error.value.path == str(cache / "models")


def test_a_conversion_killed_midway_leaves_no_staging_folder_for_ever(
    backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each killed conversion left a .convert-* folder of up to a whole checkpoint (540 MB) in the cache.
    import socket
    import subprocess
    import sys

    from instructerc.modeling import backbone as backbone_module

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(backbone_module, "embedded_gguf", lambda: gguf)
    monkeypatch.setattr(backbone_module, "_from_gguf", lambda path: (_tiny(backbone), _tiny_tokenizer(backbone)), raising=False)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    models = tmp_path / "cache" / "models"
    abandoned = models / f".convert-{socket.gethostname()}-{gone.stdout.strip()}-abc"
    running = models / f".convert-{socket.gethostname()}-{os.getpid()}-def"  # a conversion still at work
    for staging in (abandoned, running):
        staging.mkdir(parents=True)
        (staging / "model.safetensors").write_bytes(b"partial")

    target = backbone_module.converted_embedded_model(tmp_path / "cache")

    assert sorted(p.name for p in models.iterdir()) == sorted([running.name, target.name])


def _tiny(backbone: Path) -> Any:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(str(backbone))


def _tiny_tokenizer(backbone: Path) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(backbone))
