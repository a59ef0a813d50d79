"""The service probed with requests a client can send that earlier rounds missed: a request target
in absolute form (``GET http://host/path``), a body on a GET or DELETE in a coding the guard does
not undo, the OpenAPI document's 422s, and CORS preflights that are refused or ask for a private
network."""

from __future__ import annotations

import socket
from typing import Any, Iterator

import pytest

from instructerc.labels.benchmarks import MELD
from instructerc.service.config import ServiceConfig
from test_service import serving
from tiny import tiny_model_dir

APP = "https://app.example"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from instructerc.inference.predictor import Predictor

    return Predictor.from_directory(tiny_model_dir(tmp_path_factory.mktemp("s21") / "model", MELD), device="cpu")


@pytest.fixture(scope="module")
def url(predictor: Any) -> Iterator[str]:
    with serving(predictor, ServiceConfig()) as base:
        yield base


def exchange(url: str, request: bytes) -> tuple[int, bytes]:
    """The status and body of the answer to the raw bytes ``request`` (which ask to close)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def request(target: str, method: str = "GET", host: str = "localhost", body: bytes = b"") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def error_code(body: bytes) -> str:
    import json

    return json.loads(body)["error"]["code"]


# -- a request target in absolute form -------------------------------------------------------------
# RFC 9112 3.2.2: a server MUST accept the absolute form. uvicorn's h11 protocol passed the whole
# URI on as the path, so every such request was answered 404 "no such path".
@pytest.mark.parametrize(
    ("target", "method", "body", "status"),
    [
        ("http://localhost/healthz", "GET", b"", 200),
        ("HTTP://LOCALHOST:8000/v1/labels?verbose=1", "GET", b"", 200),
        ("https://127.0.0.1/v1/%6cabels", "GET", b"", 200),
        ("http://[::1]:8000/v1/conversations", "POST", b'{"utterances": [{"speaker": "Ann", "text": "Hi!"}]}', 201),
    ],
)
def test_a_request_target_in_absolute_form_reaches_its_route(url: str, target: str, method: str, body: bytes, status: int) -> None:
    answered, content = exchange(url, request(target, method, body=body))
    assert answered == status, content


def test_an_absolute_target_is_still_answered_as_its_path_when_no_route_matches(url: str) -> None:
    status, body = exchange(url, request("http://localhost/v1/labels/"))
    assert status == 404 and b"did you mean /v1/labels" in body
    status, body = exchange(url, request("http://localhost/v1/conversations/nope"))
    assert status == 404 and error_code(body) == "unknown_conversation"


def test_the_host_of_an_absolute_target_is_the_one_checked(url: str) -> None:
    # RFC 9112 3.2.2: the URI's authority is the host, the Host header is ignored. A service that
    # checked only the header would answer for a host it is not allowed to serve.
    status, body = exchange(url, request("http://evil.example/v1/labels", host="localhost"))
    assert status == 400 and error_code(body) == "host_not_allowed" and b"evil.example" in body
    status, body = exchange(url, request("http://localhost/v1/labels", host="evil.example"))
    assert status == 200, body


@pytest.mark.parametrize("target", ["http:///v1/labels", "http://user@localhost/v1/labels", "ftp://localhost/v1/labels"])
def test_an_absolute_target_that_is_no_http_uri_naming_a_host_is_a_json_400(url: str, target: str) -> None:
    status, body = exchange(url, request(target))
    assert status == 400 and error_code(body) == "malformed_request", body
    assert target.encode() in body


def test_origin_form_keeps_the_root_path_and_decodes_the_path() -> None:
    from instructerc.service.guard import origin_form

    scope = {
        "type": "http",
        "root_path": "/erc",
        "path": "/erchttp://localhost:8000/v1/conversations/a b",
        "raw_path": b"/erchttp://localhost:8000/v1/conversations/a%20b",
        "headers": [(b"host", b"other.example"), (b"accept", b"*/*")],
    }
    rewritten = origin_form(scope)
    assert rewritten["path"] == "/erc/v1/conversations/a b"
    assert rewritten["raw_path"] == b"/erc/v1/conversations/a%20b"
    assert sorted(rewritten["headers"]) == [(b"accept", b"*/*"), (b"host", b"localhost:8000")]
    plain = {"type": "http", "root_path": "", "path": "/v1/labels", "raw_path": b"/v1/labels", "headers": []}
    assert origin_form(plain) is plain


# -- a body no route reads ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(predictor: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from instructerc.service.app import create_app

    with TestClient(create_app(predictor, ServiceConfig(allowed_origins=(APP,))), base_url="http://localhost") as c:
        yield c


@pytest.mark.parametrize(("encoding", "refused"), [("br", 415), ("gzip", 400)])
def test_a_coded_body_on_a_get_or_delete_is_ignored_as_any_body_there_is(client: Any, encoding: str, refused: int) -> None:
    # GET and DELETE bodies are never read, and a text/plain one was ignored; but one in a coding
    # the guard cannot undo was refused (415, or 400 for bytes that are not gzip), a status these
    # routes do not document.
    headers = {"content-encoding": encoding, "content-type": "application/json"}
    assert client.request("GET", "/v1/labels", content=b"not coded", headers=headers).status_code == 200
    created = client.post("/v1/conversations", json={}).json()["id"]
    assert client.request("DELETE", f"/v1/conversations/{created}", content=b"not coded", headers=headers).status_code == 204
    # A POST's body is read: its coding still matters.
    assert client.post("/v1/conversations", content=b"not coded", headers=headers).status_code == refused


# -- the OpenAPI document ------------------------------------------------------------------------------
def test_routes_without_a_body_do_not_document_a_422_they_never_answer(client: Any) -> None:
    document = client.get("/openapi.json").json()
    by_id = document["paths"]["/v1/conversations/{conversation_id}"]
    assert "422" not in by_id["get"]["responses"] and "422" not in by_id["delete"]["responses"]
    assert {"404", "400", "503"} <= set(by_id["get"]["responses"])
    # An id of any characters is answered 404, never 422.
    assert client.get("/v1/conversations/%00%20%C3%A9" + "x" * 500).status_code == 404
    for path, method in [
        ("/v1/predict", "post"),
        ("/v1/conversations", "post"),
        ("/v1/conversations/{conversation_id}/utterances", "post"),
    ]:
        assert "422" in document["paths"][path][method]["responses"]
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])
    assert client.get("/openapi.json").json() == document  # the same document each time


# -- CORS preflights -----------------------------------------------------------------------------------
def preflight(client: Any, method: str, headers: str | None = None, **extra: str) -> Any:
    asked = {"origin": APP, "access-control-request-method": method, **extra}
    if headers is not None:
        asked["access-control-request-headers"] = headers
    return client.options("/v1/conversations", headers=asked)


@pytest.mark.parametrize(("method", "headers", "refused"), [("PUT", None, "method"), ("POST", "content-type, x-api-key", "headers")])
def test_a_refused_cors_preflight_is_a_json_error(client: Any, method: str, headers: str | None, refused: str) -> None:
    # Starlette answered plain text ("Disallowed CORS method"), the one error of the service no
    # client could read as {"error": ...}.
    response = preflight(client, method, headers)
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "cors_preflight_refused" and refused in error["message"] and "POST" in error["message"]
    assert response.headers["access-control-allow-origin"] == APP  # so the page can read why
    assert response.headers["x-request-id"]


def test_a_cors_preflight_for_a_gzip_body_or_a_private_network_is_allowed(client: Any) -> None:
    # The guard undoes a gzip body, but a page could not send one: Content-Encoding was refused.
    response = preflight(client, "POST", "content-type, content-encoding")
    assert response.status_code == 200, response.text
    # The service listens on loopback: a page of an allowed origin asks Private Network Access first.
    response = preflight(client, "POST", "content-type", **{"access-control-request-private-network": "true"})
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-private-network"] == "true"
    assert preflight(client, "POST", "content-type").status_code == 200


# -- parsing a body ------------------------------------------------------------------------------------
def test_a_body_slow_to_parse_does_not_stall_other_requests(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A megabyte of small arrays takes about a second to parse and check; parsed on the event
    # loop, it held up every other request, health probes included, for as long.
    import threading

    import httpx

    from instructerc.service import app as service_app

    parse, parsing, release = service_app.parse_json, threading.Event(), threading.Event()

    def slow(body: bytes, *args: Any, **kwargs: Any) -> Any:
        if b"slow-parse" in body:
            parsing.set()
            release.wait(60)
        return parse(body, *args, **kwargs)

    monkeypatch.setattr(service_app, "parse_json", slow)
    answers: list[httpx.Response] = []
    body = {"utterances": [{"speaker": "Ann", "text": "slow-parse"}]}
    poster = threading.Thread(target=lambda: answers.append(httpx.post(f"{url}/v1/conversations", json=body, timeout=90)))
    poster.start()
    try:
        assert parsing.wait(30), "the body was never parsed"
        assert httpx.get(f"{url}/healthz", timeout=20).status_code == 200  # answered while the body is parsed
    finally:
        release.set()
        poster.join(90)
    assert answers and answers[0].status_code == 201, answers
