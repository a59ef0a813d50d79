"""The Python API as README.md shows it: its example run on a tiny model in the fast suite, the
error types it documents, and the package docstring that says where the API lives."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

import instructerc
from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.inference.incremental import ConversationCache
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_block() -> str:
    [block] = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    return block


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    # The shipped model's template, so the example's live turns go through the key/value cache.
    return tiny_model_dir(tmp_path_factory.mktemp("model"), MELD, TemplateConfig(name="dialogue-stream", demonstration=False))


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.from_directory(model_dir, device="cpu", dtype="float32")


def test_the_readme_example_runs_as_written_and_its_live_turns_equal_predict(model_dir: Path, monkeypatch, capsys) -> None:
    # The slow suite runs it on the shipped model; here it runs on every change, on a tiny one.
    monkeypatch.setattr("instructerc.modeling.default_model.default_model_dir", lambda: model_dir)
    namespace: dict[str, Any] = {}
    exec(compile(readme_python_block(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.split()
    predictions, dialogue, predictor = namespace["predictions"], namespace["dialogue"], namespace["predictor"]
    assert len(predictions) == len(dialogue.utterances)
    assert printed == [p.label for p in predictions]
    # README: "about 1e-6 in float32" (the tests' CPU has no native bf16, so auto is float32).
    assert predictor.precision == "float32"
    cache, turns = ConversationCache(), ()
    for utterance, whole in zip(dialogue.utterances, predictions):
        turns += (utterance,)
        live = predictor.predict_next(Dialogue("live", "", "test", turns), cache)
        assert live.scores == pytest.approx(whole.scores, abs=1e-5)
        assert sum(live.scores.values()) == pytest.approx(1, abs=1e-5)


def test_the_field_the_readme_quotes_is_the_one_an_empty_text_is_named_by(predictor: Predictor) -> None:
    dialogue = Dialogue("d1", "", "test", (Utterance("Ann", "Hi!"), Utterance("Bob", "   ")))
    with pytest.raises(InputError) as refused:
        predictor.predict([dialogue])
    assert "field 'dialogues[0].utterances[1].text'" in str(refused.value)
    assert "`dialogues[0].utterances[1].text`" in README.read_text(encoding="utf-8")


DIALOGUE = Dialogue("d1", "", "test", (Utterance("Ann", "Hi!"), Utterance("Bob", "Oh no.")))

WRONG_KINDS: list[tuple[str, Callable[[Predictor], Any]]] = [
    ("one Dialogue, not a list", lambda p: p.predict(DIALOGUE)),
    ("a string", lambda p: p.predict("Ann: Hi!")),
    ("a dict for a dialogue", lambda p: p.predict([{"id": "d1", "utterances": []}])),
    ("utterances as a dict", lambda p: p.predict([Dialogue("d", "", "test", {"Ann": "Hi!"})])),
    ("a (speaker, text) tuple for an Utterance", lambda p: p.predict([Dialogue("d", "", "test", (("Ann", "Hi!"),))])),
    ("a speaker that is no string", lambda p: p.predict([Dialogue("d", "", "test", (Utterance(7, "Hi!"),))])),
    ("an id of None", lambda p: p.predict([Dialogue(None, "", "test", DIALOGUE.utterances)])),
    ("a dict for a cache", lambda p: p.predict_next(DIALOGUE, {})),
    ("a list of dialogues to predict_next", lambda p: p.predict_next([DIALOGUE], ConversationCache())),
]


@pytest.mark.parametrize("call", [call for _, call in WRONG_KINDS], ids=[name for name, _ in WRONG_KINDS])
def test_an_argument_of_the_wrong_kind_raises_type_error_as_documented(predictor: Predictor, call) -> None:
    with pytest.raises(TypeError) as refused:
        call(predictor)
    assert not isinstance(refused.value, ValueError)


REFUSED_VALUES: list[tuple[str, Callable[[Predictor], Any], str]] = [
    ("an empty text", lambda p: p.predict([Dialogue("d", "", "test", (Utterance("Ann", ""),))]), "dialogues[0].utterances[0].text"),
    ("an unknown mode", lambda p: p.predict([DIALOGUE], mode="Score"), "mode"),
    ("an index outside the dialogue", lambda p: p.predict_at([(DIALOGUE, 2)]), "index"),
    ("an empty live conversation", lambda p: p.predict_next(Dialogue("d", "", "test", ()), ConversationCache()), "dialogue.utterances"),
    (
        "a speaker breaking the line",
        lambda p: p.predict_next(Dialogue("d", "", "test", (Utterance("A\nB", "Hi!"),)), ConversationCache()),
        "dialogue.utterances[0].speaker",
    ),
]


@pytest.mark.parametrize(("call", "field"), [(c, f) for _, c, f in REFUSED_VALUES], ids=[name for name, _, _ in REFUSED_VALUES])
def test_a_refused_value_raises_input_error_naming_the_field(predictor: Predictor, call, field: str) -> None:
    with pytest.raises(InputError) as refused:
        call(predictor)
    assert isinstance(refused.value, ValueError)  # README: "a ValueError whose message names the field"
    assert refused.value.field == field and f"field '{field}'" in str(refused.value)


@pytest.mark.parametrize(("settings", "field"), [({"dtype": "fp32"}, "dtype"), ({"device": "gpu"}, "device")])
def test_from_directory_refuses_an_unknown_dtype_or_device_as_input_error(model_dir: Path, settings, field: str) -> None:
    with pytest.raises(InputError) as refused:
        Predictor.from_directory(model_dir, **settings)
    assert refused.value.field == field


def test_every_name_the_package_docstring_points_to_exists() -> None:
    named = re.findall(r"`(instructerc(?:\.\w+)+)`", instructerc.__doc__ or "")
    assert len(named) >= 6
    for dotted in named:
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), dotted


def test_importing_the_package_imports_none_of_its_modules() -> None:
    # The docstring says where the API lives because the package imports nothing itself.
    script = "import sys, instructerc; print(sorted(m for m in sys.modules if m.startswith('instructerc.')))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_directory_is_refused_not_read_as_the_working_directory(empty, tmp_path, monkeypatch) -> None:
    from instructerc.errors import InputError
    from instructerc.inference.predictor import Predictor

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="an empty path") as caught:
        Predictor.from_directory(empty)
    assert caught.value.field == "directory"
