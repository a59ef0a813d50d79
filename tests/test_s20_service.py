"""The service probed as an API client would: paths with a trailing slash or an empty conversation
id, a creation the model fails, an empty body, and failed turns that must leave a conversation
as it was."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import pytest

from instructerc.labels.benchmarks import MELD
from instructerc.service.config import ServiceConfig
from tiny import tiny_model_dir

LINE = {"speaker": "Ann", "text": "Wow, really?"}
JSON = {"content-type": "application/json"}


class Flaky:
    """The tiny model, failing on any text holding "boom" as a model out of memory would."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def label_set(self) -> Any:
        return self.inner.label_set

    def predict_at(self, items: Sequence[tuple[Any, int]], mode: str = "score", **kwargs: Any) -> list[Any]:
        if any("boom" in dialogue.utterances[i].text for dialogue, i in items):
            raise RuntimeError("the model broke")
        return self.inner.predict_at(items, mode, **kwargs)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from instructerc.inference.predictor import Predictor

    return Predictor.from_directory(tiny_model_dir(tmp_path_factory.mktemp("s20") / "model", MELD), device="cpu")


def served(predictor: Any, config: ServiceConfig) -> Any:
    from fastapi.testclient import TestClient

    from instructerc.service.app import create_app

    # A client that follows no redirect, as httpx and curl do by default.
    return TestClient(create_app(predictor, config), base_url="http://localhost", follow_redirects=False)


@pytest.fixture(scope="module")
def client(predictor: Any) -> Iterator[Any]:
    with served(predictor, ServiceConfig()) as c:
        yield c


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def conversations(client: Any) -> int:
    return client.get("/healthz").json()["conversations"]


# -- a trailing slash ---------------------------------------------------------------------------------
# Each was answered 307 with an empty body and a Location built from the Host header (http://
# behind a TLS proxy, without the proxy's path prefix): no error a JSON client can read.
@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("GET", "/v1/labels/", "/v1/labels"),
        ("GET", "/healthz/", "/healthz"),
        ("POST", "/v1/predict/", "/v1/predict"),
        ("POST", "/v1/conversations/", "/v1/conversations"),
        ("GET", "/v1/conversations/abc/", "/v1/conversations/{conversation_id}"),
        ("POST", "/v1/conversations/abc/utterances/", "/v1/conversations/{conversation_id}/utterances"),
    ],
)
def test_a_path_with_a_trailing_slash_is_a_json_404_naming_the_route(client: Any, method: str, path: str, route: str) -> None:
    before = conversations(client)
    response = client.request(method, path, json={"utterances": [LINE]} if method == "POST" else None)

    error = error_of(response, 404, "not_found")
    assert "location" not in response.headers
    assert f"did you mean {route}, without the trailing slash" in error["message"]
    assert conversations(client) == before  # POST /v1/conversations/ started none


# An empty conversation id was sent on to the collection, /v1/conversations, which then answered
# "GET is not allowed here; allowed: POST" (and a DELETE the same), about a route never asked for.
@pytest.mark.parametrize("path", ["/v1/conversations//", "/v1/conversations/%2F", "/v1/conversations/%2f"])
@pytest.mark.parametrize("method", ["GET", "DELETE", "HEAD"])
def test_an_empty_or_slash_conversation_id_is_not_found_not_another_route(client: Any, path: str, method: str) -> None:
    response = client.request(method, path)

    assert response.status_code == 404, response.text
    assert "location" not in response.headers
    if method != "HEAD":
        error = error_of(response, 404, "not_found")
        assert "/v1/conversations," not in error["message"] and "trailing slash" not in error["message"]


def test_a_path_that_exists_is_answered_as_before(client: Any) -> None:
    assert client.get("/v1/labels").status_code == 200
    assert error_of(client.get("/v1/nothing"), 404, "not_found")["message"]
    assert error_of(client.get("/v1/predict"), 405, "method_not_allowed")


# -- creations that created nothing -------------------------------------------------------------------
def test_a_creation_the_model_fails_does_not_use_up_the_clients_creation_rate(predictor: Any) -> None:
    # One creation at a time and about one an hour: each failed creation counted, so after a model
    # failure the client was refused (429) for an hour though it had no conversation.
    config = ServiceConfig(new_conversation_burst=1, new_conversations_per_second=0.0003)
    with served(Flaky(predictor), config) as c:
        for _ in range(3):
            error_of(c.post("/v1/conversations", json={"utterances": [{"speaker": "Ann", "text": "boom"}]}), 500, "model_error")
        assert conversations(c) == 0

        created = c.post("/v1/conversations", json={"utterances": [LINE]})
        assert created.status_code == 201, created.text
        # The bound itself still holds for conversations that were created.
        error_of(c.post("/v1/conversations", json={}), 429, "too_many_new_conversations")


