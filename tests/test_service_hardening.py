"""The service against hostile or careless clients, on a real uvicorn server: who may call, slow
and vanished clients, queues behind one conversation, a dead worker, request ids, bad text."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx
import pytest

from instructerc.labels.benchmarks import MELD
from instructerc.service.config import ServiceConfig
from test_service import CountingPredictor, serving, utterances
from tiny import tiny_model_dir


class Fatal(BaseException):
    """Not an ``Exception``: what a model call might raise that no ``except Exception`` catches."""


class GatedPredictor(CountingPredictor):
    """Texts holding 'wait' block the model until ``gate`` opens; 'fatal' raises :class:`Fatal`;
    every text the model was asked about is recorded."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.seen: list[str] = []

    def predict_at(self, items: Sequence[tuple[Any, int]], mode: str = "score") -> list[Any]:
        texts = [d.utterances[i].text for d, i in items]
        self.seen += texts
        if any("fatal" in t for t in texts):
            raise Fatal("the model process is going down")
        if any("wait" in t for t in texts):
            self.entered.set()
            assert self.gate.wait(30)
        return super().predict_at(items, mode)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("hardening") / "model", MELD, max_length=200)


@pytest.fixture
def predictor(model_dir: Path) -> GatedPredictor:
    from instructerc.inference.predictor import Predictor

    return GatedPredictor(Predictor.from_directory(model_dir, device="cpu"))


@pytest.fixture(scope="module")
def shared(model_dir: Path) -> Iterator[str]:
    """One server with the default limits, for the tests that change nothing."""
    from instructerc.inference.predictor import Predictor

    with serving(CountingPredictor(Predictor.from_directory(model_dir, device="cpu")), ServiceConfig(max_utterance_chars=50_000)) as url:
        yield url


def one_dialogue(text: str = "Hi! How are you?") -> dict[str, Any]:
    return {"dialogues": [{"utterances": [{"speaker": "Ann", "text": text}]}]}


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def raw(url: str, request: bytes, timeout: float = 10) -> bytes:
    """Send ``request`` on a new connection; everything the server answers until it closes."""
    with socket.create_connection(address(url), timeout=timeout) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        return data


def post(host: str, body: bytes, content_type: str = "application/json", extra: str = "") -> bytes:
    return (
        f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    ).encode() + body


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


# -- who may call ---------------------------------------------------------------------------------
def test_only_allowed_host_names_are_answered(shared: str) -> None:
    port = address(shared)[1]
    body = json.dumps(one_dialogue()).encode()

    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", f"LOCALHOST.:{port}"):
        assert raw(shared, post(host, body)).startswith(b"HTTP/1.1 200"), host
    for host in (f"evil.example:{port}", "attacker.test", f"127.0.0.1.nip.io:{port}", ""):
        answer = raw(shared, post(host, body))
        assert answer.startswith(b"HTTP/1.1 400"), (host, answer[:200])
        assert b'"host_not_allowed"' in answer


def test_configured_host_names_replace_the_loopback_ones(model_dir: Path, predictor: GatedPredictor) -> None:
    with serving(predictor, ServiceConfig(allowed_hosts=("api.example",))) as url:
        body = json.dumps(one_dialogue()).encode()
        assert raw(url, post("api.example:8000", body)).startswith(b"HTTP/1.1 200")
        assert raw(url, post("localhost", body)).startswith(b"HTTP/1.1 400")


