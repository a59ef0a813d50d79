"""The service against requests found by probing it: text checks over the whole body, settings
that are not numbers, and what the OpenAPI document promises."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import torch

from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.service.config import ServiceConfig
from test_service import CountingPredictor, serving
from tiny import tiny_model_dir

ONE = {"utterances": [{"speaker": "Ann", "text": "Hi! How are you?"}]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("probe2") / "model", MELD)


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[httpx.Client]:
    from instructerc.inference.predictor import Predictor

    predictor = CountingPredictor(Predictor.from_directory(model_dir, device="cpu"))
    with serving(predictor, ServiceConfig()) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def post_raw(client: httpx.Client, path: str, body: str) -> httpx.Response:
    return client.post(path, content=body.encode("utf-8"), headers={"content-type": "application/json"})


def assert_error(response: httpx.Response, status: int, code: str, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error.get("field")) == (code, field), error
    return error


# -- text checks cover every key and value of a body -----------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        # An unknown key is echoed in the error, which could not be encoded: it was a 500.
        ("/v1/conversations", '{"\\ud800": 1}', "\\ud800", "lone surrogate"),
        # Keys beside 'dialogues' were never checked, against the README's "in any key or string".
        ("/v1/predict", '{"dialogues": [%s], "note": "a\\u0000b"}', "note", "NUL"),
        ("/v1/predict", '{"dialogues": [%s], "\\udfff": 1}', "\\udfff", "lone surrogate"),
        ("/v1/predict", '{"dialogues": [%s], "weight": NaN}', "weight", "NaN is not a JSON number"),
        # Was refused as "must be a non-empty list", which hid what was wrong with it.
        ("/v1/predict", '{"dialogues": NaN}', "dialogues", "NaN is not a JSON number"),
        ("/v1/conversations", '{"utterances": Infinity}', "utterances", "Infinity is not a JSON number"),
    ],
)
def test_bad_text_or_numbers_anywhere_in_a_body_are_a_422_naming_the_field(
    client: httpx.Client, path: str, body: str, field: str, message: str
) -> None:
    body = body % json.dumps(ONE) if "%s" in body else body
    assert message in assert_error(post_raw(client, path, body), 422, "invalid_request", field)["message"]


# -- settings --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["max_idle_seconds", "request_timeout_seconds", "max_wait_ms", "turn_cache_mb", "wait_share"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_settings_that_are_not_finite_numbers_are_refused(name: str, value: float) -> None:
    # A NaN passed every check: a NaN idle time dropped every conversation at once, a NaN body
    # timeout answered every POST 408, a NaN cache size failed with a traceback.
    with pytest.raises(InputError, match="finite") as caught:
        ServiceConfig(**{name: value})
    assert caught.value.field == name


def test_serve_refuses_a_nan_setting_in_one_line(run_cli, tmp_path: Path) -> None:
    # The settings are checked before the model directory, so no model is needed to see it.
    result = run_cli("serve", "--model", tmp_path / "no-model", "--max-idle-seconds", "nan")
    assert result.code == 2
    assert "--max-idle-seconds" in result.err and "finite" in result.err and "Traceback" not in result.err


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("bogus", "'bogus' is not a device"),
        pytest.param(
            "cuda:7",
            "cannot compute on 'cuda:7'",
            marks=pytest.mark.skipif(torch.cuda.device_count() > 7, reason="the machine has that device"),
        ),
    ],
)
def test_serve_names_a_device_this_machine_lacks_before_taking_the_port(run_cli, model_dir: Path, device: str, message: str) -> None:
    # It was a traceback from deep inside the model load, after the port had been bound.
    result = run_cli("serve", "--model", model_dir, "--port", str(free_port()), "--device", device)
    assert result.code == 2
    assert "argument --device:" in result.err and message in result.err
    assert "serving" not in result.out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the OpenAPI document --------------------------------------------------------------------------
def documented(client: httpx.Client, method: str, path: str) -> set[int]:
    return {int(status) for status in client.get("/openapi.json").json()["paths"][path][method]["responses"]}


def test_every_endpoint_documents_the_statuses_it_answers_and_no_others(client: httpx.Client) -> None:
    # Any route can be refused by the guard; the labels and health routes documented none of it.
    refused = client.get("/v1/labels", headers={"host": "evil.example"})
    assert refused.status_code == 400 and refused.status_code in documented(client, "get", "/v1/labels")
    assert refused.status_code in documented(client, "get", "/healthz")
    # Only creating a conversation is rate limited, and /v1/predict has no conversation to miss or fill.
    assert 429 in documented(client, "post", "/v1/conversations")
    assert not {404, 409, 429} & documented(client, "post", "/v1/predict")
    assert not {409, 415, 429} & documented(client, "get", "/v1/conversations/{conversation_id}")
    missing = client.get("/v1/conversations/nope")
    assert missing.status_code == 404 and 404 in documented(client, "get", "/v1/conversations/{conversation_id}")


# -- serve's options -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "answered"),
    [
        (["--host", "127.0.0.2"], {"localhost", "127.0.0.1", "::1", "127.0.0.2"}),
        # Naming other hosts replaces the loopback names, not the address the server binds.
        (["--host", "127.0.0.2", "--allowed-host", "api.example"], {"api.example", "127.0.0.2"}),
        (["--host", "0.0.0.0", "--allowed-host", "api.example"], {"api.example"}),
    ],
)
def test_serve_answers_the_address_it_binds(run_cli, monkeypatch: pytest.MonkeyPatch, model_dir: Path, options, answered) -> None:
    from instructerc.service import server

    served: dict[str, Any] = {}
    monkeypatch.setattr(server, "listening_socket", lambda host, port: None)
    monkeypatch.setattr(server, "serve", lambda model, config, **kwargs: served.update(config=config))
    result = run_cli("serve", "--model", model_dir, *options)
    assert result.code == 0, result.err
    assert set(served["config"].allowed_hosts) == answered


# -- conversations in use --------------------------------------------------------------------------
def test_a_conversation_whose_turn_is_in_flight_is_never_evicted(model_dir: Path) -> None:
    from instructerc.inference.predictor import Predictor
    from test_service_hardening import GatedPredictor

    predictor = GatedPredictor(Predictor.from_directory(model_dir, device="cpu"))
    # Every conversation is old enough to evict at once: only being in use can keep one.
    config = ServiceConfig(max_conversations=1, evict_after_idle_seconds=0)
    with serving(predictor, config) as url, httpx.Client(base_url=url, timeout=30) as client:
        busy = client.post("/v1/conversations").json()["id"]
        answers: dict[str, httpx.Response] = {}
        turn = threading.Thread(
            target=lambda: answers.update(turn=client.post(f"/v1/conversations/{busy}/utterances", json={"speaker": "Ann", "text": "wait"}))
        )
        turn.start()
        try:
            assert predictor.entered.wait(20)
            # It was created by evicting the busy one, whose turn was then answered 200 and lost.
            assert_error(client.post("/v1/conversations"), 503, "conversations_full", None)
        finally:
            predictor.gate.set()
            turn.join(30)
        assert answers["turn"].status_code == 200, answers["turn"].text
        assert [u["text"] for u in client.get(f"/v1/conversations/{busy}").json()["utterances"]] == ["wait"]
        assert client.post("/v1/conversations").status_code == 201  # idle again: evictable as configured


@pytest.mark.parametrize("host", ["", "  "])
def test_serve_refuses_an_empty_host_instead_of_listening_everywhere(
    run_cli, monkeypatch: pytest.MonkeyPatch, model_dir: Path, host: str
) -> None:
    # An empty address binds every interface (0.0.0.0) while the README promises this machine
    # only unless told otherwise: --host "$HOST" with HOST unset opened the service to the network.
    from instructerc.service import server

    bound: list[str] = []
    monkeypatch.setattr(server, "listening_socket", lambda host, port: bound.append(host))
    monkeypatch.setattr(server, "serve", lambda model, config, **kwargs: None)
    with pytest.raises(SystemExit) as exit_:
        run_cli("serve", "--model", model_dir, "--host", host)
    assert exit_.value.code == 2 and bound == []
