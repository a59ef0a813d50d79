"""A live conversation may name its benchmark, as a /v1/predict dialogue may."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from instructerc.labels.benchmarks import MELD
from test_service import STRICT, serving
from tiny import tiny_model_dir

LINES = [{"speaker": "Ann", "text": "Wow, really?"}, {"speaker": "Bob", "text": "Yes!"}, {"speaker": "Ann", "text": "No way."}]


@pytest.fixture(scope="module")
def unified_url(tmp_path_factory: pytest.TempPathFactory):
    from instructerc.inference.predictor import Predictor
    from instructerc.labels.unified import INSTRUCTERC

    predictor = Predictor.from_directory(tiny_model_dir(tmp_path_factory.mktemp("uime"), INSTRUCTERC.label_set), device="cpu")
    with serving(predictor, STRICT) as url:
        yield url


def _grow(client: httpx.Client, body: dict) -> tuple[dict, list[dict], dict]:
    """(the creation's answer, each added turn's answer, the conversation read back)."""
    created = client.post("/v1/conversations", json=body)
    assert created.status_code == 201, created.text
    conversation = created.json()
    added = [client.post(f"/v1/conversations/{conversation['id']}/utterances", json=line).json() for line in LINES[1:]]
    return conversation, added, client.get(f"/v1/conversations/{conversation['id']}").json()


def test_a_conversation_naming_meld_gets_melds_own_labels_on_every_turn(unified_url: str) -> None:
    from instructerc.labels.unified import INSTRUCTERC

    with httpx.Client(base_url=unified_url, timeout=30) as client:
        created, added, read = _grow(client, {"dataset": " MELD ", "utterances": LINES[:1]})
        plain_created, plain_added, plain_read = _grow(client, {"utterances": LINES[:1]})

    assert created["dataset"] == read["dataset"] == "meld", "spelt as the toolkit spells benchmarks"
    turns = [created["utterances"][0], *added]
    assert [t["emotion_scores"] for t in turns] == [t["emotion_scores"] for t in read["utterances"]]
    for turn in turns + read["utterances"]:
        scores = turn["emotion_scores"]
        best = max(MELD.labels, key=lambda label: scores[INSTRUCTERC.forward["meld"][label]])
        assert turn["predicted_original_emotion"] == best, "the best of MELD's own classes"
    # Naming a benchmark does not change the model's answer when its prompt does not state classes.
    for turn, plain in zip(read["utterances"], plain_read["utterances"]):
        assert turn["emotion_scores"] == pytest.approx(plain["emotion_scores"], abs=1e-5)
    assert "dataset" not in plain_created and "dataset" not in plain_read
    assert all("predicted_original_emotion" not in t for t in [*plain_added, *plain_read["utterances"]])


def test_a_conversation_naming_another_dataset_keeps_the_name_and_gets_no_original_labels(unified_url: str) -> None:
    with httpx.Client(base_url=unified_url, timeout=30) as client:
        created, added, read = _grow(client, {"dataset": "support-chats"})
    assert read["dataset"] == "support-chats"
    assert all("predicted_original_emotion" not in t for t in [*added, *read["utterances"]])


@pytest.mark.parametrize("value", [5, "", "   ", "x" * 65, "me\nld", ["meld"]])
def test_a_bad_dataset_name_is_refused_naming_the_field(unified_url: str, value: object) -> None:
    with httpx.Client(base_url=unified_url, timeout=30) as client:
        answer = client.post("/v1/conversations", json={"dataset": value, "utterances": LINES[:1]})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "dataset"


def test_a_misspelt_key_names_both_keys_the_body_may_hold(unified_url: str) -> None:
    with httpx.Client(base_url=unified_url, timeout=30) as client:
        answer = client.post("/v1/conversations", json={"datasets": "meld"})
        document = client.get("/openapi.json").json()
    assert answer.status_code == 422 and "'utterances' and 'dataset'" in answer.json()["error"]["message"]
    body = document["paths"]["/v1/conversations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["dataset"]["anyOf"][0]["maxLength"] == 64


def test_a_model_stating_benchmark_classes_prompts_a_named_live_turn_as_predict_does(tmp_path: Path) -> None:
    """With template.dataset_classes the name changes the prompt: the live turns, scored from
    their conversation's cache, must be prompted with it too, as predict prompts the dialogue."""
    from instructerc.data.dialogue import Dialogue, Utterance
    from instructerc.inference.predictor import Predictor
    from instructerc.labels.unified import INSTRUCTERC
    from instructerc.prompts.templates import TemplateConfig

    template = TemplateConfig(name="dialogue-stream", demonstration=False, dataset_classes=True)
    predictor = Predictor.from_directory(tiny_model_dir(tmp_path / "uime", INSTRUCTERC.label_set, template), device="cpu")
    with serving(predictor, STRICT) as url, httpx.Client(base_url=url, timeout=30) as client:
        _, _, named = _grow(client, {"dataset": "meld", "utterances": LINES[:1]})
        _, _, unnamed = _grow(client, {"utterances": LINES[:1]})

    lines = tuple(Utterance(u["speaker"], u["text"]) for u in LINES)
    (expected,) = predictor.predict([Dialogue(id="x", dataset="meld", split="test", utterances=lines)])
    for turn, prediction in zip(named["utterances"], expected):
        assert turn["emotion_scores"] == pytest.approx(prediction.scores, abs=1e-4)
    assert named["utterances"][1]["emotion_scores"] != unnamed["utterances"][1]["emotion_scores"], "the prompts differ"
