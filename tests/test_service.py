"""The HTTP service end to end: a real uvicorn server on loopback, a tiny model, httpx clients."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx
import pytest

from instructerc.errors import InputError  # noqa: E402
from instructerc.labels.benchmarks import MELD  # noqa: E402
from instructerc.service.config import ServiceConfig  # noqa: E402
from tiny import tiny_model_dir  # noqa: E402

TEXTS = [
    "Hi! How are you?",
    "I am fine, thanks.",
    "Oh no, that is terrible.",
    "Great news!",
    "Did you water the fern?",
    "It looks thirsty.",
    "Splendid, a new leaf!",
    "I am so angry right now.",
    "Why would you say that?",
    "Sorry, my fault.",
]
# Small limits, so each can be crossed with small requests.
STRICT = ServiceConfig(
    max_body_bytes=20_000,
    max_dialogues=3,
    max_utterances=12,
    max_utterance_chars=200,
    max_speaker_chars=20,
    max_conversations=4,
    max_conversation_utterances=12,
    max_batch_size=16,
    max_wait_ms=20,
    evict_after_idle_seconds=0,
)


def utterances(count: int, start: int = 0) -> list[dict[str, str]]:
    return [{"speaker": "Ann" if k % 2 == 0 else "Bob", "text": TEXTS[k % len(TEXTS)]} for k in range(start, start + count)]


class CountingPredictor:
    """The real predictor, counting model calls; texts holding 'boom' make the model raise,
    texts holding 'unpromptable' make the prompt builder refuse (as an over-long text does)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[int] = []

    @property
    def label_set(self):
        return self.inner.label_set

    def predict_at(self, items: Sequence[tuple[Any, int]], mode: str = "score") -> list[Any]:
        self.calls.append(len(items))
        texts = [d.utterances[i].text for d, i in items]
        if any("boom" in t for t in texts):
            raise RuntimeError("the model broke")
        if any("unpromptable" in t for t in texts):
            raise InputError("utterance 0 needs 9999 tokens even without history and demonstration, more than max_length=512")
        return self.inner.predict_at(items, mode)


@contextmanager
def serving(predictor: Any, config: ServiceConfig) -> Iterator[str]:
    """A real uvicorn server in a thread, on a free loopback port; yields its base URL."""
    from instructerc.service.app import create_app

    with serving_app(create_app(predictor, config), config) as url:
        yield url


@contextmanager
def serving_app(app: Any, config: ServiceConfig) -> Iterator[str]:
    """:func:`serving` for an app built by the test, so it can look inside it."""
    import uvicorn

    from instructerc.service.server import uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(app, config, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> CountingPredictor:
    from instructerc.inference.predictor import Predictor

    directory = tiny_model_dir(tmp_path_factory.mktemp("service") / "model", MELD)
    return CountingPredictor(Predictor.from_directory(directory, device="cpu"))


@pytest.fixture(scope="module")
def base_url(predictor: CountingPredictor) -> Iterator[str]:
    with serving(predictor, STRICT) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


def assert_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    if field is not None:
        assert error.get("field") == field, error
    return error


def assert_distribution(scores: dict[str, float], predicted: str) -> None:
    assert list(scores) == list(MELD.labels)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in scores.values())
    assert predicted == max(scores, key=scores.get)


