"""Demonstration retrieval: no leakage from the query's own dialogue, the two policies, the cache.

Unit tests use a fake encoder (a hashed bag of words, so identical texts get identical vectors);
the slow test uses the real embedded all-MiniLM-L6-v2 on MELD.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.retrieval.index import DemonstrationIndex, RetrievalConfig, load_pool, save_pool
from instructerc.retrieval.retriever import DemonstrationRetriever


class FakeEncoder:
    """Unit vectors from a hashed bag of words; records what it was asked to encode."""

    name = "fake"

    def __init__(self, identity: str = "fake@1", dim: int = 32) -> None:
        self.identity = identity
        self.dim = dim
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
        self.calls.append(list(texts))
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


WORDS = "okay yeah what really great terrible cake phone money date party job coffee ross rachel".split()


def make_dialogues(split: str, count: int, seed: int) -> list[Dialogue]:
    """Dialogues whose utterances repeat each other (so without the mask a dialogue would mostly
    retrieve from itself) and repeat texts of other dialogues with other labels."""
    rng = random.Random(seed)
    dialogues = []
    for d in range(count):
        topic = rng.sample(WORDS, 3)
        utterances = []
        for i in range(5):
            if i == 4:
                text = "okay"  # in every dialogue, with varying labels
            else:
                text = " ".join(topic[: 1 + i % 3] + rng.sample(WORDS, 1))
            utterances.append(Utterance(f"S{i % 2}", text, rng.choice(MELD.labels)))
        dialogues.append(Dialogue(id=str(d), dataset="meld", split=split, utterances=tuple(utterances)))
    return dialogues


TRAIN = make_dialogues("train", 12, seed=1)
DEV = make_dialogues("dev", 4, seed=2)  # ids "0".."3", as train's: MELD numbers both from 0


def retriever(tmp_path: Path, policy: str = "nearest", dialogues=TRAIN, encoder: FakeEncoder | None = None) -> DemonstrationRetriever:
    config = RetrievalConfig(encoder="fake", policy=policy, cache_dir=str(tmp_path / "cache"))
    encoder = encoder or FakeEncoder()
    return DemonstrationRetriever(DemonstrationIndex.build(dialogues, encoder, config), encoder, config)


def keys(dialogues):
    return [(d.dataset, d.id, i) for d in dialogues for i in range(len(d))]


# --- leakage ------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["nearest", "same-label"])
@pytest.mark.parametrize("training", [True, False])
def test_no_demonstration_comes_from_the_querys_own_dialogue(tmp_path: Path, policy: str, training: bool) -> None:
    r = retriever(tmp_path, policy)
    found = r.neighbours(TRAIN, k=len(r.index), training=training)
    assert set(found) == set(keys(TRAIN))
    for (dataset, dialogue_id, _), hits in found.items():
        assert hits, "every train utterance has candidates in other dialogues"
        assert all(r.index.entries[e].dialogue_id != dialogue_id for e, _ in hits)
        if policy == "nearest" or not training:
            # everything outside the own dialogue is a candidate, ranked by cosine
            assert len(hits) == sum(1 for e in r.index.entries if e.dialogue_id != dialogue_id)
            scores = [s for _, s in hits]
            assert scores == sorted(scores, reverse=True)


def test_without_the_mask_a_train_query_would_find_itself(tmp_path: Path) -> None:
    # The reason for the mask: at training time the query is in the index, at cosine 1.
    r = retriever(tmp_path)
    plain = (r.embed([u.text for d in TRAIN for u in d.utterances]) @ r.index.embeddings.T).argmax(axis=1)
    query_dialogues = [d.id for d in TRAIN for _ in d.utterances]
    own = sum(r.index.entries[e].dialogue_id == q for e, q in zip(plain, query_dialogues))
    assert own > len(plain) // 2
    shown = r.demonstrations(TRAIN, training=True)
    assert all(shown[key].text for key in shown)
    assert len(shown) == len(keys(TRAIN))


def test_search_masks_across_chunk_boundaries(tmp_path: Path) -> None:
    r = retriever(tmp_path)
    texts = [u.text for d in TRAIN for u in d.utterances]
    groups = [(d.dataset, d.split, d.id) for d in TRAIN for _ in d.utterances]
    labels = [u.emotion for d in TRAIN for u in d.utterances]
    queries = r.embed(texts)
    whole = r.index.search(queries, groups, k=3, required_labels=labels)
    chunked = r.index.search(queries, groups, k=3, required_labels=labels, chunk=7)
    # The same neighbours; a matrix product in other blocks may round a score in its last bits.
    assert [[e for e, _ in hits] for hits in chunked] == [[e for e, _ in hits] for hits in whole]
    assert np.allclose([s for hits in chunked for _, s in hits], [s for hits in whole for _, s in hits], atol=1e-6)
    for hits, (_, _, dialogue_id), label in zip(chunked, groups, labels):
        assert all(r.index.entries[e].dialogue_id != dialogue_id and r.index.entries[e].label == label for e, _ in hits)


def test_queries_from_another_split_are_not_masked_by_a_shared_dialogue_id(tmp_path: Path) -> None:
    # Dev dialogue "0" is not train dialogue "0": its exact copy of a train utterance must be found.
    copied = TRAIN[0].utterances[1]
    dev = Dialogue(id="0", dataset="meld", split="dev", utterances=(Utterance("S0", copied.text, "neutral"),))
    r = retriever(tmp_path)
    [(entry, score)] = r.neighbours([dev], k=1)[("meld", "0", 0)]
    assert score == pytest.approx(1.0, abs=1e-3)  # the pool's embeddings are rounded to float16
    assert r.index.entries[entry].text == copied.text
    train_hits = r.neighbours([TRAIN[0]], k=len(r.index))[("meld", "0", 1)]
    assert all(r.index.entries[e].dialogue_id != "0" for e, _ in train_hits)


def test_dev_retrieval_under_nearest_is_the_plain_nearest_neighbour(tmp_path: Path) -> None:
    r = retriever(tmp_path)
    texts = [u.text for d in DEV for u in d.utterances]
    best = (r.embed(texts) @ r.index.embeddings.T).max(axis=1)
    found = r.neighbours(DEV, k=1)
    assert [found[key][0][1] for key in keys(DEV)] == pytest.approx(best.tolist())


# --- the two policies -----------------------------------------------------------------------------


def test_same_label_at_training_time_always_shows_the_gold(tmp_path: Path) -> None:
    same = retriever(tmp_path, "same-label").demonstrations(TRAIN, training=True)
    nearest = retriever(tmp_path, "nearest").demonstrations(TRAIN, training=True)
    gold = {key: u.emotion for key, u in zip(keys(TRAIN), (u for d in TRAIN for u in d.utterances))}
    candidates = {key: any(u.emotion == gold[key] for d in TRAIN if d.id != key[1] for u in d.utterances) for key in gold}
    assert set(same) == {key for key, has in candidates.items() if has}
    assert all(same[key].label == gold[key] for key in same)  # the leak: the answer is shown
    agree = sum(nearest[key].label == gold[key] for key in nearest)
    assert len(nearest) == len(gold) and agree < len(gold)
    assert agree / len(gold) < 0.5


def test_same_label_at_test_time_falls_back_to_nearest(tmp_path: Path) -> None:
    same = retriever(tmp_path, "same-label").demonstrations(DEV, training=False)
    nearest = retriever(tmp_path, "nearest").demonstrations(DEV, training=False)
    assert same == nearest and len(same) == len(keys(DEV))


def test_same_label_picks_the_most_similar_gold_labelled_utterance(tmp_path: Path) -> None:
    r = retriever(tmp_path, "same-label")
    found = r.neighbours(TRAIN, k=1, training=True)
    texts = [u.text for d in TRAIN for u in d.utterances]
    scores = r.embed(texts) @ r.index.embeddings.T
    for row, (key, u) in enumerate(zip(keys(TRAIN), (u for d in TRAIN for u in d.utterances))):
        allowed = [j for j, e in enumerate(r.index.entries) if e.label == u.emotion and e.dialogue_id != key[1]]
        if allowed:
            assert found[key][0][1] == pytest.approx(max(scores[row, j] for j in allowed), abs=1e-6)


def test_unknown_policy_is_an_input_error() -> None:
    with pytest.raises(InputError):
        RetrievalConfig(policy="oracle")


def test_an_index_needs_labelled_utterances(tmp_path: Path) -> None:
    unlabelled = [d.with_utterances(tuple(Utterance(u.speaker, u.text) for u in d.utterances)) for d in TRAIN]
    with pytest.raises(InputError):
        DemonstrationIndex.build(unlabelled, FakeEncoder(), RetrievalConfig(cache_dir=str(tmp_path)))


# --- the embedding cache ---------------------------------------------------------------------------


def test_the_cache_is_reused_and_rebuilt_when_texts_or_encoder_change(tmp_path: Path) -> None:
    config = RetrievalConfig(encoder="fake", cache_dir=str(tmp_path / "cache"))
    encoder = FakeEncoder()
    cold = DemonstrationIndex.build(TRAIN, encoder, config)
    assert not cold.was_cached and len(encoder.calls) == 1
    assert encoder.calls[0] == [u.text for d in TRAIN for u in d.utterances]

    warm = DemonstrationIndex.build(TRAIN, encoder, config)
    assert warm.was_cached and len(encoder.calls) == 1
    np.testing.assert_array_equal(warm.embeddings, cold.embeddings)
    assert warm.encoder_identity == "fake@1"

    # Labels do not change embeddings: reused, with the new labels.
    relabelled = [d.with_utterances(tuple(Utterance(u.speaker, u.text, "fear") for u in d.utterances)) for d in TRAIN]
    again = DemonstrationIndex.build(relabelled, encoder, config)
    assert again.was_cached and len(encoder.calls) == 1 and {e.label for e in again.entries} == {"fear"}

    edited = [TRAIN[0].with_utterances((Utterance("S0", "a brand new line", "joy"),) + TRAIN[0].utterances[1:])] + TRAIN[1:]
    changed = DemonstrationIndex.build(edited, encoder, config)
    assert not changed.was_cached and len(encoder.calls) == 2
    assert DemonstrationIndex.build(edited, encoder, config).was_cached

    other = FakeEncoder(identity="fake@2")
    rebuilt = DemonstrationIndex.build(TRAIN, other, config)
    assert not rebuilt.was_cached and len(other.calls) == 1
    assert len(list((tmp_path / "cache" / "embeddings").glob("*.npy"))) == 3


def test_query_embeddings_are_cached_too(tmp_path: Path) -> None:
    encoder = FakeEncoder()
    r = retriever(tmp_path, encoder=encoder)
    first = r.demonstrations(DEV)
    calls = len(encoder.calls)
    assert r.demonstrations(DEV) == first and len(encoder.calls) == calls


def test_a_saved_pool_keeps_the_exclusion(tmp_path: Path) -> None:
    r = retriever(tmp_path)
    save_pool(r.index, tmp_path)
    loaded = load_pool(tmp_path)
    assert [(e.dataset, e.split, e.dialogue_id, e.index, e.text, e.label) for e in loaded.entries] == [
        (e.dataset, e.split, e.dialogue_id, e.index, e.text, e.label) for e in r.index.entries
    ]
    reloaded = DemonstrationRetriever(loaded, r.encoder, r.config)
    assert reloaded.demonstrations(DEV) == r.demonstrations(DEV)
    assert reloaded.demonstrations(TRAIN, training=True) == r.demonstrations(TRAIN, training=True)


def test_a_pool_saved_without_splits_loads_as_train(tmp_path: Path) -> None:
    r = retriever(tmp_path)
    save_pool(r.index, tmp_path)
    lines = (tmp_path / "demonstrations.jsonl").read_text(encoding="utf-8").splitlines()
    old = [lines[0]] + [json.dumps({k: v for k, v in json.loads(line).items() if k != "split"}) for line in lines[1:]]
    (tmp_path / "demonstrations.jsonl").write_text("\n".join(old) + "\n", encoding="utf-8")
    assert {e.split for e in load_pool(tmp_path).entries} == {"train"}


# --- the real encoder on MELD (slow) ------------------------------------------------------------------


@pytest.mark.slow
def test_meld_dev_nearest_demonstrations_agree_no_more_than_the_plain_nearest_neighbour(data_root: Path, tmp_path_factory) -> None:
    from instructerc.data.registry import DataSource, load_dialogues

    source = DataSource("meld", data_root)
    train, dev = load_dialogues(source, "train"), load_dialogues(source, "dev")
    config = RetrievalConfig(cache_dir=str(tmp_path_factory.mktemp("retrieval-cache")))
    r = DemonstrationRetriever.build(train, config)
    assert len(r.index) == sum(len(d) for d in train) == 9989

    utterances = [u for d in dev for u in d.utterances]
    gold = np.array([u.emotion for u in utterances])
    labels = np.array([e.label for e in r.index.entries])
    scores = r.embed([u.text for u in utterances]) @ r.index.embeddings.T
    found = r.neighbours(dev, k=1)
    chosen = [found[key][0] for key in keys(dev)]
    # Dev dialogues are not in the train index, so nothing is masked: every demonstration is a
    # nearest neighbour. (Identical train texts tie; any of them may be the one shown.)
    best = scores.max(axis=1)
    assert [s for _, s in chosen] == pytest.approx(best.tolist(), abs=1e-5)
    tops = scores >= best[:, None] - 1e-5
    demo_rate = np.mean(labels[[e for e, _ in chosen]] == gold)
    plain_rate = np.mean(labels[scores.argmax(axis=1)] == gold)
    hits = tops & (labels[None, :] == gold[:, None])
    some_top_agrees = np.mean(hits.any(axis=1))  # the plain nearest neighbour at its luckiest tie-break
    every_top_agrees = np.mean(hits.sum(axis=1) == tops.sum(axis=1))  # ... and at its unluckiest
    print(
        f"\nMELD dev ({len(gold)} utterances): nearest-policy demonstration label == gold {demo_rate:.4f}; "
        f"plain nearest neighbour {plain_rate:.4f} (first of ties; {every_top_agrees:.4f}..{some_top_agrees:.4f} over tie-breaks; "
        f"{np.mean(tops.sum(axis=1) > 1):.4f} of queries tie)"
    )
    assert demo_rate <= some_top_agrees
    assert every_top_agrees <= demo_rate


class TableEncoder(FakeEncoder):
    """Fixed vectors per text, for scores closer than float16 can tell apart."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        super().__init__("table@1", dim=3)
        self.table = table

    def encode(self, texts: list[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
        vectors = np.array([self.table[t] for t in texts], dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_a_saved_model_shows_the_demonstrations_it_was_trained_with(tmp_path: Path) -> None:
    # "b" is the closer to the query in float32, but the pool is stored in float16, where both
    # round to the same score: training must search what the saved model will search.
    table = {"query": [1.0, 0.0, 0.0], "a": [0.99985, 0.01732, 0.0], "b": [0.99990, 0.0, 0.01414]}
    pool = [
        Dialogue("1", "meld", "train", (Utterance("S0", "a", "joy"),)),
        Dialogue("2", "meld", "train", (Utterance("S0", "b", "sadness"),)),
    ]
    query = [Dialogue("9", "meld", "dev", (Utterance("S0", "query", "neutral"),))]
    trained = retriever(tmp_path, dialogues=pool, encoder=TableEncoder(table))
    save_pool(trained.index, tmp_path / "model")
    saved = DemonstrationRetriever(load_pool(tmp_path / "model"), trained.encoder, trained.config)
    assert saved.demonstrations(query) == trained.demonstrations(query)


def test_equal_scores_pick_the_earliest_entry() -> None:
    from instructerc.retrieval.index import _top

    scores = np.array([0.5, 0.9, 0.2, 0.9, 0.9, -np.inf], dtype=np.float32)
    assert _top(scores, 1) == [1]
    assert _top(scores, 2) == [1, 3]
    assert _top(scores, 4) == [1, 3, 4, 0]
    assert _top(scores, 10) == [1, 3, 4, 0, 2, 5]


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"batch_size": 2.5}, "retrieval.batch_size"),
        ({"batch_size": True}, "retrieval.batch_size"),
        ({"encoder": None}, "retrieval.encoder"),
        ({"policy": 1}, "retrieval.policy"),
        ({"cache_dir": 5}, "retrieval.cache_dir"),
    ],
)
def test_a_retrieval_setting_of_the_wrong_type_is_refused_naming_it(fields, field) -> None:
    from instructerc.errors import InputError
    from instructerc.retrieval.index import RetrievalConfig

    with pytest.raises(InputError) as caught:
        RetrievalConfig(**fields)
    assert caught.value.field == field
