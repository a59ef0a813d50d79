"""The store of live conversations' key/value caches: bounded in bytes, least recently used first out."""

from __future__ import annotations

import pytest
import torch

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.inference.incremental import CacheStore, ConversationCache
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir


def cache_of(tokens: int, layers: int = 2) -> ConversationCache:
    return ConversationCache(list(range(tokens)), torch.zeros(layers, 2, 1, tokens, 4))


def test_the_store_evicts_the_least_recently_used_to_stay_under_its_bound():
    size = cache_of(10).nbytes
    store = CacheStore(max_bytes=3 * size)
    for key in "abc":
        store.put(key, cache_of(10))
    store.put("a", store.take("a"))  # a is now the most recently used
    store.put("d", cache_of(10))
    assert store.take("b").tokens == 0  # evicted: a fresh cache
    assert store.take("a").tokens == 10
    assert store.nbytes <= 3 * size and store.evictions == 1


def test_a_cache_larger_than_the_bound_is_not_kept_and_discard_frees_its_bytes():
    store = CacheStore(max_bytes=cache_of(10).nbytes)
    store.put("big", cache_of(11))
    assert len(store) == 0 and store.nbytes == 0
    store.put("a", cache_of(10))
    store.discard("a")
    assert len(store) == 0 and store.nbytes == 0


def test_cropping_keeps_only_the_first_tokens():
    cache = cache_of(10)
    cache.crop(4)
    assert cache.tokens == 4 and cache.states.shape == (2, 2, 1, 4, 4)
    cache.crop(0)
    assert cache.tokens == 0 and cache.nbytes == 0


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    template = TemplateConfig(name="dialogue-stream", demonstration=False)
    return Predictor.from_directory(tiny_model_dir(tmp_path_factory.mktemp("model"), MELD, template))


def conversation(key: int, turns: int) -> Dialogue:
    return Dialogue(f"c{key}", "user", "test", tuple(Utterance("AB"[i % 2], f"Turn {i} of talk {key}.") for i in range(turns)))


def test_a_thousand_conversations_stay_under_the_bound_and_evicted_ones_score_the_same(predictor):
    store = CacheStore(max_bytes=2_000_000)
    first = {}
    for key in range(1000):
        cache = store.take(str(key))
        first[key] = predictor.predict_turns([(conversation(key, 2), cache)])[0]
        store.put(str(key), cache)
        assert store.nbytes <= store.max_bytes
    assert store.evictions > 0 and 0 < len(store) < 1000
    evicted = store.take("0")
    assert evicted.tokens == 0  # the oldest was evicted: its next turn is scored from its text
    again = predictor.predict_turns([(conversation(0, 3), evicted)])[0]
    expected = predictor.predict_at([(conversation(0, 3), 2)])[0]
    for label in MELD.labels:
        assert again.scores[label] == pytest.approx(expected.scores[label], abs=1e-5)