def assert_same_scores(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    assert max(abs(a[k] - b[k]) for k in a) < 1e-5, (a, b)


# -- /v1/predict ----------------------------------------------------------------------------------
def test_predict_labels_every_utterance_with_probabilities_that_sum_to_one(client: httpx.Client, predictor: CountingPredictor) -> None:
    from instructerc.data.jsonl import parse_dialogue

    body = {"dialogues": [{"id": "d1", "utterances": utterances(4)}, {"utterances": utterances(2, start=5)}]}

    response = client.post("/v1/predict", json=body)

    assert response.status_code == 200, response.text
    first, second = response.json()["dialogues"]
    assert (first["id"], second["id"]) == ("d1", None)
    assert [u["text"] for u in first["utterances"]] == TEXTS[:4]
    assert len(second["utterances"]) == 2
    expected = predictor.inner.predict(
        [parse_dialogue(body["dialogues"][0], path="t", line=1, split="test", label_set=None, default_dataset="t")]
    )[0]
    for got, want in zip(first["utterances"], expected):
        assert_distribution(got["emotion_scores"], got["predicted_emotion"])
        assert_same_scores(got["emotion_scores"], want.scores)


def test_labels_health_and_the_openapi_document(client: httpx.Client) -> None:
    assert client.get("/v1/labels").json() == {"label_set": "meld", "labels": list(MELD.labels)}
    assert client.get("/healthz").json()["status"] == "ok"
    head = client.head("/healthz")  # what uptime monitors and load balancers often send
    assert head.status_code == 200 and head.content == b""
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/predict",
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/conversations/{conversation_id}/utterances",
        "/v1/labels",
        "/healthz",
    } <= set(spec["paths"])
    body_schema = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$defs" not in json.dumps(body_schema)  # nested models are inlined, so the document resolves
    assert body_schema["properties"]["dialogues"]["items"]["properties"]["utterances"]["items"]["required"] == ["speaker", "text"]
    # As the service answers them: an empty body starts an empty conversation; an utterance needs one.
    assert spec["paths"]["/v1/conversations"]["post"]["requestBody"]["required"] is False
    assert spec["paths"]["/v1/conversations/{conversation_id}/utterances"]["post"]["requestBody"]["required"] is True


# -- limits and malformed input ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"dialogues": [{"utterances": utterances(1)}] * 4}, 422, "too_many_dialogues", "dialogues"),
        ({"dialogues": [{"utterances": utterances(13)}]}, 422, "too_many_utterances", "dialogues[0].utterances"),
        (
            {"dialogues": [{"utterances": [{"speaker": "Ann", "text": "x" * 201}]}]},
            422,
            "utterance_too_long",
            "dialogues[0].utterances[0].text",
        ),
        (
            {"dialogues": [{"utterances": [{"speaker": "A" * 21, "text": "Hi"}]}]},
            422,
            "speaker_too_long",
            "dialogues[0].utterances[0].speaker",
        ),
        ({"dialogues": [{"utterances": [{"speaker": "Ann", "text": 5}]}]}, 422, "invalid_request", "dialogues[0].utterances[0].text"),
        ({"dialogues": [{"utterances": utterances(1) + [{"speaker": "Bob"}]}]}, 422, "invalid_request", "dialogues[0].utterances[1].text"),
        ({"dialogues": [{"utterances": [{"speaker": "Ann", "text": "   "}]}]}, 422, "invalid_request", "dialogues[0].utterances[0].text"),
        ({"dialogues": [{"utterances": [{"speaker": "A", "text": "\u200b"}]}]}, 422, "invalid_request", "dialogues[0].utterances[0].text"),
        ({"dialogues": [{"utterances": [{"speaker": "", "text": "Hi"}]}]}, 422, "invalid_request", "dialogues[0].utterances[0].speaker"),
        ({"dialogues": [{"utterances": "Hi"}]}, 422, "invalid_request", "dialogues[0].utterances"),
        ({"dialogues": [{"utterances": []}]}, 422, "invalid_request", "dialogues[0].utterances"),
        ({"dialogues": [{"id": ["x"], "utterances": utterances(1)}]}, 422, "invalid_request", "dialogues[0].id"),
        ({"dialogues": ["Hi"]}, 422, "invalid_request", "dialogues[0]"),
        ({"dialogues": {}}, 422, "invalid_request", "dialogues"),
        ({"dialogues": []}, 422, "invalid_request", "dialogues"),
        ({"utterances": utterances(1)}, 422, "invalid_request", "dialogues"),
        ([], 422, "invalid_request", None),
    ],
    ids=[
        "too-many-dialogues",
        "too-many-utterances",
        "too-long-text",
        "too-long-speaker",
        "text-not-a-string",
        "missing-text",
        "blank-text",
        "invisible-text",
        "empty-speaker",
        "utterances-not-a-list",
        "no-utterances",
        "id-not-a-string",
        "dialogue-not-an-object",
        "dialogues-not-a-list",
        "no-dialogues",
        "bare-dialogue",
        "body-not-an-object",
    ],
)
def test_each_bad_predict_request_gets_a_4xx_naming_the_field(
    client: httpx.Client, body: Any, status: int, code: str, field: str | None
) -> None:
    assert_error(client.post("/v1/predict", json=body), status, code, field)