def test_cross_origin_requests_are_refused_unless_allowed(shared: str, predictor: GatedPredictor) -> None:
    with httpx.Client(base_url=shared, timeout=30) as client:
        refused = client.post("/v1/predict", json=one_dialogue(), headers={"origin": "https://evil.example"})
        assert "origin" in error_of(refused, 403, "cross_origin_refused")["message"]
        assert error_of(client.post("/v1/conversations", headers={"origin": "null"}), 403, "cross_origin_refused")
        assert client.post("/v1/predict", json=one_dialogue(), headers={"origin": shared}).status_code == 200  # the /docs page
        preflight = client.options("/v1/predict", headers={"origin": "https://evil.example", "access-control-request-method": "POST"})
        assert preflight.status_code == 403

    with (
        serving(predictor, ServiceConfig(allowed_origins=("https://app.example",))) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        allowed = client.post("/v1/predict", json=one_dialogue(), headers={"origin": "https://app.example"})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
        preflight = client.options(
            "/v1/predict",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert preflight.status_code == 200 and "POST" in preflight.headers["access-control-allow-methods"]
        error_of(client.post("/v1/predict", json=one_dialogue(), headers={"origin": "https://evil.example"}), 403, "cross_origin_refused")


@pytest.mark.parametrize("refused", ["host", "origin", "too-large", "declared-too-large"])
def test_a_refusal_reads_the_rest_of_the_body_before_it_answers(refused: str) -> None:
    """Closing a connection with body bytes still unread makes the kernel send a reset, which can
    erase the answer before the client reads it (it did, once in about a hundred refused POSTs)."""
    from instructerc.service.guard import RequestGuard

    async def never_called(scope: dict, receive: Any, send: Any) -> None:
        raise AssertionError("a refused request reached the app")

    guard = RequestGuard(never_called, ServiceConfig(max_body_bytes=1000))
    headers = [(b"host", b"evil.example" if refused == "host" else b"localhost:8000"), (b"content-type", b"application/json")]
    if refused == "origin":
        headers.append((b"origin", b"https://evil.example"))
    if refused == "declared-too-large":
        headers.append((b"content-length", b"2400"))
    pieces = [b"x" * 800, b"x" * 800, b"x" * 800] if "too-large" in refused else [b"{", b"}"]
    events: list[str] = []

    async def receive() -> dict:
        body = pieces.pop(0)
        events.append("read")
        return {"type": "http.request", "body": body, "more_body": bool(pieces)}

    async def send(message: dict) -> None:
        events.append(message["type"])

    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": headers}
    asyncio.run(guard(scope, receive, send))
    assert not pieces, "part of the body was left unread"
    assert events[-2:] == ["http.response.start", "http.response.body"] and "read" not in events[events.index("http.response.start") :]


@pytest.mark.parametrize("refused", ["host", "origin", "too-large"])
def test_a_refused_request_whose_body_comes_late_still_gets_its_answer(shared: str, refused: str) -> None:
    """The refusal is decided before the whole body is read; what is still in flight must be read
    before the connection closes, or the client's kernel sees a reset instead of the answer."""
    host, port = address(shared)
    if refused == "too-large":  # chunked, and the first chunks already pass the 1 MiB limit
        chunks = [b"%x\r\n%s\r\n" % (65536, b"x" * 65536) for _ in range(24)] + [b"0\r\n\r\n"]
        head = f"POST /v1/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        head += "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        early, late = head.encode() + b"".join(chunks[:18]), b"".join(chunks[18:])
    else:
        body = json.dumps(one_dialogue()).encode()
        request = (
            post("evil.example", body) if refused == "host" else post(f"{host}:{port}", body, extra="Origin: https://evil.example\r\n")
        )
        early, late = request[: -len(body)], body
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(early)
        time.sleep(0.3)  # the server has decided by now
        conn.sendall(late)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    status = {"host": b"HTTP/1.1 400", "origin": b"HTTP/1.1 403", "too-large": b"HTTP/1.1 413"}[refused]
    assert data.startswith(status), data[:200]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", None])
def test_a_body_that_is_not_declared_json_is_415(shared: str, content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    with httpx.Client(base_url=shared, timeout=30) as client:
        body = json.dumps(one_dialogue()).encode()
        error = error_of(client.post("/v1/predict", content=body, headers=headers), 415, "unsupported_media_type")
        assert error["field"] == "content-type"
        assert client.post("/v1/predict", content=body, headers={"content-type": "application/json; charset=utf-8"}).status_code == 200
        assert client.post("/v1/conversations").status_code == 201, "an empty body needs no type"


# -- request ids ----------------------------------------------------------------------------------
def test_every_response_carries_a_request_id_and_so_do_its_log_lines(shared: str) -> None:
    from instructerc.service.guard import RequestIdFilter

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.addFilter(RequestIdFilter())
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("instructerc.service")
    logger.addHandler(handler)
    try:
        with httpx.Client(base_url=shared, timeout=30) as client:
            responses = [
                client.post("/v1/predict", json=one_dialogue()),
                client.get("/healthz"),
                client.get("/v1/nothing"),
                client.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"}),
                client.post("/v1/predict", json=one_dialogue("boom")),
            ]
            echoed = client.get("/healthz", headers={"x-request-id": "client-trace.42"})
            replaced = client.get("/healthz", headers={"x-request-id": "bad id\twith tab"})
    finally:
        logger.removeHandler(handler)

    ids = [r.headers["x-request-id"] for r in responses]
    assert all(ids) and len(set(ids)) == len(ids)
    assert echoed.headers["x-request-id"] == "client-trace.42"
    assert replaced.headers["x-request-id"] not in ("", "bad id\twith tab")
    failure = [r for r in records if "the model failed" in r.getMessage()]
    assert failure and failure[0].request_id == ids[-1], "the log line names the request it is about"


def test_the_served_log_format_shows_the_request_id() -> None:
    from uvicorn.logging import DefaultFormatter

    from instructerc.service.guard import REQUEST_ID, RequestIdFilter
    from instructerc.service.server import log_config

    config = log_config()
    assert all("[%(request_id)s]" in f["fmt"] for f in config["formatters"].values())
    assert all(h["filters"] == ["request_id"] for h in config["handlers"].values())
    formatter = DefaultFormatter(fmt=config["formatters"]["default"]["fmt"], use_colors=False)
    record = logging.LogRecord("instructerc.service.app", logging.WARNING, __file__, 1, "hello", None, None)
    token = REQUEST_ID.set("abc123")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    assert formatter.format(record) == "WARNING:  [abc123] hello"


# -- slow clients and connections -----------------------------------------------------------------
def test_a_client_that_sends_one_body_byte_is_cut_off(model_dir: Path, predictor: GatedPredictor) -> None:
    with serving(predictor, ServiceConfig(request_timeout_seconds=1)) as url:
        start = time.monotonic()
        answer = raw(url, b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{")
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
        assert time.monotonic() - start < 5


def test_a_client_that_never_finishes_its_headers_is_disconnected(model_dir: Path, predictor: GatedPredictor) -> None:
    with serving(predictor, ServiceConfig(request_timeout_seconds=1, keep_alive_seconds=30)) as url:
        start = time.monotonic()
        with socket.create_connection(address(url), timeout=10) as conn:
            conn.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n")
            assert conn.recv(1024) == b"", "closed by the server"
        assert time.monotonic() - start < 5
        with httpx.Client(base_url=url, timeout=30) as client:  # and an ordinary client after it is served
            assert client.post("/v1/predict", json=one_dialogue()).status_code == 200


def test_connections_beyond_the_cap_are_refused(model_dir: Path, predictor: GatedPredictor) -> None:
    with serving(predictor, ServiceConfig(max_connections=3)) as url:
        idle = [socket.create_connection(address(url), timeout=10) for _ in range(3)]
        try:
            time.sleep(0.2)
            assert raw(url, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 503")
        finally:
            for conn in idle:
                conn.close()
        time.sleep(0.2)
        assert raw(url, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")


# -- queues, vanished clients, a dead worker ------------------------------------------------------
def test_requests_waiting_for_a_conversations_lock_count_as_pending(model_dir: Path, predictor: GatedPredictor) -> None:
    with serving(predictor, ServiceConfig(max_pending=2)) as url:
        path = httpx.post(f"{url}/v1/conversations", timeout=30).json()["id"]

        async def scenario() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:

                def add(text: str):
                    return asyncio.ensure_future(client.post(f"/v1/conversations/{path}/utterances", json={"speaker": "Ann", "text": text}))

                first = add("please wait")
                await asyncio.get_running_loop().run_in_executor(None, predictor.entered.wait, 10)
                second = add("second")
                await until_pending(client, 2)  # waiting for the conversation's lock, and counted
                third = await add("third")  # 2 pending (running + waiting for the lock): refused at once
                predictor.gate.set()
                return [await first, await second, third]

        first, second, third = asyncio.run(scenario())
    assert (first.status_code, second.status_code) == (200, 200)
    error_of(third, 503, "overloaded")
    assert third.headers["retry-after"] == "1"
    assert "third" not in predictor.seen


async def until_pending(client: httpx.AsyncClient, count: int, seconds: float = 20) -> None:
    """Wait until the service counts ``count`` utterances waiting for or in the model."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (await client.get("/healthz")).json()["pending"] < count:
        assert asyncio.get_running_loop().time() < deadline, f"fewer than {count} pending after {seconds} s"
        await asyncio.sleep(0.05)


def test_a_request_whose_client_went_away_is_not_computed(model_dir: Path, predictor: GatedPredictor) -> None:
    with serving(predictor, ServiceConfig()) as url:

        async def scenario() -> httpx.Response:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                first = asyncio.ensure_future(client.post("/v1/predict", json=one_dialogue("please wait")))
                await asyncio.get_running_loop().run_in_executor(None, predictor.entered.wait, 10)
                body = json.dumps(one_dialogue("nobody is listening")).encode()
                conn = socket.create_connection(address(url), timeout=10)
                conn.sendall(post("localhost", body))
                await until_pending(client, 2)  # queued behind the running batch (not by a fixed sleep: CI may be slow)
                conn.close()  # gone while its request waits
                await asyncio.sleep(0.5)
                predictor.gate.set()
                return await first

        assert asyncio.run(scenario()).status_code == 200
        # The worker counts the abandoned request when it reaches it, after answering the first
        # one (it stops counting as pending as soon as its client goes): wait for that.
        deadline = time.monotonic() + 20
        while not (health := httpx.get(f"{url}/healthz", timeout=30).json())["dropped"] and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "nobody is listening" not in predictor.seen
    assert health["dropped"] == 1 and health["pending"] == 0, health


def test_a_worker_dead_of_a_non_exception_fails_health_and_every_request(model_dir: Path, predictor: GatedPredictor) -> None:
    with serving(predictor, ServiceConfig()) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/healthz").json()["status"] == "ok"

        error_of(client.post("/v1/predict", json=one_dialogue("fatal")), 503, "unavailable")
        error_of(client.post("/v1/predict", json=one_dialogue()), 503, "unavailable")
        error_of(client.post("/v1/conversations"), 503, "unavailable")
        error_of(client.post("/v1/conversations", json={"utterances": utterances(2)}), 503, "unavailable")
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "failed"
        assert client.head("/healthz").status_code == 503


# -- conversations cannot be created to evict the live ones -----------------------------------------
def test_creating_conversations_is_rate_bounded(model_dir: Path, predictor: GatedPredictor) -> None:
    config = ServiceConfig(new_conversation_burst=3, new_conversations_per_second=0.01)
    with serving(predictor, config) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert [client.post("/v1/conversations").status_code for _ in range(3)] == [201] * 3
        refused = client.post("/v1/conversations")
        error_of(refused, 429, "too_many_new_conversations")
        assert refused.headers["retry-after"] == "1"
        assert client.get("/healthz").json()["conversations"] == 3


def test_a_full_store_never_evicts_conversations_in_use(model_dir: Path, predictor: GatedPredictor) -> None:
    with (
        serving(predictor, ServiceConfig(max_conversations=2, evict_after_idle_seconds=60)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        live = [client.post("/v1/conversations").json()["id"] for _ in range(2)]
        for _ in range(5):
            error_of(client.post("/v1/conversations"), 503, "conversations_full")
        assert all(client.get(f"/v1/conversations/{c}").status_code == 200 for c in live)


# -- bad text and long text -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw_body", "status", "field"),
    [
        ('{"dialogues": [{"utterances": [{"speaker": "Ann", "text": "a \\ud800 b"}]}]}', 422, "dialogues[0].utterances[0].text"),
        ('{"dialogues": [{"utterances": [{"speaker": "A\\u0000nn", "text": "Hi"}]}]}', 422, "dialogues[0].utterances[0].speaker"),
        (
            '{"dialogues": [{"utterances": [{"speaker": "Ann", "text": "Hi", "n": ' + "7" * 5000 + "}]}]}",
            422,
            "dialogues[0].utterances[0].n",
        ),
        ('{"dialogues": [{"utterances": [{"speaker": "Ann", "text": "Hi", "n": 1e999}]}]}', 422, "dialogues[0].utterances[0].n"),
        ('{"dialogues": [{"x": ' + "[" * 100 + "]" * 100 + ', "utterances": [{"speaker": "Ann", "text": "Hi"}]}]}', 400, None),
    ],
    ids=["lone-surrogate", "nul", "5000-digit-number", "infinite-number", "deep-nesting"],
)
def test_bad_text_is_a_4xx_naming_the_field(shared: str, raw_body: str, status: int, field: str | None) -> None:
    with httpx.Client(base_url=shared, timeout=30) as client:
        response = client.post("/v1/predict", content=raw_body.encode(), headers={"content-type": "application/json"})
        error = error_of(response, status, "invalid_request" if status == 422 else "malformed_json")
        assert error.get("field") == field
        path = f"/v1/conversations/{client.post('/v1/conversations').json()['id']}/utterances"
        bad = client.post(path, content=b'{"speaker": "Ann", "text": "x \\udfff"}', headers={"content-type": "application/json"})
        assert error_of(bad, 422, "invalid_request")["field"] == "text"
        assert client.get("/healthz").status_code == 200


def test_an_utterance_over_the_budget_is_labelled_and_marked(shared: str) -> None:
    long_text = " ".join(f"Sentence {k}: the fern has a new leaf." for k in range(300))
    with httpx.Client(base_url=shared, timeout=60) as client:
        response = client.post(
            "/v1/predict", json={"dialogues": [{"utterances": [{"speaker": "Ann", "text": "Hi!"}, {"speaker": "Bob", "text": long_text}]}]}
        )
        assert response.status_code == 200, response.text
        first, second = response.json()["dialogues"][0]["utterances"]
        assert (first["truncated"], second["truncated"]) == (False, True)
        assert second["text"] == long_text and second["predicted_emotion"] in MELD.labels
