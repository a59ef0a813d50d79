"""Huge finite service limits, and a conversation's cache under another prompt setup.

``instructerc serve`` took any finite number: some broke the running server (a 500 on every
gzip body, a traceback at start, a lone request never answered), and an integer beyond a
float's range failed its own check with a bare OverflowError. A ConversationCache trusted the
cuts of its earlier turns as long as the model was the same, also under another ``max_length``
or another dataset's label statement, and the next turn's scores were silently other than the
same conversation's scored afresh.
"""

from __future__ import annotations

import copy
import gzip
import json
from dataclasses import fields, replace
from pathlib import Path

import httpx
import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.inference.incremental import CacheStore, ConversationCache
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.labels.registry import named_label_set
from instructerc.prompts.templates import TemplateConfig
from instructerc.service.config import ServiceConfig
from instructerc.service.guard import decoded_body
from test_live_cuts import TURNS
from test_service import serving
from tiny import tiny_model_dir

NUMBERS = [f.name for f in fields(ServiceConfig) if f.name not in ("batching", "turn_cache", "allowed_hosts", "allowed_origins")]
WHOLE_NUMBERS = [name for name in NUMBERS if isinstance(getattr(ServiceConfig, name), int)]


# -- service limits ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WHOLE_NUMBERS)
def test_a_whole_number_beyond_a_float_is_refused_by_name_not_with_an_overflow(name: str) -> None:
    with pytest.raises(InputError, match="must be at most 1000000000000000000, not a number of 401 digits") as error:
        ServiceConfig(**{name: 10**400})
    assert error.value.field == name


def test_a_body_bound_beyond_what_zlib_takes_is_refused() -> None:
    # 2**63: zlib's limit of max_body_bytes + 1 is a C ssize_t, and every gzip body got a 500.
    with pytest.raises(InputError, match="must be at most 1000000000000000000") as error:
        ServiceConfig(max_body_bytes=2**63)
    assert error.value.field == "max_body_bytes"
    # The largest allowed still inflates a body.
    most = ServiceConfig(max_body_bytes=10**18).max_body_bytes
    assert decoded_body(gzip.compress(b'{"a": 1}'), "gzip", most) == b'{"a": 1}'


def test_a_cache_bound_whose_bytes_overflow_is_refused() -> None:
    # 1e303 MiB is infinite bytes: the server failed to start, after loading the model.
    with pytest.raises(InputError, match="must be at most 1e\\+12, not 1e\\+303"):
        ServiceConfig(turn_cache_mb=1e303)
    most = ServiceConfig(turn_cache_mb=1e12)
    assert CacheStore(int(most.turn_cache_mb * 2**20)).max_bytes > 0


@pytest.mark.parametrize(("name", "most"), [("max_wait_ms", "60000"), ("wait_share", "10")])
def test_a_batch_wait_that_never_ends_is_refused(name: str, most: str) -> None:
    with pytest.raises(InputError, match=f"must be at most {most}, not 1e\\+300") as error:
        ServiceConfig(**{name: 1e300})
    assert error.value.field == name
    ServiceConfig(**{name: float(most)})  # the bound itself is allowed


@pytest.mark.parametrize(
    "name",
    ["request_timeout_seconds", "keep_alive_seconds", "max_idle_seconds", "evict_after_idle_seconds", "new_conversations_per_second"],
)
def test_huge_times_and_rates_that_work_are_still_allowed(name: str) -> None:
    assert getattr(ServiceConfig(**{name: 1e308}), name) == 1e308


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--max-wait-ms", "1e300"], "--max-wait-ms must be at most 60000, not 1e+300"),
        (["--turn-cache-mb", "1e303"], "--turn-cache-mb must be at most 1e+12, not 1e+303"),
        (["--max-body-bytes", "9" * 24], "--max-body-bytes must be at most 1000000000000000000, not a number of 24 digits"),
        (
            ["--new-conversation-burst", "1" + "0" * 400],
            "--new-conversation-burst must be at most 1000000000000000000, not a number of 401 digits",
        ),
    ],
)
def test_serve_names_the_option_of_a_limit_too_large(run_cli, argv: list[str], said: str) -> None:
    result = run_cli("serve", "--model", "no-model", *argv)
    assert (result.code, result.out, result.err) == (2, "", f"instructerc: error: {said}\n")


