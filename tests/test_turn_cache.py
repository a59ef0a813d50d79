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


def test_turns_are_written_after_the_earlier_ones_and_shared_states_are_never_written():
    shared = torch.arange(2 * 2 * 1 * 6 * 4, dtype=torch.float32).reshape(2, 2, 1, 6, 4)
    before = shared.clone()
    cache = ConversationCache(range(6), shared)
    cache.crop(3)
    cache.extend([7, 8], torch.full((2, 2, 1, 2, 4), -1.0))  # a copy of its own, with room to grow
    assert torch.equal(shared, before)
    assert cache.ids == [0, 1, 2, 7, 8] and torch.equal(cache.states[:, :, :, :3], before[:, :, :, :3])
    room = cache.nbytes
    storage = cache.states.data_ptr()
    cache.extend([9], torch.full((2, 2, 1, 1, 4), -2.0))
    assert cache.states.data_ptr() == storage and cache.nbytes == room  # written in place, nothing copied
    assert cache.states.shape == (2, 2, 1, 6, 4) and cache.states[0, 0, 0, 5, 0] == -2.0
    cache.crop(4)
    cache.extend([5, 6], torch.zeros(2, 2, 1, 2, 4))
    assert cache.ids == [0, 1, 2, 7, 5, 6] and cache.states[0, 0, 0, 3, 0] == -1.0 and cache.states[0, 0, 0, 4, 0] == 0.0


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


def test_a_new_conversation_starts_from_what_an_earlier_one_computed(predictor, monkeypatch):
    import instructerc.inference.incremental as incremental

    fresh = Predictor(predictor.model, predictor.tokenizer, predictor.setup, device="cpu")
    rows = []
    forward = incremental._forward
    monkeypatch.setattr(incremental, "_forward", lambda model, batch, *rest: rows.extend(batch) or forward(model, batch, *rest))
    fresh.predict_turns([(conversation(1, 1), ConversationCache())])
    assert rows[0].shared == 0  # the first conversation is computed from scratch
    rows.clear()
    second = fresh.predict_turns([(conversation(2, 1), ConversationCache())])[0]
    prompt = fresh.encoded_prompts([(conversation(2, 1), 0)])[0].prompt_ids
    assert 0 < rows[0].shared < len(prompt) and rows[0].shared + rows[0].prompt_new == len(prompt)
    expected = fresh.predict_at([(conversation(2, 1), 0)])[0]
    assert second.label == expected.label
    for label in expected.scores:
        assert second.scores[label] == pytest.approx(expected.scores[label], abs=1e-5)


def _row(turn: int, shared: int, new: int) -> object:
    return incremental_row(turn, ConversationCache(), shared, tuple(range(new)), new)


def incremental_row(*fields):
    from instructerc.inference.incremental import _Row

    return _Row(*fields)


def test_turns_of_very_different_lengths_go_in_separate_passes_and_similar_ones_together():
    from instructerc.inference.incremental import _chunks

    # Two fresh conversations' whole prompts among twelve next utterances: padding every row to
    # 76 tokens costs more than a pass of its own.
    mixed = [_row(t, 0, 76) for t in range(2)] + [_row(t, 120, 17) for t in range(2, 14)]
    assert sorted(sorted(c) for c in _chunks(mixed, 16384)) == [[0, 1], list(range(2, 14))]
    similar = [_row(t, 100 + t, 15 + t % 4) for t in range(14)]
    assert _chunks(similar, 16384) == [sorted(range(14), key=lambda i: (15 + i % 4, 100 + i))]
    # A turn with two rows (two branch points of the label trie) stays in one pass; the budget splits.
    branched = [_row(0, 50, 10), _row(0, 50, 12), _row(1, 60, 11), _row(1, 60, 13)]
    assert _chunks(branched, 4 * 73) == [[0, 1, 2, 3]]  # (13 new + 60 cached) x 4 rows: just fits
    chunks = _chunks(branched, 4 * 73 - 1)
    assert sorted(sorted(c) for c in chunks) == [[0, 1], [2, 3]]
    assert all(len(c) for c in _chunks(branched, 1))


def test_the_shared_start_stays_intact_when_the_conversation_it_came_from_is_rewritten(predictor):
    fresh = Predictor(predictor.model, predictor.tokenizer, predictor.setup, device="cpu")
    first = ConversationCache()
    fresh.predict_turns([(conversation(1, 1), first)])
    # The same conversation with its first line edited: its cache is cut back to the instruction
    # and the new line written over the positions the shared start still holds.
    edited = Dialogue("c1", "user", "test", (Utterance("B", "Something else entirely, said much later."),))
    fresh.predict_turns([(edited, first)])
    later = fresh.predict_turns([(conversation(3, 1), ConversationCache())])[0]
    expected = fresh.predict_at([(conversation(3, 1), 0)])[0]
    for label in expected.scores:
        assert later.scores[label] == pytest.approx(expected.scores[label], abs=1e-5)


