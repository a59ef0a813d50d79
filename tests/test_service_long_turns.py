"""Live conversations agree with whole-dialogue prediction also around what the service must cut
or forget: an utterance over the prompt budget, a conversation deleted while its turn is scored."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import torch

from instructerc.inference.incremental import CacheStore, ConversationCache
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from instructerc.service.config import ServiceConfig
from instructerc.service.store import ConversationStore
from test_service import serving
from tiny import tiny_model_dir

LONG = ("I cannot believe what happened at the market this morning, " * 30).strip()  # over the tiny model's budget
DIALOGUE = [
    {"speaker": "Ann", "text": "Hi, how are you?"},
    {"speaker": "Bob", "text": "Not great, honestly."},
    {"speaker": "Ann", "text": LONG},
    {"speaker": "Bob", "text": "Wow, calm down."},
    {"speaker": "Ann", "text": "Sorry. I'm just upset."},
    {"speaker": "Bob", "text": "It's fine, I get it."},
]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    template = TemplateConfig(name="dialogue-stream", demonstration=False)
    directory = tiny_model_dir(tmp_path_factory.mktemp("long-turns") / "model", MELD, template, max_length=256)
    return Predictor.from_directory(directory, device="cpu")


def scores_close(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 1e-5


@pytest.mark.parametrize("turn_cache", [True, False], ids=["cached", "rescoring"])
def test_turns_after_a_cut_utterance_match_the_whole_dialogue(predictor: Predictor, turn_cache: bool) -> None:
    config = ServiceConfig(max_utterance_chars=2000, turn_cache=turn_cache)
    with serving(predictor, config) as url, httpx.Client(base_url=url, timeout=60) as client:
        whole = client.post("/v1/predict", json={"dialogues": [{"utterances": DIALOGUE}]}).json()["dialogues"][0]["utterances"]
        conversation = client.post("/v1/conversations").json()["id"]
        live = [client.post(f"/v1/conversations/{conversation}/utterances", json=u).json() for u in DIALOGUE]
        started = client.post("/v1/conversations", json={"utterances": DIALOGUE[:4]}).json()
        [later] = [client.post(f"/v1/conversations/{started['id']}/utterances", json=u).json() for u in DIALOGUE[4:5]]
    assert [u["truncated"] for u in whole] == [False, False, True, False, False, False]
    assert [u["truncated"] for u in live] == [u["truncated"] for u in whole]
    assert live[2]["text"] == LONG  # the client reads back what it sent; only the model reads the cut
    for k, (turn, full) in enumerate(zip(live, whole)):
        assert scores_close(turn["emotion_scores"], full["emotion_scores"]), k
    assert scores_close(later["emotion_scores"], whole[4]["emotion_scores"])


def test_a_null_id_or_dataset_is_taken_as_not_given(predictor: Predictor) -> None:
    with serving(predictor, ServiceConfig()) as url, httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/v1/predict", json={"dialogues": [{"id": None, "dataset": None, "utterances": DIALOGUE[:2]}]})
    assert response.status_code == 200, response.text
    [dialogue] = response.json()["dialogues"]
    assert dialogue["id"] is None and all("predicted_original_emotion" not in u for u in dialogue["utterances"])


def cache(tokens: int) -> ConversationCache:
    return ConversationCache(list(range(tokens)), torch.zeros(2, 2, 1, tokens, 4))


def test_a_cache_discarded_while_its_turn_is_scored_is_not_put_back() -> None:
    store = CacheStore(max_bytes=10**6)
    store.put("gone", cache(8))
    taken = store.take("gone")
    store.discard("gone")  # the conversation was deleted while the model worked on its turn
    store.put("gone", taken)
    assert len(store) == 0 and store.nbytes == 0
    store.put("gone", store.take("gone"))  # a later turn of a conversation under that key is kept again
    assert len(store) == 1


def test_every_conversation_that_leaves_the_store_is_reported() -> None:
    now = [0.0]
    dropped: list[str] = []
    ids = iter(f"c{k}" for k in range(10))
    store = ConversationStore(
        2, max_idle_seconds=100, clock=lambda: now[0], new_id=lambda: next(ids), on_drop=lambda gone: dropped.append(gone.id)
    )
    first, second = store.create(), store.create()
    now[0] = 1.0
    store.create()  # full: the least recently used goes
    assert dropped == [first.id]
    store.delete(second.id)
    assert dropped == [first.id, second.id]
    now[0] = 500.0
    store.purge()  # idle too long
    assert dropped == [first.id, second.id, "c2"]


def test_the_service_forgets_the_cache_of_every_dropped_conversation(predictor: Predictor) -> None:
    config = ServiceConfig(max_conversations=2, evict_after_idle_seconds=0)
    with serving(predictor, config) as url, httpx.Client(base_url=url, timeout=60) as client:
        ids = []
        for _ in range(3):  # the third evicts the first
            ids.append(client.post("/v1/conversations").json()["id"])
            client.post(f"/v1/conversations/{ids[-1]}/utterances", json=DIALOGUE[0])
        health: Any = client.get("/healthz").json()
        assert health["conversations"] == 2 and health["turn_cache_conversations"] == 2
        client.delete(f"/v1/conversations/{ids[1]}")
        health = client.get("/healthz").json()
    assert health["conversations"] == 1 and health["turn_cache_conversations"] == 1


def test_this_file_uses_a_budget_the_long_utterance_is_over(predictor: Predictor) -> None:
    # Guards the fixtures above: with a larger budget nothing would be cut and the first test would pass vacuously.
    [prediction] = predictor.predict_at([(_dialogue(), 2)])
    assert prediction.truncated and prediction.cut_text is not None and len(prediction.cut_text) < len(LONG)


def _dialogue():
    from instructerc.data.dialogue import Dialogue, Utterance

    return Dialogue("d", "user", "test", tuple(Utterance(u["speaker"], u["text"]) for u in DIALOGUE))


def test_a_conversation_dropped_while_its_turn_waits_keeps_no_cache(predictor: Predictor) -> None:
    from instructerc.service.app import LiveTurn, Service
    from instructerc.service.store import Conversation

    service = Service(predictor, ServiceConfig())
    conversation = Conversation(id="gone")
    turn = LiveTurn(conversation, _dialogue().with_utterances(_dialogue().utterances[:2]))
    service.forget(conversation)  # deleted, expired or evicted after its turn was queued
    [prediction] = service._predict_batch([turn])
    assert prediction.label in MELD.labels
    assert service.caches is not None and len(service.caches) == 0 and service.caches.nbytes == 0


def test_health_does_not_count_expired_conversations(predictor: Predictor) -> None:
    import time

    with serving(predictor, ServiceConfig(max_idle_seconds=0.5)) as url, httpx.Client(base_url=url, timeout=60) as client:
        conversation = client.post("/v1/conversations").json()["id"]
        client.post(f"/v1/conversations/{conversation}/utterances", json=DIALOGUE[0])
        time.sleep(1.0)
        health = client.get("/healthz").json()
    assert health["conversations"] == 0 and health["turn_cache_conversations"] == 0 and health["turn_cache_bytes"] == 0
