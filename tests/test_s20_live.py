"""Live conversations from key/value caches, probed against whole-dialogue prediction: a cache
started from another conversation's states, caches given malformed states, and a batch failing
in a later forward pass."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.inference.incremental import ConversationCache, score_turns
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir

SAID = ["Hi there.", "How are you?", "Fine, thanks.", "Great news!", "Oh no."]
EDITED = ["Hi there.", "Something else entirely now.", "Yes.", "No."]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    template = TemplateConfig(name="dialogue-stream", demonstration=False)
    directory = tiny_model_dir(tmp_path_factory.mktemp("s20-live") / "model", MELD, template)
    return Predictor.from_directory(directory, device="cpu", dtype="float32")


def conversation(texts: list[str]) -> Dialogue:
    return Dialogue("live", "", "test", tuple(Utterance("AB"[i % 2], text) for i, text in enumerate(texts)))


def assert_as_whole(predictor: Predictor, got: Any, texts: list[str]) -> None:
    [expected] = predictor.predict_at([(conversation(texts), len(texts) - 1)])
    assert got.label == expected.label
    assert max(abs(got.scores[k] - expected.scores[k]) for k in expected.scores) < 1e-5


def grown(predictor: Predictor, turns: int) -> ConversationCache:
    cache = ConversationCache()
    for n in range(1, turns + 1):
        predictor.predict_next(conversation(SAID[:n]), cache)
    return cache


# -- a cache started from another conversation's states ----------------------------------------------
# The states were shared, not copied: the conversation they came from wrote its later turns in
# place, and once it was edited (or its history cut past max_length) it rewrote positions the
# other cache still read as its own, which then scored silently wrong labels.
@pytest.mark.parametrize("how", ["constructor", "setter"])
def test_a_cache_started_from_another_keeps_its_states_when_the_other_is_rewritten(predictor: Predictor, how: str) -> None:
    source = grown(predictor, 3)
    if how == "constructor":
        started = ConversationCache(source.ids, source.states)
    else:
        started = ConversationCache()
        started.ids, started.states = list(source.ids), source.states
    kept = started.states.clone()

    predictor.predict_next(conversation(EDITED), source)  # diverges at turn 1: rewritten from there

    assert torch.equal(started.states, kept)
    assert_as_whole(predictor, predictor.predict_next(conversation(SAID[:4]), started), SAID[:4])
    assert_as_whole(predictor, predictor.predict_next(conversation(EDITED + ["Fine."]), source), EDITED + ["Fine."])


def test_a_cache_started_from_another_does_not_write_into_it(predictor: Predictor) -> None:
    source = grown(predictor, 3)
    before = source.states.clone()
    started = ConversationCache(source.ids, source.states)
    predictor.predict_next(conversation(EDITED), started)
    assert torch.equal(source.states, before)
    assert_as_whole(predictor, predictor.predict_next(conversation(SAID[:4]), source), SAID[:4])


def test_a_fork_continued_both_ways_scores_both_as_whole(predictor: Predictor) -> None:
    source = grown(predictor, 3)
    fork = copy.copy(source)
    predictor.predict_next(conversation(EDITED), source)
    assert_as_whole(predictor, predictor.predict_next(conversation(SAID[:5]), fork), SAID[:5])


# -- malformed states ---------------------------------------------------------------------------------
# Each failed deep inside scoring: 'NoneType' object has no attribute 'shape', a tensor size
# mismatch in a copy, or "not enough values to unpack".
def test_token_ids_without_states_are_refused_when_the_cache_is_made(predictor: Predictor) -> None:
    source = grown(predictor, 2)
    with pytest.raises(ValueError, match=r"needs their keys and values \(states\)"):
        ConversationCache(source.ids)


@pytest.mark.parametrize(
    ("states", "error", "message"),
    [
        (lambda s: s.states[:, :, :, :5], ValueError, "states hold 5 positions, fewer than the"),
        (lambda s: s.states[0], ValueError, r"states must be a tensor \[layers, 2, kv_heads, tokens, head_dim\]"),
        (lambda s: [1, 2], TypeError, "states must be a tensor .* not list"),
    ],
    ids=["too-short", "four-dimensions", "a-list"],
)
def test_states_that_cannot_be_a_cache_are_refused_naming_the_fault(predictor: Predictor, states: Any, error: type, message: str) -> None:
    source = grown(predictor, 2)
    with pytest.raises(error, match=message):
        ConversationCache(source.ids, states(source))


@pytest.mark.parametrize("ids", ["abc", [1.5, 2.0], [None]])
def test_ids_that_are_not_token_ids_are_refused(ids: Any) -> None:
    with pytest.raises(TypeError, match="ids must be a sequence of token ids"):
        ConversationCache(ids, torch.zeros(2, 2, 1, 3, 4))


def test_states_longer_than_the_ids_are_kept_to_the_ids() -> None:
    cache = ConversationCache([1, 2], torch.arange(2 * 2 * 1 * 5 * 4, dtype=torch.float32).reshape(2, 2, 1, 5, 4))
    assert cache.tokens == 2 and cache.states.shape == (2, 2, 1, 2, 4)


# -- a batch failing in a later pass ----------------------------------------------------------------
# The model that computed a cache's states was recorded after every pass of the batch had run:
# a failure in a later pass left the caches of the earlier passes with their new states and no
# model, and another model then continued them without a word, scoring wrong labels.
def test_caches_of_a_pass_before_a_failed_one_are_refused_by_another_model(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    import instructerc.inference.incremental as incremental

    fresh = Predictor(predictor.model, predictor.tokenizer, predictor.setup, device="cpu")
    other_model = copy.deepcopy(predictor.model)
    with torch.no_grad():
        for parameter in other_model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    other = Predictor(other_model, predictor.tokenizer, predictor.setup, device="cpu")

    caches = [ConversationCache(), ConversationCache()]
    prompts = [e.prompt_ids for e in fresh.encoded_prompts([(conversation(SAID[:1]), 0), (conversation(SAID[:3]), 2)])]
    forward, calls = incremental._forward, []

    def failing_second(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return forward(*args)

    monkeypatch.setattr(incremental, "_forward", failing_second)
    with pytest.raises(RuntimeError, match="out of memory"):
        score_turns(fresh.model, fresh.scorer, list(zip(caches, prompts)), "cpu", batch_tokens=1)  # one pass per turn
    monkeypatch.undo()

    [stored] = [cache for cache in caches if cache.tokens]  # the first pass stored its turn
    texts = SAID[:1] if len(stored.ids) == len(prompts[0]) else SAID[:3]
    continued = texts + ["And then?"]
    got = other.predict_next(conversation(continued), stored)
    [expected] = other.predict_at([(conversation(continued), len(continued) - 1)])
    assert max(abs(got.scores[k] - expected.scores[k]) for k in expected.scores) < 1e-5