def test_a_bare_dialogue_is_told_how_to_wrap_itself(client: httpx.Client) -> None:
    error = assert_error(client.post("/v1/predict", json={"utterances": utterances(1)}), 422, "invalid_request", "dialogues")
    assert '{"dialogues": [dialogue]}' in error["message"]


@pytest.mark.parametrize(
    "raw",
    [b'{"dialogues": [', b"not json", b"\xff\xfe{}", b"", b"[" * 15_000],
    ids=["truncated", "text", "not-utf8", "empty", "deeply-nested"],
)
def test_malformed_json_is_400(client: httpx.Client, raw: bytes) -> None:
    response = client.post("/v1/predict", content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400, "malformed_json")


def test_a_body_over_the_limit_is_413_whatever_its_content_length_says(client: httpx.Client, base_url: str) -> None:
    big = json.dumps({"dialogues": [{"utterances": utterances(1)}], "padding": "x" * 30_000}).encode()

    assert_error(client.post("/v1/predict", content=big), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    response = client.post("/v1/predict", content=chunks())
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "body_too_large")

    host, port = base_url.removeprefix("http://").split(":")
    # A declared length over the limit is refused before any body arrives.
    assert raw_http(host, int(port), b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 999999999\r\n\r\n").startswith(
        b"HTTP/1.1 413"
    )
    # A length that understates the body: only the declared bytes are read as the body (here
    # not JSON), and the rest is not taken as a body at all.
    answer = raw_http(
        host,
        int(port),
        b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n" + big,
    )
    assert answer.startswith(b"HTTP/1.1 400")
    assert client.get("/healthz").status_code == 200


def raw_http(host: str, port: int, request: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=10) as conn:
        try:
            conn.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        return conn.recv(65536)


# -- conversations ----------------------------------------------------------------------------------
def test_a_conversation_grows_turn_by_turn_with_a_prediction_per_turn(client: httpx.Client) -> None:
    created = client.post("/v1/conversations")
    assert created.status_code == 201, created.text
    conversation_id = created.json()["id"]
    assert created.json()["utterances"] == []

    added = []
    for k, utterance in enumerate(utterances(10)):
        response = client.post(f"/v1/conversations/{conversation_id}/utterances", json=utterance)
        assert response.status_code == 200, response.text
        turn = response.json()
        assert (turn["conversation_id"], turn["index"], turn["text"]) == (conversation_id, k, utterance["text"])
        assert_distribution(turn["emotion_scores"], turn["predicted_emotion"])
        added.append(turn)

    stored = client.get(f"/v1/conversations/{conversation_id}").json()
    assert stored["id"] == conversation_id
    assert [u["index"] for u in stored["utterances"]] == list(range(10))
    assert [(u["speaker"], u["text"], u["predicted_emotion"], u["emotion_scores"]) for u in stored["utterances"]] == [
        (t["speaker"], t["text"], t["predicted_emotion"], t["emotion_scores"]) for t in added
    ]

    # Each turn is predicted from its history only, so every turn matches the whole dialogue's prediction.
    whole = client.post("/v1/predict", json={"dialogues": [{"utterances": utterances(10)}]}).json()["dialogues"][0]["utterances"]
    assert_same_scores(added[9]["emotion_scores"], whole[9]["emotion_scores"])
    assert added[9]["predicted_emotion"] == whole[9]["predicted_emotion"]
    for turn, full in zip(added, whole):
        assert_same_scores(turn["emotion_scores"], full["emotion_scores"])


def test_a_conversation_can_start_with_utterances_and_be_deleted(client: httpx.Client) -> None:
    created = client.post("/v1/conversations", json={"utterances": utterances(3)}).json()
    assert [u["text"] for u in created["utterances"]] == TEXTS[:3]
    for u in created["utterances"]:
        assert_distribution(u["emotion_scores"], u["predicted_emotion"])
    path = f"/v1/conversations/{created['id']}"

    assert client.post(f"{path}/utterances", json=utterances(1, start=3)[0]).json()["index"] == 3
    assert client.delete(path).status_code == 204
    assert_error(client.get(path), 404, "unknown_conversation")


