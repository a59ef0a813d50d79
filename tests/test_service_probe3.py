"""Live conversations against requests found by probing the service: a turn that waits for the
model is use of its conversation until it is answered."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from instructerc.labels.benchmarks import MELD
from instructerc.service.config import ServiceConfig
from test_service import serving
from tiny import tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("probe3") / "model", MELD)


@pytest.mark.parametrize(
    "config",
    [
        ServiceConfig(max_conversations=1, evict_after_idle_seconds=1.0, turn_cache=False),
        ServiceConfig(max_idle_seconds=1.0, turn_cache=False),
    ],
    ids=["eviction", "expiry"],
)
def test_a_conversation_is_idle_from_when_its_slow_turn_is_answered(model_dir: Path, config: ServiceConfig) -> None:
    from instructerc.inference.predictor import Predictor
    from test_service_hardening import GatedPredictor

    predictor = GatedPredictor(Predictor.from_directory(model_dir, device="cpu"))
    with serving(predictor, config) as url, httpx.Client(base_url=url, timeout=30) as client:
        busy = client.post("/v1/conversations").json()["id"]
        answers: dict[str, httpx.Response] = {}
        turn = threading.Thread(
            target=lambda: answers.update(turn=client.post(f"/v1/conversations/{busy}/utterances", json={"speaker": "Ann", "text": "wait"}))
        )
        turn.start()
        assert predictor.entered.wait(20)
        time.sleep(1.3)  # the turn waits for the model longer than the idle bounds, untouched
        predictor.gate.set()
        turn.join(30)
        assert answers["turn"].status_code == 200, answers["turn"].text
        # It was idle from the turn's arrival: a new conversation evicted it, or it had expired,
        # the moment its turn was answered, and the next turn of its client got a 404.
        assert client.post("/v1/conversations").status_code in (201, 503)
        kept = client.get(f"/v1/conversations/{busy}")
        assert kept.status_code == 200, kept.text
        assert [u["text"] for u in kept.json()["utterances"]] == ["wait"]
