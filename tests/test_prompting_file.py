"""A damaged ``prompting.json`` is one line naming the file (and field), before the model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from instructerc.errors import InputError
from instructerc.modeling import model_dir
from instructerc.modeling.default_model import DEFAULT_MODEL_DIR
from instructerc.prompts.setup import PROMPTING_FILE, PromptSetup

DIALOGUE = {"id": "d", "utterances": [{"speaker": "Ann", "text": "Hi! How are you?"}]}
GOOD = json.loads((DEFAULT_MODEL_DIR / PROMPTING_FILE).read_text(encoding="utf-8"))


def edited(change: Callable[[dict[str, Any]], Any]) -> str:
    data = json.loads(json.dumps(GOOD))
    change(data)
    return json.dumps(data)


def set_at(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        data = data[key]
    data[keys[-1]] = value


def with_value(*keys: str, value: Any) -> str:
    return edited(lambda data: set_at(data, keys, value))


def without(key: str) -> str:
    return edited(lambda data: data.pop(key))


DUPLICATE = GOOD["label_set"]["labels"][0]

# (file content, the field named (None: none), a fragment of the message)
DAMAGED = {
    "truncated": ("{", None, "not valid JSON"),
    "empty": ("", None, "not valid JSON"),
    "not-an-object": ("[1, 2]", None, "expected an object of keys, got list"),
    "duplicate-label": (with_value("label_set", "labels", 1, value=DUPLICATE), "label_set", "duplicate labels"),
    "labels-a-string": (with_value("label_set", "labels", value="joyful"), "label_set.labels", "expected a list of strings"),
    "no-label-set": (without("label_set"), None, "missing required key(s) ['label_set']"),
    "max-length-zero": (with_value("max_length", value=0), "max_length", "positive number of tokens, not 0"),
    "max-length-negative": (with_value("max_length", value=-5), "max_length", "positive number of tokens"),
    "max-length-text": (with_value("max_length", value="512"), "max_length", "expected an integer"),
    "window-text": (with_value("template", "window", value="12"), "template.window", "expected an integer"),
    "unknown-template-key": (with_value("template", "colour", value="red"), "template", "unknown key(s) ['colour']"),
    "speaker-slots-negative": (with_value("speaker_slots", value=-1), "speaker_slots", ">= 0"),
    "speaker-variant": (with_value("speaker_variant", value="chat"), "speaker_variant", "unknown speaker_variant 'chat'"),
    "retrieval-policy": (with_value("retrieval", "policy", value="random"), "retrieval.policy", "unknown retrieval policy"),
}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, directory)
    return directory


def test_the_shipped_prompting_file_loads_as_before(model: Path) -> None:
    assert PromptSetup.load(model).to_dict() == GOOD


@pytest.mark.parametrize("case", DAMAGED, ids=list(DAMAGED))
def test_a_damaged_prompting_file_is_an_input_error_naming_file_and_field(model: Path, case: str) -> None:
    content, field, fragment = DAMAGED[case]
    (model / PROMPTING_FILE).write_text(content, encoding="utf-8")

    with pytest.raises(InputError) as error:
        PromptSetup.load(model)

    assert error.value.path == str(model / PROMPTING_FILE) and error.value.field == field
    assert fragment in error.value.message


def test_a_missing_prompting_file_is_named(model: Path) -> None:
    (model / PROMPTING_FILE).unlink()
    with pytest.raises(InputError, match="prompting.json: missing"):
        PromptSetup.load(model)


@pytest.mark.parametrize("case", ["truncated", "duplicate-label", "max-length-zero"])
def test_predict_refuses_a_damaged_prompting_file_before_the_model_loads(
    run_cli, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    content, field, fragment = DAMAGED[case]
    (model / PROMPTING_FILE).write_text(content, encoding="utf-8")
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(DIALOGUE) + "\n", encoding="utf-8")

    def load(*args, **kwargs):
        raise AssertionError("the model started loading")

    for name in ("load_tokenizer", "load_causal_lm", "resolve_model"):
        monkeypatch.setattr(model_dir, name, load)

    result = run_cli("predict", "--input", source, "--output", tmp_path / "out.jsonl", "--model", model, "--no-progress")

    assert result.code == 2
    [line] = result.err.splitlines()
    assert line.startswith(f"instructerc: error: {model / PROMPTING_FILE}") and fragment in line
    assert field is None or f"field '{field}'" in line