def test_turns_split_over_workers_keep_each_turn_whole_and_every_turn_once():
    from instructerc.inference.incremental import _split_for_workers

    rows = [_row(0, 50, 10), _row(0, 50, 12)] + [_row(t, 60, 11) for t in range(1, 6)]
    halves = _split_for_workers([list(range(7))], rows, 2)
    assert len(halves) == 2 and sorted(i for h in halves for i in h) == list(range(7))
    assert [{rows[i].turn for i in h} for h in halves] == [{0, 1, 2}, {3, 4, 5}]
    assert _split_for_workers([[0, 1]], rows, 2) == [[0, 1]]  # one turn: nothing to split
    assert len(_split_for_workers([[2], [3, 4, 5, 6]], rows, 3)) == 3


def _noted(threads: set[int], workers: int) -> None:
    """Notes the thread a pass runs on. Under two workers the pass also lingers a moment: a pool
    makes its second thread only when its first is busy, and on a loaded machine the first could
    finish a tiny model's pass before the second was handed out, so both ran on one thread."""
    import threading
    import time

    threads.add(threading.get_ident())
    if workers > 1:
        time.sleep(0.05)


def test_turns_scored_on_two_workers_equal_one_worker_and_leave_the_same_caches(predictor, monkeypatch):

    import instructerc.inference.incremental as incremental
    from instructerc.inference.predictor import InferenceConfig

    threads: dict[int, set[int]] = {1: set(), 2: set()}
    forward = incremental._forward
    results, caches = {}, {}
    for workers in (1, 2):
        monkeypatch.setattr(incremental, "_forward", lambda *args: _noted(threads[workers], workers) or forward(*args))
        fresh = Predictor(predictor.model, predictor.tokenizer, predictor.setup, device="cpu", config=InferenceConfig(workers=workers))
        live = [ConversationCache() for _ in range(5)]
        for turns in (1, 2, 3):
            out = fresh.predict_turns([(conversation(key, turns + key % 2), live[key]) for key in range(5)])
        results[workers], caches[workers] = out, live
    for one, two in zip(results[1], results[2]):
        assert one.label == two.label
        for label in one.scores:
            assert two.scores[label] == pytest.approx(one.scores[label], abs=1e-5)
    for one, two in zip(caches[1], caches[2]):
        assert one.ids == two.ids and torch.allclose(one.states, two.states, atol=1e-5)
    assert len(threads[1]) == 1 and len(threads[2]) >= 2  # passes side by side, off the calling thread
    expected = predictor.predict_at([(conversation(4, 3), 2)])[0]
    assert results[2][4].scores == pytest.approx(expected.scores, abs=1e-5)


def test_a_conversation_scored_alone_writes_its_turns_in_its_own_buffer_with_the_same_scores(predictor, monkeypatch):
    import instructerc.inference.incremental as incremental

    fresh = Predictor(predictor.model, predictor.tokenizer, predictor.setup, device="cpu")
    in_place = []
    own = incremental._own_buffer_cache
    monkeypatch.setattr(
        incremental, "_own_buffer_cache", lambda row, *rest: in_place.append(row.cache.buffer.data_ptr()) or own(row, *rest)
    )
    cache = ConversationCache()
    for turns in range(1, 7):
        got = fresh.predict_next(conversation(5, turns), cache)
        expected = fresh.predict_at([(conversation(5, turns), turns - 1)])[0]
        for label in expected.scores:
            assert got.scores[label] == pytest.approx(expected.scores[label], abs=1e-5)
    assert in_place  # later turns were written where the cache keeps them: no batch copy
    assert cache.ids == list(fresh.encoded_prompts([(conversation(5, 6), 5)])[0].prompt_ids)


def test_a_pass_that_fails_in_place_leaves_a_consistent_shorter_cache(predictor, monkeypatch):
    import instructerc.inference.incremental as incremental

    fresh = Predictor(predictor.model, predictor.tokenizer, predictor.setup, device="cpu")
    cache = ConversationCache()
    for turns in (1, 2):
        fresh.predict_next(conversation(6, turns), cache)
    monkeypatch.setattr(incremental, "pair_logits", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("out of memory")))
    with pytest.raises(RuntimeError):
        fresh.predict_next(conversation(6, 3), cache)
    monkeypatch.undo()
    assert cache.tokens <= len(fresh.encoded_prompts([(conversation(6, 2), 1)])[0].prompt_ids)
    again = fresh.predict_next(conversation(6, 3), cache)
    expected = fresh.predict_at([(conversation(6, 3), 2)])[0]
    for label in expected.scores:
        assert again.scores[label] == pytest.approx(expected.scores[label], abs=1e-5)