def test_unknown_conversations_are_404_for_every_verb(client: httpx.Client) -> None:
    path = "/v1/conversations/no-such-id"
    assert_error(client.get(path), 404, "unknown_conversation", "conversation_id")
    assert_error(client.post(f"{path}/utterances", json={"speaker": "Ann", "text": "Hi"}), 404, "unknown_conversation")
    assert_error(client.delete(path), 404, "unknown_conversation")


def test_bad_utterances_for_a_conversation_name_their_field(client: httpx.Client) -> None:
    path = f"/v1/conversations/{client.post('/v1/conversations').json()['id']}/utterances"

    assert_error(client.post(path, json={"speaker": "Ann"}), 422, "invalid_request", "text")
    assert_error(client.post(path, json={"speaker": "Ann", "text": ["Hi"]}), 422, "invalid_request", "text")
    assert_error(client.post(path, json={"speaker": "Ann", "text": "x" * 201}), 422, "utterance_too_long", "text")
    assert_error(client.post(path, json=["Hi"]), 422, "invalid_request")
    # The body of POST /v1/conversations sent to the turn route is told which route takes it.
    several = assert_error(client.post(path, json={"utterances": utterances(2)}), 422, "invalid_request", "utterances")
    assert "POST /v1/conversations" in several["message"]
    assert_error(client.post(path, content=b"{speaker", headers={"content-type": "application/json"}), 400, "malformed_json")
    assert_error(client.post("/v1/conversations", json={"utterances": "Hi"}), 422, "invalid_request", "utterances")
    assert_error(
        client.post("/v1/conversations", json={"utterances": [{"speaker": "Ann", "text": 1}]}), 422, "invalid_request", "utterances[0].text"
    )
    # A misspelt key would otherwise create an empty conversation and drop the utterances.
    assert_error(client.post("/v1/conversations", json={"utterance": utterances(2)}), 422, "invalid_request", "utterance")
    # None of this stored anything.
    assert client.get(path.removesuffix("/utterances")).json()["utterances"] == []


def test_a_conversation_stops_at_its_utterance_limit(client: httpx.Client) -> None:
    created = client.post("/v1/conversations", json={"utterances": utterances(12)}).json()

    assert_error(
        client.post(f"/v1/conversations/{created['id']}/utterances", json={"speaker": "Ann", "text": "One more."}),
        409,
        "conversation_full",
        "conversation_id",
    )
    assert len(client.get(f"/v1/conversations/{created['id']}").json()["utterances"]) == 12


def test_the_least_recently_used_conversation_is_evicted_when_the_store_is_full(client: httpx.Client) -> None:
    ids = [client.post("/v1/conversations").json()["id"] for _ in range(STRICT.max_conversations)]
    client.get(f"/v1/conversations/{ids[0]}")  # ids[1] is now the least recently used

    client.post("/v1/conversations")

    assert client.get(f"/v1/conversations/{ids[0]}").status_code == 200
    assert_error(client.get(f"/v1/conversations/{ids[1]}"), 404, "unknown_conversation")
    assert client.get("/healthz").json()["conversations"] == STRICT.max_conversations


# -- batching and failures --------------------------------------------------------------------------
async def concurrently(base_url: str, bodies: Sequence[Any]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=httpx.Limits(max_connections=len(bodies))) as client:
        return await asyncio.gather(*(client.post("/v1/predict", json=body) for body in bodies))


def one_turn(k: int) -> dict[str, Any]:
    return {"dialogues": [{"id": f"c{k}", "utterances": utterances(1, start=k)}]}


def test_concurrent_requests_share_model_calls_when_batching_is_on_and_not_when_off(base_url: str, predictor: CountingPredictor) -> None:
    bodies = [one_turn(k) for k in range(16)]

    predictor.calls.clear()
    batched = asyncio.run(concurrently(base_url, bodies))
    calls_on = list(predictor.calls)

    with serving(predictor, ServiceConfig(batching=False)) as unbatched_url:
        predictor.calls.clear()
        alone = asyncio.run(concurrently(unbatched_url, bodies))
        calls_off = list(predictor.calls)

    assert [r.status_code for r in batched + alone] == [200] * 32
    print(f"model calls for 16 concurrent requests: batching on {calls_on}, off {calls_off}")
    assert sum(calls_on) == 16 and len(calls_on) < 16, calls_on
    assert calls_off == [1] * 16
    for on, off in zip(batched, alone):  # batching changes nothing but speed
        assert on.json()["dialogues"][0]["id"] == off.json()["dialogues"][0]["id"]
        assert_same_scores(
            on.json()["dialogues"][0]["utterances"][0]["emotion_scores"], off.json()["dialogues"][0]["utterances"][0]["emotion_scores"]
        )


