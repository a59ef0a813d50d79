"""Model directories and retrieval probed with inputs a user could send: weights of another
model beside a config, a tokenizer naming no padding or end token, a full disk while the embedded
model converts, and a sentence encoder cut short or of other shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.modeling.model_dir import load_model


@pytest.fixture(scope="module")
def full_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("full") / "model", MELD)


def _copy_with_weights(model: Path, tmp_path: Path, change) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file

    copy = Path(shutil.copytree(model, tmp_path / "copy"))
    weights = copy / "model.safetensors"
    save_file(change(load_file(str(weights))), str(weights))
    return copy


def _renamed(weights: dict) -> dict:
    return {f"transformer.{name}": tensor for name, tensor in weights.items()}


def _one_layer_fewer(weights: dict) -> dict:
    return {name: tensor for name, tensor in weights.items() if ".layers.1." not in name}


def _one_row_more(weights: dict) -> dict:
    import torch

    return {name: torch.zeros(t.shape[0] + 1, *t.shape[1:]) if t.ndim == 2 else t for name, t in weights.items()}


@pytest.mark.parametrize(
    ("change", "problem"),
    [(_renamed, "missing"), (_one_layer_fewer, "missing"), (_one_row_more, "another shape")],
)
def test_full_weights_of_another_model_are_refused_naming_the_file(full_model: Path, tmp_path: Path, change, problem: str) -> None:
    # transformers filled the weights it did not find with random values (a warning only), or
    # raised a bare RuntimeError on other shapes.
    model = _copy_with_weights(full_model, tmp_path, change)

    with pytest.raises(InputError, match=problem) as error:
        load_model(model)

    assert error.value.path == str(model / "model.safetensors")


def test_whole_full_weights_still_load(full_model: Path) -> None:
    model, _, manifest = load_model(full_model)

    assert manifest.method == "full" and not model.training


def _without_special_tokens(model: Path, tmp_path: Path) -> Path:
    import json
    import shutil

    copy = Path(shutil.copytree(model, tmp_path / "nopad"))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = copy / name
        if file.is_file():
            config = json.loads(file.read_text(encoding="utf-8"))
            for key in ("pad_token", "eos_token", "unk_token", "bos_token"):
                config.pop(key, None)
            file.write_text(json.dumps(config), encoding="utf-8")
    return copy


def test_a_tokenizer_without_padding_or_end_token_predicts_as_one_with_them(full_model: Path, tmp_path: Path) -> None:
    # The pad token fell back to the end token only: with neither, batching failed on None.
    from instructerc.data.dialogue import Dialogue, Utterance
    from instructerc.inference.predictor import Predictor

    bare = _without_special_tokens(full_model, tmp_path)
    dialogues = [
        Dialogue("d1", "", "test", (Utterance("Ann", "Hi!"), Utterance("Bob", "Great news, thanks!"))),
        Dialogue("d2", "", "test", (Utterance("Ann", "Oh no"),)),
    ]

    def labels(directory: Path) -> list:
        predictor = Predictor.from_directory(directory, dtype="float32")
        return [[(p.label, round(max(p.scores.values()), 5)) for p in found] for found in predictor.predict(dialogues)]

    assert labels(bare) == labels(full_model)


def test_a_full_disk_while_converting_the_embedded_model_is_one_clear_error(
    full_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # safetensors raises its own SafetensorError on a failed write, which escaped as a traceback.
    import transformers
    from safetensors import SafetensorError

    from instructerc.modeling import backbone as backbone_module

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(backbone_module, "embedded_gguf", lambda: gguf)
    model = transformers.LlamaForCausalLM.from_pretrained(str(full_model))
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(str(full_model))
    monkeypatch.setattr(backbone_module, "_from_gguf", lambda _: (model, tokenizer))

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(model, "save_pretrained", full_disk)
    cache = tmp_path / "cache"

    with pytest.raises(InputError, match="No space left on device") as error:
        backbone_module.converted_embedded_model(cache)

    assert error.value.path == str(cache / "models")
    assert list((cache / "models").iterdir()) == []  # no half-written conversion left behind


def _encoder_copy(tmp_path: Path, change: str) -> Path:
    """The embedded encoder's files, linked, with its weights cut short or its config changed."""
    import json

    from instructerc.retrieval.encoder import embedded_encoder_path

    source = embedded_encoder_path()
    copy = tmp_path / "encoder"
    copy.mkdir()
    for entry in source.iterdir():
        (copy / entry.name).symlink_to(entry)
    if change == "cut short":
        (copy / "model.safetensors").unlink()
        (copy / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes()[:100_000])
    else:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        (copy / "config.json").unlink()
        (copy / "config.json").write_text(json.dumps({**config, "intermediate_size": config["intermediate_size"] + 1}), encoding="utf-8")
    return copy


@pytest.mark.parametrize(("change", "message"), [("cut short", "corrupt or cut short"), ("other shapes", "another model's")])
def test_a_damaged_or_foreign_sentence_encoder_is_one_error_naming_it(tmp_path: Path, change: str, message: str) -> None:
    # The SafetensorError of a cut weights file and the RuntimeError of other shapes escaped as tracebacks.
    from instructerc.retrieval.encoder import SentenceEncoder

    folder = _encoder_copy(tmp_path, change)

    with pytest.raises(InputError, match=message) as error:
        SentenceEncoder.load(str(folder))

    assert error.value.path == str(folder)
