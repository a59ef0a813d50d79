"""The service against requests found by probing it: headers sent twice, and an OpenAPI document
that refused what the service accepts (and accepted what it refuses)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from instructerc.labels.benchmarks import MELD
from instructerc.service.config import ServiceConfig
from tiny import tiny_model_dir

ONE = {"utterances": [{"speaker": "Ann", "text": "Hi! How are you?"}]}
LIMITS = ServiceConfig(max_dialogues=3, max_utterances=12, max_conversation_utterances=10)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from instructerc.inference.predictor import Predictor
    from instructerc.service.app import create_app

    model_dir = tiny_model_dir(tmp_path_factory.mktemp("probe18") / "model", MELD)
    app = create_app(Predictor.from_directory(model_dir, device="cpu"), LIMITS)
    with TestClient(app, base_url="http://localhost") as c:
        yield c


# -- a header sent twice ----------------------------------------------------------------------------
def test_a_content_type_sent_twice_is_refused_not_read_two_ways(client: Any) -> None:
    # The guard read the last Content-Type (JSON, so it passed) and the endpoint the first: its
    # charset decoded the UTF-8 body as UTF-16, and the client got a "malformed JSON" for valid JSON.
    body = json.dumps({"dialogues": [ONE]}).encode("utf-8")
    headers = [("content-type", "text/plain; charset=utf-16"), ("content-type", "application/json")]
    response = client.post("/v1/predict", content=body, headers=headers)
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["field"] == "content-type" and "more than once" in error["message"]
    # Also when both say JSON but only one names a charset (the comma then follows the ';').
    headers = [("content-type", "application/json; charset=utf-16"), ("content-type", "application/json")]
    assert client.post("/v1/predict", content=body, headers=headers).status_code == 415


def test_a_content_encoding_sent_as_two_headers_is_undone_twice(client: Any) -> None:
    import gzip

    # Two codings in two headers mean both were applied (RFC 9110); only the last one was undone.
    body = gzip.compress(gzip.compress(json.dumps({"dialogues": [ONE]}).encode("utf-8")))
    headers = [("content-type", "application/json"), ("content-encoding", "gzip"), ("content-encoding", "gzip")]
    response = client.post("/v1/predict", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["dialogues"][0]["utterances"][0]["text"] == "Hi! How are you?"


# -- the OpenAPI document says what the service accepts ----------------------------------------------
def request_schema(client: Any, path: str) -> dict[str, Any]:
    spec = client.get("/openapi.json").json()
    return spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def types_of(schema: dict[str, Any]) -> set[str]:
    return {variant["type"] for variant in schema.get("anyOf", [schema])}


def test_the_documented_predict_body_allows_integer_ids_and_states_the_limits(client: Any) -> None:
    dialogue = request_schema(client, "/v1/predict")["properties"]["dialogues"]
    # The service answers an integer id (as the user format does), but the document allowed only a
    # string: a client generated from it could not send one, a checker saw a refused body accepted.
    assert "integer" in types_of(dialogue["items"]["properties"]["id"])
    answered = client.post("/v1/predict", json={"dialogues": [{"id": 7, **ONE}]})
    assert answered.status_code == 200 and answered.json()["dialogues"][0]["id"] == "7"
    # What is always refused is documented: empty lists and texts, and lists over the limits.
    utterances = dialogue["items"]["properties"]["utterances"]
    assert (dialogue["minItems"], dialogue["maxItems"]) == (1, LIMITS.max_dialogues)
    assert (utterances["minItems"], utterances["maxItems"]) == (1, LIMITS.max_utterances)
    assert utterances["items"]["properties"]["speaker"]["minLength"] == 1
    assert utterances["items"]["properties"]["text"]["minLength"] == 1
    assert client.post("/v1/predict", json={"dialogues": []}).status_code == 422
    assert client.post("/v1/predict", json={"dialogues": [ONE] * (LIMITS.max_dialogues + 1)}).status_code == 422
    assert client.post("/v1/predict", json={"dialogues": [{"utterances": [{"speaker": "", "text": "x"}]}]}).status_code == 422


def test_the_documented_new_conversation_body_allows_null_and_refuses_other_keys(client: Any) -> None:
    schema = request_schema(client, "/v1/conversations")
    utterances = schema["properties"]["utterances"]
    # null starts an empty conversation, as an empty body does; the document said "array" only.
    assert types_of(utterances) == {"array", "null"}
    assert client.post("/v1/conversations", json={"utterances": None}).status_code == 201
    # A misspelt key is refused (it would drop the utterances), which the document did not say.
    assert schema["additionalProperties"] is False
    assert client.post("/v1/conversations", json={"utterance": ONE["utterances"]}).status_code == 422
    # The most a conversation may start with: beyond it is refused (409), whichever limit is lower.
    [array] = [variant for variant in utterances["anyOf"] if variant["type"] == "array"]
    assert array["maxItems"] == LIMITS.max_conversation_utterances
    too_many = [{"speaker": "Ann", "text": "Hi."}] * (LIMITS.max_conversation_utterances + 1)
    assert client.post("/v1/conversations", json={"utterances": too_many}).status_code == 409


# -- allowed hosts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("allowed", ["api.example:8000", "API.Example", "api.example."])
def test_an_allowed_host_given_with_its_port_or_in_capitals_is_answered(tmp_path: Path, allowed: str) -> None:
    from fastapi.testclient import TestClient

    from instructerc.service.app import create_app

    # The Host header is compared without its port, in lower case and without a final dot; the
    # allowed names were kept as typed, so `--allowed-host api.example:8000` refused every request.
    app = create_app(LabelsOnly(), ServiceConfig(allowed_hosts=(allowed,)))
    with TestClient(app, base_url="http://api.example:8000") as c:
        assert c.get("/v1/labels").status_code == 200
        assert c.get("/v1/labels", headers={"host": "other.example"}).status_code == 400


def test_an_allowed_host_with_nothing_left_to_compare_is_refused() -> None:
    from instructerc.errors import InputError

    # "." is no name once its final dot goes; kept, it would have answered an empty Host header.
    with pytest.raises(InputError, match="non-empty names"):
        ServiceConfig(allowed_hosts=(".",))


class LabelsOnly:
    """A predictor that is never asked to predict: the host checks come first."""

    label_set = MELD
