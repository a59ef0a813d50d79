"""The service against HTTP requests found by probing it: declared charsets and byte order marks,
content codings, HEAD and 405 answers, HTTP/1.0 without Host, the connection cap's answer, and
conversations dropped or expiring while one of their turns is being scored."""

from __future__ import annotations

import asyncio
import codecs
import gzip
import json
import socket
import threading
import time
from typing import Any, Iterator, Sequence

import httpx
import pytest

from instructerc.labels.benchmarks import MELD
from instructerc.service.app import create_app
from instructerc.service.config import ServiceConfig
from test_service import serving, serving_app
from tiny import tiny_model_dir

ONE = '{"utterances": [{"speaker": "Ann", "text": "Café au lait"}]}'


@pytest.fixture(scope="module")
def inner(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from instructerc.inference.predictor import Predictor

    return Predictor.from_directory(tiny_model_dir(tmp_path_factory.mktemp("http-probe") / "model", MELD), device="cpu")


@pytest.fixture(scope="module")
def url(inner: Any) -> Iterator[str]:
    with serving(inner, ServiceConfig()) as base:
        yield base


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def raw(url: str, request: bytes) -> bytes:
    with socket.create_connection(address(url), timeout=20) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        return data


def create(url: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/conversations", content=body, headers={"content-type": "application/json", **headers}, timeout=30)


def error_of(response: httpx.Response, status: int, code: str, field: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error.get("field")) == (code, field), error
    return error["message"]


# -- charsets and byte order marks -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "content_type", "text"),
    [
        # Read as UTF-8, a latin-1 body was refused, or worse: 'CafÃ©' in latin-1 is valid UTF-8
        # for 'Café', so a text was silently changed.
        (ONE.encode("latin-1"), "application/json; charset=latin-1", "Café au lait"),
        (ONE.replace("Café", "CafÃ©").encode("latin-1"), "application/json; charset=ISO-8859-1", "CafÃ© au lait"),
        (ONE.encode("utf-16"), 'application/json; charset="utf-16"', "Café au lait"),
        (ONE.encode("utf-16-le"), "application/json; charset=utf-16le", "Café au lait"),
        # A byte order mark (PowerShell and Windows editors write one) was "not valid JSON".
        (codecs.BOM_UTF8 + ONE.encode(), "application/json", "Café au lait"),
        (codecs.BOM_UTF8 + ONE.encode(), "application/json; charset=utf-8", "Café au lait"),
        (ONE.encode("utf-16"), "application/json", "Café au lait"),
        (ONE.encode("utf-32"), "application/json", "Café au lait"),
    ],
    ids=["latin-1", "latin-1-mojibake", "utf-16", "utf-16le", "utf-8-bom", "utf-8-bom-declared", "utf-16-bom", "utf-32-bom"],
)
def test_a_body_is_read_in_its_declared_charset_or_byte_order_mark(url: str, body: bytes, content_type: str, text: str) -> None:
    response = create(url, body, **{"content-type": content_type})
    assert response.status_code == 201, response.text
    assert response.json()["utterances"][0]["text"] == text


def test_a_charset_that_is_no_text_encoding_is_a_415_naming_the_content_type(url: str) -> None:
    for charset in ("klingon", "base64"):
        message = error_of(
            create(url, ONE.encode(), **{"content-type": f"application/json; charset={charset}"}),
            415,
            "unsupported_media_type",
            "content-type",
        )
        assert repr(charset) in message


def test_a_body_not_in_its_declared_charset_says_which(url: str) -> None:
    message = error_of(create(url, ONE.encode("latin-1"), **{"content-type": "application/json; charset=utf-8"}), 400, "malformed_json")
    assert "not UTF-8" in message


# -- content codings -------------------------------------------------------------------------------
def test_a_gzip_or_deflate_body_is_read_once_undone(url: str) -> None:
    import zlib

    for coding, body in (
        ("gzip", gzip.compress(ONE.encode())),
        ("deflate", zlib.compress(ONE.encode())),
        ("x-gzip, identity", gzip.compress(ONE.encode())),
    ):
        response = create(url, body, **{"content-encoding": coding})
        assert response.status_code == 201, (coding, response.text)  # was 400 "the body is not UTF-8"
        assert response.json()["utterances"][0]["text"] == "Café au lait"


def test_content_codings_that_cannot_be_read_are_refused_clearly(url: str) -> None:
    message = error_of(create(url, ONE.encode(), **{"content-encoding": "br"}), 415, "unsupported_media_type", "content-encoding")
    assert "'br'" in message
    # A body that is not gzip although it says so was read as if it were plain.
    error_of(create(url, ONE.encode(), **{"content-encoding": "gzip"}), 400, "malformed_json", "content-encoding")
    error_of(create(url, gzip.compress(ONE.encode())[:20], **{"content-encoding": "gzip"}), 400, "malformed_json", "content-encoding")
    # 48 KB of gzip that expands to 50 MB: refused at the body bound, never expanded whole.
    bomb = gzip.compress(b" " * 50_000_000)
    assert len(bomb) < ServiceConfig().max_body_bytes
    error_of(create(url, bomb, **{"content-encoding": "gzip"}), 413, "body_too_large")


# -- methods ---------------------------------------------------------------------------------------
def test_get_resources_answer_head_and_405_names_every_method_of_the_path(url: str) -> None:
    conversation = create(url, b"").json()["id"]
    with httpx.Client(base_url=url, timeout=30) as client:
        for path in ("/v1/labels", f"/v1/conversations/{conversation}"):
            head, get = client.head(path), client.get(path)
            assert head.status_code == 200, path  # was 405
            assert head.content == b"" and head.headers["content-length"] == str(len(get.content))
        assert client.head("/v1/conversations/nope").status_code == 404
        refused = client.put(f"/v1/conversations/{conversation}")
        # The Allow header said GET only: DELETE lives on a second route of the same path.
        assert refused.headers["allow"] == "DELETE, GET, HEAD"
        assert "DELETE" in error_of(refused, 405, "method_not_allowed")
        assert client.request("OPTIONS", "/v1/predict").headers["allow"] == "POST"


def test_an_http_1_0_request_without_host_is_served(url: str) -> None:
    answer = raw(url, b"GET /v1/labels HTTP/1.0\r\n\r\n")  # HTTP/1.0 has no Host header
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert raw(url, b"GET /v1/labels HTTP/1.0\r\nHost: example.com\r\n\r\n").startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/labels HTTP/1.1\r\nConnection: close\r\n\r\n",  # HTTP/1.1 requires Host
        b"POST /v1/conversations HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",  # not a chunk size
        b"NOT HTTP\r\n\r\n",
    ],
    ids=["no-host", "bad-chunk", "garbage"],
)
def test_a_request_the_http_parser_refuses_gets_the_services_json_400(url: str, request_bytes: bytes) -> None:
    head, _, body = raw(url, request_bytes).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    # Was uvicorn's text/plain "Invalid HTTP request received." without a request id.
    assert b"content-type: application/json" in head.lower() and b"x-request-id: " in head.lower()
    assert json.loads(body)["error"]["code"] == "malformed_request"


