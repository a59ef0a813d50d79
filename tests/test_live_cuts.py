"""A conversation labelled a turn at a time, given as it was said, agrees with the whole dialogue
also after a turn was cut: a text over the budget, or a speaker's name over it (cut in all their
lines). Found by probing the four ways of predicting with the same conversations."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.inference.incremental import ConversationCache
from instructerc.inference.predictor import Predictor
from instructerc.labels.registry import named_label_set
from instructerc.prompts.templates import TemplateConfig
from instructerc.service.config import ServiceConfig
from test_service import serving
from tiny import tiny_model_dir

LONG_NAME = "A" * 300  # over the tiny budget on its own: cut in every line of theirs
TURNS = [
    ("Ann", "Hi."),
    ("Bob", "我" * 3000),  # over the budget: cut, start and end kept
    ("Ann", "What did you say?"),
    (LONG_NAME, "Fine, whatever."),
    ("Bob", "Okay."),
    (LONG_NAME, "It's a calm evening."),  # needs more of the name cut than the first line did
    ("Ann", "Huh?"),
    ("B" * 300, "So much to say. " * 300),  # both over: the name is cut as far as it goes, then the text
    ("Ann", "Right."),
]
DIALOGUE = Dialogue("d", "user", "test", tuple(Utterance(s, t) for s, t in TURNS))


@pytest.fixture(scope="module", params=["dialogue-stream", "dialogue-prefix", "instructerc"])
def predictor(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    template = TemplateConfig(name=request.param, demonstration=False)
    directory = tiny_model_dir(tmp_path_factory.mktemp("live-cuts") / "model", named_label_set("uime"), template, max_length=160)
    return Predictor.from_directory(Path(directory), device="cpu", dtype="float32")


def largest_difference(a: dict[str, float], b: dict[str, float]) -> float:
    assert a.keys() == b.keys()
    return max(abs(a[k] - b[k]) for k in a)


def test_the_dialogue_has_a_cut_text_and_a_cut_name(predictor: Predictor) -> None:
    # Guards the tests below: without cuts they would pass vacuously.
    [whole] = predictor.predict([DIALOGUE])
    assert [p.truncated for p in whole] == [False, True, False, True, False, True, False, True, False]


def test_predict_next_given_turns_as_said_equals_the_whole_dialogue(predictor: Predictor) -> None:
    [whole] = predictor.predict([DIALOGUE])
    cache, turns = ConversationCache(), ()
    for k, utterance in enumerate(DIALOGUE.utterances):  # as the README shows it: the text as said
        turns += (utterance,)
        live = predictor.predict_next(Dialogue("live", "", "test", turns), cache)
        assert live.truncated == whole[k].truncated, k
        assert largest_difference(live.scores, whole[k].scores) < 1e-5, k


def test_predict_at_with_the_cut_turns_equals_the_whole_dialogue(predictor: Predictor) -> None:
    [whole] = predictor.predict([DIALOGUE])
    for k in range(len(DIALOGUE)):
        cut = [i for i in range(k) if whole[i].truncated]
        [live] = predictor.predict_at([(DIALOGUE.with_utterances(DIALOGUE.utterances[: k + 1]), k)], cut_before=[cut])
        assert live.truncated == whole[k].truncated, k
        assert largest_difference(live.scores, whole[k].scores) < 1e-5, k


@pytest.mark.parametrize("turn_cache", [True, False], ids=["cached", "rescoring"])
def test_service_turns_after_a_cut_name_equal_the_whole_dialogue(predictor: Predictor, turn_cache: bool) -> None:
    body = [{"speaker": s, "text": t} for s, t in TURNS]
    config = ServiceConfig(max_utterance_chars=5000, max_speaker_chars=500, turn_cache=turn_cache)
    with serving(predictor, config) as url, httpx.Client(base_url=url, timeout=60) as client:
        whole = client.post("/v1/predict", json={"dialogues": [{"utterances": body}]}).json()["dialogues"][0]["utterances"]
        conversation = client.post("/v1/conversations").json()["id"]
        live = [client.post(f"/v1/conversations/{conversation}/utterances", json=u).json() for u in body]
        # Started with its first turns (labelled as a dialogue, no cache yet), then grown.
        started = client.post("/v1/conversations", json={"utterances": body[:4]}).json()
        later = [client.post(f"/v1/conversations/{started['id']}/utterances", json=u).json() for u in body[4:]]
    assert [u["truncated"] for u in live] == [u["truncated"] for u in whole]
    assert [u["truncated"] for u in started["utterances"] + later] == [u["truncated"] for u in whole]
    for k, (turn, full) in enumerate(zip(live, whole)):
        assert largest_difference(turn["emotion_scores"], full["emotion_scores"]) < 1e-5, k
    for k, (turn, full) in enumerate(zip(started["utterances"] + later, whole)):
        assert largest_difference(turn["emotion_scores"], full["emotion_scores"]) < 1e-5, k
