"""The service against requests found by probing it as a careless or hostile client: one rule for a
named dataset on every route, the connection cap's 503 in the document of every route, charsets
that are Python codecs but no text encoding of the web, stacked content codings, and an
unexpected failure answered with its request id."""

from __future__ import annotations

import gzip
import logging
from typing import Any, Iterator

import httpx
import pytest

from instructerc.labels.benchmarks import MELD
from instructerc.service.config import ServiceConfig
from test_service import serving
from tiny import tiny_model_dir

LINE = {"speaker": "Ann", "text": "Wow, really?"}
ONE = b'{"utterances": [{"speaker": "Ann", "text": "Hi"}]}'


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A unified-label model, whose answers name a benchmark's own labels when one is named."""
    from instructerc.inference.predictor import Predictor
    from instructerc.labels.unified import INSTRUCTERC

    predictor = Predictor.from_directory(tiny_model_dir(tmp_path_factory.mktemp("s19") / "model", INSTRUCTERC.label_set), device="cpu")
    with serving(predictor, ServiceConfig()) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def predict_one(client: httpx.Client, dataset: Any, line: dict[str, Any] = LINE) -> httpx.Response:
    return client.post("/v1/predict", json={"dialogues": [{"dataset": dataset, "utterances": [line]}]})


# -- one rule for a named dataset ---------------------------------------------------------------------
# As data files name a benchmark (a zero-width space or a BOM pasted at either end, full-width
# letters, a trailing line break): /v1/predict read these as MELD, a conversation refused them.
@pytest.mark.parametrize("name", ["MELD\u200b", "\ufeffmeld", "ＭＥＬＤ", "meld\n", " Meld\u200e"])
def test_a_benchmark_name_with_invisible_characters_is_that_benchmark_on_every_route(client: httpx.Client, name: str) -> None:
    predicted = predict_one(client, name)
    created = client.post("/v1/conversations", json={"dataset": name, "utterances": [LINE]})

    assert predicted.status_code == 200, predicted.text
    assert created.status_code == 201, created.text
    assert created.json()["dataset"] == "meld"
    [utterance] = predicted.json()["dialogues"][0]["utterances"]
    [turn] = created.json()["utterances"]
    assert utterance["predicted_original_emotion"] in MELD.labels
    assert turn["predicted_original_emotion"] == utterance["predicted_original_emotion"]


# A name of invisible characters only, one over the bound a conversation keeps, or one broken by
# a control character: /v1/predict took the long and the broken ones, the two routes' messages differed.
@pytest.mark.parametrize("name", ["\u200b", " \u2060 ", "x" * 65, "me\nld", "me\x1bld", 5, ["meld"], {}])
def test_a_bad_dataset_name_gets_the_same_refusal_on_every_route(client: httpx.Client, name: Any) -> None:
    predicted = predict_one(client, name)
    created = client.post("/v1/conversations", json={"dataset": name, "utterances": [LINE]})

    assert (predicted.status_code, created.status_code) == (422, 422), (predicted.text, created.text)
    assert predicted.json()["error"]["field"] == "dialogues[0].dataset"
    assert created.json()["error"]["field"] == "dataset"
    assert predicted.json()["error"]["message"] == created.json()["error"]["message"]