# -- the connection cap ----------------------------------------------------------------------------
def test_a_request_beyond_the_connection_cap_gets_the_services_json_503(inner: Any) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: over-the-cap\r\nConnection: close\r\n\r\n"
    with serving(inner, ServiceConfig(max_connections=2)) as base:
        first = socket.create_connection(address(base), timeout=10)
        try:
            time.sleep(0.2)
            # The cap's own connection: uvicorn refused the second of two allowed connections.
            assert raw(base, request).startswith(b"HTTP/1.1 200")
            second = socket.create_connection(address(base), timeout=10)
            try:
                time.sleep(0.2)
                answer = raw(base, request)
            finally:
                second.close()
        finally:
            first.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer  # was text/plain "Service Unavailable"
    assert b"content-type: application/json" in head.lower() and b"x-request-id: over-the-cap" in head.lower()
    assert b"retry-after: 1" in head.lower()
    assert b'"code": "overloaded"' in body and b"2 connections" in body


# -- conversations dropped while a turn is scored ---------------------------------------------------
class GatedTurns:
    """The real predictor; a live turn whose text holds 'wait' blocks until ``gate`` opens."""

    caches_turns = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()

    @property
    def label_set(self) -> Any:
        return self.inner.label_set

    def predict_at(self, items: Sequence[Any], mode: str = "score") -> list[Any]:
        return self.inner.predict_at(items, mode)

    def predict_turns(self, turns: Sequence[Any]) -> list[Any]:
        if any("wait" in dialogue.utterances[-1].text for dialogue, _ in turns):
            self.entered.set()
            assert self.gate.wait(30)
        return self.inner.predict_turns(turns)


def turn_while_blocked(base: str, predictor: GatedTurns, meanwhile: Any) -> tuple[str, httpx.Response]:
    """Add a blocking turn to a new conversation, run ``meanwhile(client, id)`` while it is
    scored, then let it finish; returns the id and the turn's answer."""

    async def scenario() -> tuple[str, httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            conversation = (await client.post("/v1/conversations", json={"utterances": [{"speaker": "Ann", "text": "Hi"}]})).json()["id"]
            turn = asyncio.ensure_future(
                client.post(f"/v1/conversations/{conversation}/utterances", json={"speaker": "Bob", "text": "please wait"})
            )
            assert await asyncio.get_running_loop().run_in_executor(None, predictor.entered.wait, 20)
            await meanwhile(client, conversation)
            predictor.gate.set()
            return conversation, await turn

    return asyncio.run(scenario())


def test_a_conversation_deleted_while_its_turn_is_scored_leaves_nothing_in_the_cache_store(inner: Any) -> None:
    predictor = GatedTurns(inner)

    async def delete(client: httpx.AsyncClient, conversation: str) -> None:
        assert (await client.delete(f"/v1/conversations/{conversation}")).status_code == 204

    config = ServiceConfig()
    app = create_app(predictor, config)
    with serving_app(app, config) as base:
        conversation, turn = turn_while_blocked(base, predictor, delete)
        assert turn.status_code == 200
        assert httpx.get(f"{base}/v1/conversations/{conversation}").status_code == 404
    caches = app.state.service.caches
    # The id stayed in the store's books of taken and discarded caches for ever, one per such turn.
    assert (len(caches), caches.nbytes, caches._taken, caches._discarded) == (0, 0, set(), set())


def test_a_conversation_does_not_expire_while_its_turn_is_scored(inner: Any) -> None:
    predictor = GatedTurns(inner)

    async def idle_past_expiry(client: httpx.AsyncClient, conversation: str) -> None:
        await asyncio.sleep(1.5)
        assert (await client.get("/healthz")).json()["conversations"] == 1  # it was expired here

    with serving(predictor, ServiceConfig(max_idle_seconds=1)) as base:
        conversation, turn = turn_while_blocked(base, predictor, idle_past_expiry)
        assert turn.status_code == 200 and turn.json()["index"] == 1
        # The turn was answered 200, and then the conversation with it was gone (404).
        kept = httpx.get(f"{base}/v1/conversations/{conversation}")
        assert kept.status_code == 200 and [u["text"] for u in kept.json()["utterances"]] == ["Hi", "please wait"]
