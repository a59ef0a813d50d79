"""Live conversations scored from their key/value caches give what re-scoring the conversation gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from instructerc.service.config import ServiceConfig
from test_service import assert_same_scores, serving, utterances
from tiny import tiny_model_dir


def model(root: Path, template: str) -> Predictor:
    return Predictor.from_directory(tiny_model_dir(root, MELD, TemplateConfig(name=template, demonstration=False)), device="cpu")


@pytest.fixture(scope="module")
def stream_predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return model(tmp_path_factory.mktemp("stream") / "model", "dialogue-stream")


def grow(base_url: str, count: int) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        conversation_id = client.post("/v1/conversations").json()["id"]
        turns = [client.post(f"/v1/conversations/{conversation_id}/utterances", json=u).json() for u in utterances(count)]
        return conversation_id, turns, client.get("/healthz").json()


def whole(base_url: str, count: int) -> list[dict[str, Any]]:
    body = {"dialogues": [{"utterances": utterances(count)}]}
    return httpx.post(f"{base_url}/v1/predict", json=body, timeout=30).json()["dialogues"][0]["utterances"]


def test_cached_turns_match_the_whole_conversation_and_deleting_frees_the_cache(stream_predictor: Predictor) -> None:
    with serving(stream_predictor, ServiceConfig(max_wait_ms=1)) as url:
        conversation_id, turns, health = grow(url, 9)
        expected = whole(url, 9)
        assert health["turn_scoring"] == "cached"
        assert health["turn_cache_conversations"] == 1 and health["turn_cache_bytes"] > 0
        for turn, full in zip(turns, expected):
            assert turn["predicted_emotion"] == full["predicted_emotion"]
            assert_same_scores(turn["emotion_scores"], full["emotion_scores"])
        assert httpx.delete(f"{url}/v1/conversations/{conversation_id}").status_code == 204
        after = httpx.get(f"{url}/healthz").json()
        assert after["turn_cache_conversations"] == 0 and after["turn_cache_bytes"] == 0


def test_a_cache_bound_too_small_for_any_conversation_still_answers_by_rescoring(stream_predictor: Predictor) -> None:
    with serving(stream_predictor, ServiceConfig(max_wait_ms=1, turn_cache_mb=1e-6)) as url:
        _, turns, health = grow(url, 5)
        expected = whole(url, 5)
    assert health["turn_cache_bytes"] == 0
    for turn, full in zip(turns, expected):
        assert_same_scores(turn["emotion_scores"], full["emotion_scores"])


def test_the_cache_can_be_turned_off_and_other_templates_rescore(stream_predictor: Predictor, tmp_path: Path) -> None:
    with serving(stream_predictor, ServiceConfig(turn_cache=False)) as url:
        assert grow(url, 2)[2]["turn_scoring"] == "rescoring"
    with serving(model(tmp_path / "paper", "instructerc"), ServiceConfig()) as url:
        _, turns, health = grow(url, 3)
        assert health["turn_scoring"] == "rescoring"
        for turn, full in zip(turns, whole(url, 3)):
            assert_same_scores(turn["emotion_scores"], full["emotion_scores"])