def test_the_documented_predict_dataset_has_the_conversations_bounds(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    def dataset_schema(path: str, *inside: str) -> dict[str, Any]:
        node = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        for key in inside:
            node = node["properties"][key]["items"] if key == "dialogues" else node["properties"][key]
        return node["anyOf"][0]

    conversation = dataset_schema("/v1/conversations", "dataset")
    dialogue = dataset_schema("/v1/predict", "dialogues", "dataset")
    assert (dialogue["minLength"], dialogue["maxLength"]) == (conversation["minLength"], conversation["maxLength"]) == (1, 64)


# A gold original_emotion that is not one of the named benchmark's labels: /v1/predict refused it
# (the data files' parser), a conversation naming the same benchmark stored it without a word.
def test_a_conversations_utterances_are_read_under_its_benchmark_as_predict_reads_them(client: httpx.Client) -> None:
    wrong = {**LINE, "original_emotion": "zzz"}
    right = {**LINE, "original_emotion": "Joy"}

    predicted = predict_one(client, "meld", wrong)
    created = client.post("/v1/conversations", json={"dataset": "meld", "utterances": [wrong]})
    conversation = client.post("/v1/conversations", json={"dataset": "MELD"}).json()["id"]
    added = client.post(f"/v1/conversations/{conversation}/utterances", json=wrong)

    assert predicted.json()["error"]["field"] == "dialogues[0].utterances[0].original_emotion"
    assert created.status_code == 422 and created.json()["error"]["field"] == "utterances[0].original_emotion"
    assert added.status_code == 422 and added.json()["error"]["field"] == "original_emotion"
    assert predicted.json()["error"]["message"] == created.json()["error"]["message"] == added.json()["error"]["message"]
    assert client.get(f"/v1/conversations/{conversation}").json()["utterances"] == [], "nothing stored"
    # A label of the benchmark is taken on every route, and a conversation naming no benchmark takes any.
    assert predict_one(client, "meld", right).status_code == 200
    assert client.post(f"/v1/conversations/{conversation}/utterances", json=right).status_code == 200
    assert client.post("/v1/conversations", json={"utterances": [wrong]}).status_code == 201


# -- the OpenAPI document -------------------------------------------------------------------------------
def test_every_route_documents_the_503_of_the_connection_cap(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    operations = {(method, path): operation for path, methods in paths.items() for method, operation in methods.items()}

    assert len(operations) == 7
    undocumented = sorted(key for key, operation in operations.items() if "503" not in operation["responses"])
    assert not undocumented, "a request beyond --max-connections is answered 503 on any route"
    # /healthz answers its own body when the worker has died, the service's error at the cap.
    schema = operations[("get", "/healthz")]["responses"]["503"]["content"]["application/json"]["schema"]
    assert {"#/components/schemas/HealthOut", "#/components/schemas/ErrorResponse"} == {s["$ref"] for s in schema["anyOf"]}


# -- charsets and content codings -------------------------------------------------------------------------
# Python codecs, not charsets: punycode and undefined made the decoder raise (500, two tracebacks);
# unicode_escape and idna read the body as other text than the client sent.
@pytest.mark.parametrize("charset", ["punycode", "undefined", "unicode_escape", "raw-unicode-escape", "idna", "charmap", "palmos"])
def test_a_charset_that_is_a_python_codec_but_no_text_encoding_is_a_415(client: httpx.Client, charset: str) -> None:
    answer = client.post("/v1/conversations", content=ONE, headers={"content-type": f"application/json; charset={charset}"})

    assert answer.status_code == 415, answer.text
    assert answer.json()["error"] == {
        "code": "unsupported_media_type",
        "message": f"the charset {charset!r} of the Content-Type is not a known text encoding",
        "field": "content-type",
    }


def test_a_long_unknown_charset_is_named_by_its_start_only(client: httpx.Client) -> None:
    answer = client.post("/v1/conversations", content=ONE, headers={"content-type": "application/json; charset=" + "x" * 5000})
    assert answer.status_code == 415 and len(answer.json()["error"]["message"]) < 200


def test_more_content_codings_than_a_client_applies_are_refused_before_undoing_them(client: httpx.Client) -> None:
    # Thousands of gzip layers of a few bytes each fit in one body; each was undone on the event
    # loop, up to the body limit, stalling every other request.
    body = ONE
    for _ in range(5):
        body = gzip.compress(body)
    answer = client.post(
        "/v1/conversations", content=body, headers={"content-type": "application/json", "content-encoding": "gzip, " * 4 + "gzip"}
    )

    assert answer.status_code == 415, answer.text
    assert answer.json()["error"]["field"] == "content-encoding" and "at most 4" in answer.json()["error"]["message"]
    four = gzip.compress(gzip.compress(gzip.compress(gzip.compress(ONE))))
    assert (
        client.post(
            "/v1/conversations", content=four, headers={"content-type": "application/json", "content-encoding": "gzip, gzip, gzip, gzip"}
        ).status_code
        == 201
    )


# -- an unexpected failure ----------------------------------------------------------------------------------
class BrokenLabels:
    """A predictor whose label set cannot be read: a fault of the service, not of the request."""

    @property
    def label_set(self) -> Any:
        raise RuntimeError("the label set is gone")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_unexpected_failure_is_a_json_500_with_its_request_id_logged_once() -> None:
    from instructerc.service.guard import RequestIdFilter

    config = ServiceConfig()
    records = Records()
    records.addFilter(RequestIdFilter())  # as the served log format's handler has it
    loggers = [logging.getLogger(name) for name in ("instructerc", "uvicorn.error")]
    with serving(BrokenLabels(), config) as url:
        for logger in loggers:  # after the server configured its logging, which replaces handlers
            logger.addHandler(records)
        try:
            answer = httpx.get(f"{url}/v1/labels", headers={"x-request-id": "probe-19"}, timeout=30)
        finally:
            for logger in loggers:
                logger.removeHandler(records)

    assert answer.status_code == 500
    assert answer.json() == {"error": {"code": "internal_error", "message": "internal error"}}
    assert answer.headers["x-request-id"] == "probe-19", "every answer names its request"
    tracebacks = [record for record in records.records if record.exc_info]
    assert len(tracebacks) == 1, [record.getMessage() for record in tracebacks]
    assert tracebacks[0].request_id == "probe-19", "the log line names the request"  # type: ignore[attr-defined]