def test_a_model_failure_fails_only_its_own_request(base_url: str) -> None:
    bodies = [one_turn(k) for k in range(7)]
    bodies[3] = {"dialogues": [{"utterances": [{"speaker": "Ann", "text": "boom"}]}]}
    bodies[5] = {"dialogues": [{"utterances": [{"speaker": "Ann", "text": "unpromptable"}]}]}

    responses = asyncio.run(concurrently(base_url, bodies))

    assert [r.status_code for r in responses] == [200, 200, 200, 500, 200, 422, 200]
    assert_error(responses[3], 500, "model_error")
    assert "max_length" in assert_error(responses[5], 422, "not_predictable")["message"]
    assert asyncio.run(concurrently(base_url, [one_turn(0)]))[0].status_code == 200


def test_unknown_routes_and_methods_answer_in_the_same_error_format(client: httpx.Client) -> None:
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.put("/v1/predict"), 405, "method_not_allowed")


# -- the command line -------------------------------------------------------------------------------
def test_serve_flags_map_onto_the_config(run_cli) -> None:
    from instructerc.cli.main import build_parser
    from instructerc.cli.serve_commands import service_config

    args = build_parser().parse_args(
        ["serve", "--model", "m", "--no-batching", "--max-dialogues", "5", "--max-wait-ms", "2.5", "--max-idle-seconds", "9"]
    )

    config = service_config(args)
    assert (config.batching, config.max_dialogues, config.max_wait_ms, config.max_idle_seconds) == (False, 5, 2.5, 9.0)
    assert config.max_utterances == ServiceConfig().max_utterances
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert build_parser().parse_args(["serve"]).model is None  # the shipped default model, when there is one


def test_serve_refuses_bad_settings_and_non_model_directories_in_one_line(run_cli, tmp_path: Path) -> None:
    result = run_cli("serve", "--model", tmp_path, "--max-dialogues", "0")
    assert (result.code, result.out) == (2, "") and "--max-dialogues must be > 0" in result.err

    result = run_cli("serve", "--model", tmp_path)
    assert result.code == 2 and "not an instructerc model directory" in result.err and "Traceback" not in result.err


def test_a_dialogue_naming_its_dataset_also_gets_that_datasets_labels(tmp_path: Path) -> None:
    from instructerc.inference.predictor import Predictor
    from instructerc.labels.unified import INSTRUCTERC

    unified = Predictor.from_directory(tiny_model_dir(tmp_path / "uime", INSTRUCTERC.label_set), device="cpu")
    utterances = [{"speaker": "Ann", "text": "Wow, really?"}, {"speaker": "Bob", "text": "Yes!"}]
    body = {
        "dialogues": [
            {"dataset": "meld", "utterances": utterances},
            {"utterances": utterances},
            {"dataset": "mine", "utterances": utterances},
        ]
    }
    with serving(unified, STRICT) as url, httpx.Client(base_url=url, timeout=30) as client:
        named, unnamed, other = client.post("/v1/predict", json=body).json()["dialogues"]
        (capitalised,) = client.post("/v1/predict", json={"dialogues": [{"dataset": " MELD ", "utterances": utterances}]}).json()[
            "dialogues"
        ]
        refused = client.post("/v1/predict", json={"dialogues": [{"dataset": 5, "utterances": utterances}]})

    for utterance in named["utterances"]:
        scores = utterance["emotion_scores"]
        best = max(MELD.labels, key=lambda label: scores[INSTRUCTERC.forward["meld"][label]])
        assert utterance["predicted_original_emotion"] == best, "the best of MELD's own classes"
    assert all("predicted_original_emotion" not in u for u in unnamed["utterances"] + other["utterances"])
    assert [u["emotion_scores"] for u in named["utterances"]] == [u["emotion_scores"] for u in unnamed["utterances"]]
    # The same prompts, batched with other dialogues or alone: equal within float tolerance (a
    # CPU's matrix kernels may sum in another order at another batch size).
    assert [u["predicted_original_emotion"] for u in capitalised["utterances"]] == [
        u["predicted_original_emotion"] for u in named["utterances"]
    ], "a benchmark's name is matched in any case"
    for alone, batched in zip(capitalised["utterances"], named["utterances"]):
        assert alone["emotion_scores"] == pytest.approx(batched["emotion_scores"], abs=1e-6)
    assert_error(refused, 422, "invalid_request", "dialogues[0].dataset")


