"""predict_next names its own arguments; a hand-built Dialogue names its benchmark as a file does."""

from __future__ import annotations

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.inference.incremental import ConversationCache
from instructerc.inference.predictor import Predictor, checked_dialogue
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    template = TemplateConfig(name="dialogue-stream", demonstration=False)
    return Predictor.from_directory(tiny_model_dir(tmp_path_factory.mktemp("model"), MELD, template))


def talk(*texts: str, dataset: str = "user") -> Dialogue:
    return Dialogue("c1", dataset, "test", tuple(Utterance("AB"[i % 2], t) for i, t in enumerate(texts)))


def test_predict_next_names_its_own_arguments(predictor: Predictor) -> None:
    with pytest.raises(TypeError, match=r"^cache must be a ConversationCache"):
        predictor.predict_next(talk("Hi."), {})
    with pytest.raises(TypeError, match=r"^dialogue must be a Dialogue"):
        predictor.predict_next("Hi.", ConversationCache())
    with pytest.raises(InputError) as empty:
        predictor.predict_next(talk(), ConversationCache())
    assert empty.value.field == "dialogue.utterances"
    with pytest.raises(InputError) as blank:
        predictor.predict_next(talk("Hi.", "   "), ConversationCache())
    assert blank.value.field == "dialogue.utterances[1].text"


@pytest.mark.parametrize("spelling", ["MELD", " meld", "Meld\u200b", "ＭＥＬＤ"])
def test_a_hand_built_dialogue_naming_a_benchmark_in_another_spelling_is_that_benchmark(spelling: str, predictor: Predictor) -> None:
    assert checked_dialogue(talk("Hi.", dataset=spelling), "dialogue").dataset == "meld"
    assert checked_dialogue(talk("Hi.", dataset="My Corpus"), "dialogue").dataset == "My Corpus"
    named = predictor.predict([talk("Hi.", "Oh no!", dataset=spelling)])[0]
    as_file_reads_it = predictor.predict([talk("Hi.", "Oh no!", dataset="meld")])[0]
    assert [p.label for p in named] == [p.label for p in as_file_reads_it]