def test_a_creation_refused_for_a_full_store_does_not_use_up_the_rate(predictor: Any) -> None:
    # Refused before the model runs; the same holds when the store fills while the model runs.
    rate = {"new_conversation_burst": 2, "new_conversations_per_second": 0.0003}
    config = ServiceConfig(max_conversations=1, evict_after_idle_seconds=3600, **rate)
    with served(predictor, config) as c:
        kept = c.post("/v1/conversations", json={}).json()["id"]
        for _ in range(3):
            error_of(c.post("/v1/conversations", json={}), 503, "conversations_full")
        assert c.delete(f"/v1/conversations/{kept}").status_code == 204
        assert c.post("/v1/conversations", json={}).status_code == 201


# -- an empty body ------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [b"", b"   \n", b"\xef\xbb\xbf", "  ".encode("utf-16")])
def test_an_empty_body_is_said_to_be_empty(client: Any, body: bytes) -> None:
    # It was "not valid JSON (Expecting value at column 4)", a column in a body holding nothing.
    conversation = client.post("/v1/conversations", content=body, headers=JSON)
    assert conversation.status_code == 201, conversation.text  # an empty body starts an empty conversation
    for path in ("/v1/predict", f"/v1/conversations/{conversation.json()['id']}/utterances"):
        error = error_of(client.post(path, content=body, headers=JSON), 400, "malformed_json")
        assert "empty" in error["message"], error


# -- a failed turn leaves the conversation as it was -------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"null",
        b'{"speaker": "Ann"}',
        b'{"speaker": "Ann", "text": "   "}',
        b'{"speaker": "Ann", "text": "\\u200b"}',
        b'{"speaker": "Ann\\u2028", "text": 5}',
        b'{"speaker": "A\\nB", "text": "hi"}',
        b'{"speaker": "Ann", "text": "hi", "text": "bye"}',
        b'{"speaker": "Ann", "text": "hi", "n": NaN}',
        b'{"speaker": "Ann", "text": "boom"}',
        b'{"utterances": [{"speaker": "Ann", "text": "hi"}]}',
    ],
)
def test_a_failed_turn_leaves_the_conversation_as_it_was(predictor: Any, body: bytes) -> None:
    with served(Flaky(predictor), ServiceConfig()) as c:
        created = c.post("/v1/conversations", json={"utterances": [LINE]}).json()
        path = f"/v1/conversations/{created['id']}"

        failed = c.post(f"{path}/utterances", content=body, headers=JSON)

        assert failed.status_code in (400, 422, 500), failed.text
        assert failed.json()["error"]["message"]
        assert c.get(path).json() == created
        added = c.post(f"{path}/utterances", json={"speaker": "Bob", "text": "Yes!"})
        assert added.status_code == 200 and added.json()["index"] == 1, added.text
        dialogue = {"utterances": [LINE, {"speaker": "Bob", "text": "Yes!"}]}
        [whole] = c.post("/v1/predict", json={"dialogues": [dialogue]}).json()["dialogues"]
        assert added.json()["emotion_scores"] == pytest.approx(whole["utterances"][1]["emotion_scores"], abs=1e-5)


# -- the documented dataset ---------------------------------------------------------------------------
def test_the_two_documented_dataset_fields_differ_only_in_their_description() -> None:
    from instructerc.service import schemas

    def documented(model: Any) -> dict[str, Any]:
        return {k: v for k, v in model.model_json_schema()["properties"]["dataset"].items() if k != "description"}

    assert documented(schemas.DialogueIn) == documented(schemas.NewConversation)
    assert documented(schemas.DialogueIn)["anyOf"][0] == {"type": "string", "minLength": 1, "maxLength": 64}


class Overflowing(Flaky):
    """The tiny model, its logits overflowing the service's precision on any text holding "boom"."""

    def predict_at(self, items: Sequence[tuple[Any, int]], mode: str = "score", **kwargs: Any) -> list[Any]:
        from instructerc.errors import InputError

        if any("boom" in dialogue.utterances[i].text for dialogue, i in items):
            raise InputError("the model's numbers overflow float16: run it in bfloat16 or float32 (--dtype)", field="dtype")
        return self.inner.predict_at(items, mode, **kwargs)


def test_a_precision_the_model_overflows_is_a_server_error_not_the_requests(predictor: Any) -> None:
    # The predictor's overflow error (field dtype) was answered 422 not_predictable, as if the
    # client's text were at fault; it is the service's --dtype.
    with served(Overflowing(predictor), ServiceConfig()) as c:
        boom = {"dialogues": [{"utterances": [{"speaker": "Ann", "text": "boom"}]}]}
        error = error_of(c.post("/v1/predict", json=boom), 500, "model_error")
        assert "--dtype" in error["message"] and "started" in error["message"]
        assert c.post("/v1/predict", json={"dialogues": [{"utterances": [LINE]}]}).status_code == 200