def test_a_port_bound_for_a_server_still_loading_its_model_is_taken() -> None:
    """Two servers started together: the second is told at once that the port is in use, not
    after its model has loaded, with a traceback (a socket bound but not yet listening did not
    hold the port against another bound with SO_REUSEADDR)."""
    from instructerc.errors import InputError
    from instructerc.service.server import listening_socket

    first = listening_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(InputError, match="cannot listen on") as error:
            listening_socket("127.0.0.1", port).close()
        assert error.value.field == "port"
    finally:
        first.close()


def test_serve_says_at_once_when_it_cannot_listen(run_cli, tmp_path: Path) -> None:
    import socket

    from instructerc.labels.benchmarks import MELD
    from tiny import tiny_model_dir

    model = tiny_model_dir(tmp_path / "model", MELD)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        result = run_cli("serve", "--model", model, "--port", port)
    finally:
        taken.close()
    assert (result.code, result.out) == (2, ""), result
    [line] = result.err.splitlines()
    assert f"cannot listen on 127.0.0.1:{port}" in line and "argument --port:" in line

    result = run_cli("serve", "--model", model, "--host", "192.0.2.1")  # TEST-NET-1: no machine's own address
    assert (result.code, result.out) == (2, "") and "argument --host:" in result.err and "Traceback" not in result.err

    for bad in ("0", "65536", "http"):
        with pytest.raises(SystemExit) as exit_:  # argparse's own one-line usage error
            run_cli("serve", "--model", model, "--port", bad)
        assert exit_.value.code == 2


def test_serve_without_a_model_names_the_missing_default(run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from instructerc.modeling import default_model

    # An install without the shipped model (the repository's one would start serving).
    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIR", tmp_path / "default_model")
    result = run_cli("serve")
    assert result.code == 2 and "--model" in result.err and "Traceback" not in result.err


def test_importing_the_package_and_cli_needs_no_web_framework() -> None:
    code = (
        "import sys, instructerc, instructerc.service, instructerc.cli.main as m; m.build_parser();"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('fastapi', 'uvicorn', 'starlette', 'pydantic')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_model_stating_benchmark_classes_is_prompted_by_the_service_as_by_predict(tmp_path: Path) -> None:
    """A model trained with template.dataset_classes is told a named benchmark's classes: the
    service must pass the name on, or its answers for a MELD dialogue differ from predict's."""
    from instructerc.data.dialogue import Dialogue, Utterance
    from instructerc.inference.predictor import Predictor
    from instructerc.labels.unified import INSTRUCTERC
    from instructerc.prompts.templates import TemplateConfig

    template = TemplateConfig(name="dialogue-stream", demonstration=False, dataset_classes=True, unnamed_share=0.25)
    predictor = Predictor.from_directory(tiny_model_dir(tmp_path / "uime", INSTRUCTERC.label_set, template), device="cpu")
    utterances = [{"speaker": "Ann", "text": "Wow, really?"}, {"speaker": "Bob", "text": "Yes!"}]
    with serving(predictor, STRICT) as url, httpx.Client(base_url=url, timeout=30) as client:
        body = {"dialogues": [{"dataset": "meld", "utterances": utterances}, {"utterances": utterances}]}
        named, unnamed = client.post("/v1/predict", json=body).json()["dialogues"]

    lines = tuple(Utterance(u["speaker"], u["text"]) for u in utterances)
    for dataset, served in (("meld", named), ("unnamed", unnamed)):
        (expected,) = predictor.predict([Dialogue(id="x", dataset=dataset, split="test", utterances=lines)])
        for utterance, prediction in zip(served["utterances"], expected):
            assert utterance["emotion_scores"] == pytest.approx(prediction.scores, abs=1e-5), dataset
    assert named["utterances"][0]["emotion_scores"] != unnamed["utterances"][0]["emotion_scores"], "the prompts differ"
