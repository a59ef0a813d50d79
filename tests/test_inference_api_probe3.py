"""The inference API as a library user calls it (third probe): arguments of the wrong kind are
refused by name before anything runs, never read as something else or failed on deep inside."""

from __future__ import annotations

import copy

import pytest
import torch

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.inference.incremental import ConversationCache
from instructerc.inference.predictor import Predictor, check_mode
from instructerc.labels.benchmarks import MELD
from instructerc.labels.label_set import LabelSet
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir


def dialogue(n: int, name: str = "d") -> Dialogue:
    texts = ("Hi!", "Oh no, that is terrible.", "Great news!")
    return Dialogue(name, "user", "test", tuple(Utterance(("Ann", "Bob")[i % 2], texts[i % 3]) for i in range(n)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    template = TemplateConfig(name="dialogue-prefix", demonstration=False, window=3)
    return tiny_model_dir(tmp_path_factory.mktemp("model"), MELD, template)


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor.from_directory(model_dir, dtype="float32")


@pytest.mark.parametrize("flag", ["no", "false", 0, 1, None])
def test_paper_parsing_that_is_not_a_bool_is_refused_not_read_as_true(predictor, flag) -> None:
    # "no" is truthy: it used to switch the paper's repair on and snap invalid outputs to labels.
    with pytest.raises(InputError, match="field 'paper_parsing': paper_parsing must be True or False"):
        predictor.predict([dialogue(2)], mode="generate", paper_parsing=flag)
    with pytest.raises(InputError, match="paper_parsing must be True or False"):
        check_mode("score", flag)


@pytest.mark.parametrize(("cache", "kind"), [(None, "None"), ({}, "a dict"), ([], "a list")])
def test_a_cache_that_is_not_a_conversation_cache_is_refused_by_name(predictor, cache, kind) -> None:
    with pytest.raises(TypeError, match=rf"^cache must be a ConversationCache .*not {kind}"):
        predictor.predict_next(dialogue(2), cache)
    with pytest.raises(TypeError, match=rf"turns\[0\]\[1\] must be a ConversationCache .*not {kind}"):
        predictor.predict_turns([(dialogue(2), cache)])


def test_turns_that_are_not_pairs_are_refused_by_name(predictor) -> None:
    with pytest.raises(TypeError, match=r"turns\[1\] must be a \(Dialogue, ConversationCache\) pair, not a Dialogue"):
        predictor.predict_turns([(dialogue(1), ConversationCache()), dialogue(2)])
    with pytest.raises(TypeError, match="turns must be a list of"):
        predictor.predict_turns(dialogue(2))


def test_one_cache_for_two_turns_of_one_call_is_refused_and_left_as_it_was(predictor) -> None:
    cache = ConversationCache()
    predictor.predict_next(dialogue(2), cache)
    before = list(cache.ids)
    with pytest.raises(InputError, match=r"field 'turns\[1\]\[1\]': turns\[1\] reuses the cache of turns\[0\]"):
        predictor.predict_turns([(dialogue(3), cache), (dialogue(2, "other"), cache)])
    assert cache.ids == before
    expected = predictor.predict([dialogue(3)])[0][2]
    got = predictor.predict_next(dialogue(3), cache)
    for label in MELD.labels:
        assert got.scores[label] == pytest.approx(expected.scores[label], abs=1e-5)


def test_the_meta_device_is_refused_before_loading(model_dir) -> None:
    # It used to load, then fail at the first prediction: "Tensor.item() cannot be called on meta tensors".
    with pytest.raises(InputError, match="field 'device': device 'meta' holds no data"):
        Predictor.from_directory(model_dir, device="meta")


@pytest.mark.parametrize(("directory", "message"), [(None, "not None .*default_model_dir"), (3, "not an int")])
def test_a_directory_that_is_not_a_path_is_refused_by_name(directory, message) -> None:
    with pytest.raises(TypeError, match=f"directory must be a path to a model directory, {message}"):
        Predictor.from_directory(directory)


def test_a_live_conversation_of_a_one_label_model_gets_that_label(tmp_path) -> None:
    # One label is certain: no forward pass runs, and the first conversation's cache used to be
    # copied regardless ("'NoneType' object has no attribute 'clone'").
    one = LabelSet("one", ("neutral",), ("neutral",))
    model = tiny_model_dir(tmp_path / "model", one, TemplateConfig(name="dialogue-stream", demonstration=False))
    predictor = Predictor.from_directory(model, dtype="float32")
    cache = ConversationCache()
    for n in (1, 2):
        prediction = predictor.predict_next(dialogue(n), cache)
        assert prediction.label == "neutral" and prediction.scores == {"neutral": 1.0}
    assert predictor.predict_next(dialogue(1, "other"), ConversationCache()).label == "neutral"
    assert [p.label for p in predictor.predict([dialogue(2)])[0]] == ["neutral", "neutral"]


def test_a_cache_filled_by_another_model_is_not_continued(predictor, model_dir) -> None:
    # Same architecture, other weights: its keys and values used to be continued as if they
    # were this model's, and the scores came out silently wrong.
    other_model = copy.deepcopy(predictor.model)
    with torch.no_grad():
        for parameter in other_model.parameters():
            parameter.add_(torch.randn_like(parameter))
    other = Predictor(other_model, predictor.tokenizer, predictor.setup, config=predictor.config)
    cache = ConversationCache()
    for n in (1, 2):
        predictor.predict_next(dialogue(n), cache)
    got = other.predict_next(dialogue(3), cache)
    expected = other.predict([dialogue(3)])[0][2]
    for label in MELD.labels:
        assert got.scores[label] == pytest.approx(expected.scores[label], abs=1e-5)
    # The same weights in bf16: the float32 states used to fail deep inside attention.
    bf16 = Predictor.from_directory(model_dir, dtype="bfloat16")
    got = bf16.predict_next(dialogue(4), cache)
    expected = bf16.predict([dialogue(4)])[0][3]
    for label in MELD.labels:
        assert got.scores[label] == pytest.approx(expected.scores[label], abs=2e-2)