def test_a_server_at_the_largest_limits_answers(tmp_path: Path) -> None:
    predictor = Predictor.from_directory(tiny_model_dir(tmp_path / "model", MELD), device="cpu")
    config = ServiceConfig(
        max_body_bytes=10**18,
        turn_cache_mb=1e12,
        max_wait_ms=1.0,
        request_timeout_seconds=1e308,
        keep_alive_seconds=1e308,
        max_idle_seconds=1e308,
        max_connections=10**18,
        max_pending=10**18,
    )
    body = {"dialogues": [{"utterances": [{"speaker": "A", "text": "Hi."}, {"speaker": "B", "text": "Great news!"}]}]}
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    with serving(predictor, config) as url, httpx.Client(base_url=url, timeout=60) as client:
        answer = client.post("/v1/predict", content=gzip.compress(json.dumps(body).encode()), headers=headers)
        assert answer.status_code == 200, answer.text
        conversation = client.post("/v1/conversations").json()["id"]
        for text in ("Hi.", "Oh no."):
            assert client.post(f"/v1/conversations/{conversation}/utterances", json={"speaker": "A", "text": text}).status_code == 200


# -- a conversation's cache under another prompt setup -------------------------------------------


def test_a_cache_forgets_its_cuts_under_another_prompt_key_only() -> None:
    said = (Utterance("A", "x"), Utterance("B", "y"), Utterance("A", "z"))
    cache = ConversationCache()
    cache.prompted_under(("setup", "meld"))
    cache.record_turns(said, {0, 1, 2}, {1})
    cache.prompted_under(("setup", "meld"))  # an equal key: the cuts hold
    assert (cache.cut_turns, cache.unchecked_turns(said)) == ({1}, set())
    fork = copy.copy(cache)
    cache.prompted_under(("setup", "iemocap"))  # decided for another prompt: measured again
    assert (cache.cut_turns, cache.unchecked_turns(said)) == (set(), {0, 1})
    assert fork.prompt_key == ("setup", "meld") and fork.cut_turns == {1}  # a fork keeps its own


def largest_difference(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) for k in a)


def continued(first: Predictor, second: Predictor, switch: int, first_dataset: str = "", second_dataset: str = "", turns=TURNS):
    """The turn ``switch`` scored by ``second`` from the cache ``first`` built, and from a fresh one."""
    cache, said = ConversationCache(), ()
    for speaker, text in turns[:switch]:
        said += (Utterance(speaker, text),)
        first.predict_next(Dialogue("live", first_dataset, "test", said), cache)
    dialogue = Dialogue("live", second_dataset, "test", said + (Utterance(*turns[switch]),))
    return second.predict_next(dialogue, cache), second.predict_next(dialogue, ConversationCache())


@pytest.fixture(scope="module")
def two_budgets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Predictor, Predictor]:
    template = TemplateConfig(name="dialogue-stream", demonstration=False)
    directory = tiny_model_dir(tmp_path_factory.mktemp("budgets") / "model", named_label_set("uime"), template, max_length=4096)
    long = Predictor.from_directory(directory, device="cpu", dtype="float32")
    return long, Predictor(long.model, long.tokenizer, replace(long.setup, max_length=160), None, "cpu", long.config)


def test_a_cache_shared_by_two_budgets_over_one_model_scores_as_a_fresh_one(two_budgets) -> None:
    long, short = two_budgets
    whole = Dialogue("d", "", "test", tuple(Utterance(*t) for t in TURNS))
    # Guards the test: the budgets cut differently.
    assert [p.truncated for p in long.predict([whole])[0]] != [p.truncated for p in short.predict([whole])[0]]
    for first, second in ((long, short), (short, long)):
        for switch in range(1, len(TURNS)):
            live, fresh = continued(first, second, switch)
            assert live.truncated == fresh.truncated, switch
            assert largest_difference(live.scores, fresh.scores) < 1e-5, (first.setup.max_length, switch)


def test_a_conversation_whose_dataset_changes_scores_as_a_fresh_one(tmp_path: Path) -> None:
    template = TemplateConfig(name="dialogue-stream", demonstration=False, label_statement=True, dataset_classes=True)
    directory = tiny_model_dir(tmp_path / "model", named_label_set("uime"), template, max_length=200)
    predictor = Predictor.from_directory(directory, device="cpu", dtype="float32")
    # A line that fits under one dataset's label statement and not under another's.
    for repeats in range(5, 120, 3):
        said = [("Ann", "Hi."), ("Bob", "So sad. " * repeats), ("Ann", "What?")]
        cut = {
            ds: predictor.predict([Dialogue("x", ds, "test", tuple(Utterance(*t) for t in said[:2]))])[0][1].truncated
            for ds in ("iemocap", "")
        }
        if cut["iemocap"] != cut[""]:
            break
    else:
        pytest.fail("no line is cut under one label statement and not the other")
    for first, second in (("iemocap", ""), ("", "iemocap")):
        live, fresh = continued(predictor, predictor, 2, first, second, said)
        assert largest_difference(live.scores, fresh.scores) < 1e-5, (first, second)
