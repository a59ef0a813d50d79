"""What the HTTP service allows and how it batches: one dataclass, every field a CLI flag."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from instructerc.errors import InputError

LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ServiceConfig:
    """Limits, batching and conversation-store sizes of ``instructerc serve``.

    Request limits (a request over a limit gets a 4xx JSON error, see :mod:`instructerc.service`):
        max_body_bytes: the most bytes of a request body, counted as they arrive (413).
        max_dialogues: the most dialogues in one ``/v1/predict`` request (422).
        max_utterances: the most utterances of one dialogue in a request (422); also bounds the
            initial utterances of a new conversation.
        max_utterance_chars: the most characters of an utterance's text (422).
        max_speaker_chars: the most characters of a speaker name (422).

    Batching (requests arriving together share one model call):
        batching: off makes every request its own model call, one after another (for comparison).
        max_batch_size: the most utterances predicted in one model call (64: sixty-four
            conversation turns, or about ten whole dialogues); a request with more is never
            split, it runs alone. The predictor bounds each forward pass by tokens on its own.
        max_wait_ms: how long the first queued request waits for others to join its batch
            (at most a minute).
        wait_share: or this share of the last model call's duration, when that is longer: with a
            slow model, clients answered by one call then have time to join the next one
            instead of forming a second, alternating half-size batch (0 turns this off; at most 10).
        max_pending: the most utterances queued or running; beyond it a request gets 503, so a
            flood of requests cannot grow memory without bound (a request alone is always
            accepted, whatever its size within the request limits).

    Conversation store (bounded: at most ``max_conversations * max_conversation_utterances``
    utterances, each at most ``max_utterance_chars + max_speaker_chars`` characters):
        max_conversations: live conversations; creating one more evicts the least recently used.
        max_idle_seconds: a conversation unused this long is dropped.
        max_conversation_utterances: the most utterances of one conversation (409 beyond).
        evict_after_idle_seconds: a full store evicts only a conversation unused this long; when
            every conversation was used more recently, creating one is refused (503), so new
            conversations can never push out the ones in use.
        new_conversations_per_second, new_conversation_burst: creating conversations is rate
            bounded (a token bucket: this many per second on average, this many at once; 429
            beyond), since an empty conversation costs its creator nothing.
        turn_cache: score a conversation's new utterance from the key/value cache of its earlier
            turns (templates whose prompts share the dialogue as a prefix; others re-score the
            conversation); off re-scores every turn, for comparison.
        turn_cache_mb: the most memory the conversations' caches hold, in MiB; beyond it the
            least recently used is dropped and re-scored from its text on its next turn.

    Every number is finite; a whole number is at most 10**18 (no limit in practice),
    ``turn_cache_mb`` at most 1e12, ``max_wait_ms`` at most 60000 and ``wait_share`` at most 10
    (see ``MAXIMA``: beyond them the running server broke).

    Who may call (the server binds loopback; these stop web pages in a browser from reaching it):
        allowed_hosts: the ``Host`` names answered (400 otherwise), which stops DNS rebinding;
            loopback names by default, ``*`` for any.
        allowed_origins: the browser origins (``https://app.example``) whose cross-origin
            requests are answered, with CORS headers; none by default (403), ``*`` for any.
            Same-origin requests (the ``/docs`` page) are always answered. Every request with a
            body must also be ``Content-Type: application/json`` (415), which a plain HTML form
            cannot send.

    Connections:
        request_timeout_seconds: the time a client has to send a request's headers and body
            (408, or the connection is closed); a slow client cannot hold a connection for ever.
        keep_alive_seconds: an idle kept-alive connection is closed after this long.
        max_connections: the most open connections and requests in flight (503 beyond).
    """

    max_body_bytes: int = 1024 * 1024
    max_dialogues: int = 32
    max_utterances: int = 128
    max_utterance_chars: int = 1000
    max_speaker_chars: int = 100

    batching: bool = True
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    wait_share: float = 0.05
    max_pending: int = 4096

    max_conversations: int = 1000
    max_idle_seconds: float = 1800.0
    max_conversation_utterances: int = 100
    evict_after_idle_seconds: float = 60.0
    # Above what one server sustains (about 40 turns/s on 2 CPU cores, 6-7 new conversations/s at
    # 6 turns each): the bound is on misuse, not on clients the server can serve.
    new_conversations_per_second: float = 20.0
    new_conversation_burst: int = 50
    turn_cache: bool = True
    turn_cache_mb: float = 1024.0

    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    allowed_origins: tuple[str, ...] = ()

    request_timeout_seconds: float = 30.0
    keep_alive_seconds: float = 5.0
    max_connections: int = 128

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name in ("batching", "turn_cache"):
                if not isinstance(value, bool):
                    raise InputError("must be true or false", field=spec.name)
            elif spec.name in ("allowed_hosts", "allowed_origins"):
                if isinstance(value, str) or not all(isinstance(v, str) and v.strip() for v in value):
                    raise InputError("must be a list of non-empty names", field=spec.name)
                names = _names(spec.name, value)
                if not all(names):  # "." or "/" alone: nothing left to compare with
                    raise InputError("must be a list of non-empty names", field=spec.name)
                object.__setattr__(self, spec.name, names)
            else:
                _check_number(spec.name, value)


# Upper bounds of the numbers that break the running server beyond them; the others (timeouts,
# idle times, rates) work up to the largest float. Each bound is far above any useful value.
MAXIMA: dict[str, float] = {
    # Undoing a gzip body asks zlib for at most max_body_bytes + 1 bytes, a C ssize_t: beyond
    # 2**63 every compressed request was answered 500.
    "max_body_bytes": 10**18,
    # Read in bytes (turn_cache_mb * 2**20): beyond about 1.7e302 that is infinity, and the
    # server failed to start with a traceback after the model had loaded. 1e12 MiB is already
    # more memory than any machine has: no bound in practice.
    "turn_cache_mb": 1e12,
    # The first request of a batch waits this long for company: 1e300 never answered a lone
    # request, and a wait beyond a minute outlasts the client's own timeout.
    "max_wait_ms": 60_000.0,
    # Likewise a share of the last model call: 1e300 never answered the request after the first.
    "wait_share": 10.0,
}
# Any other whole number: beyond a float's range the checks below failed with a bare
# OverflowError, and a count beyond 63 bits is no limit anyone means.
MAX_COUNT = 10**18


def _check_number(name: str, value: object) -> None:
    """An :class:`InputError` naming ``name`` for a number the service cannot run with."""
    if not _finite_number(value):
        # NaN passes every comparison below unnoticed (a NaN idle time expires every
        # conversation at once, a NaN timeout times out every body); infinity breaks the
        # sizes computed from these numbers.
        raise InputError(f"must be a finite number, not {value!r}", field=name)
    assert isinstance(value, (int, float))
    most = MAXIMA.get(name, MAX_COUNT if isinstance(value, int) else math.inf)
    if value > most:
        raise InputError(f"must be at most {_shown(most)}, not {_shown(value)}", field=name)
    if name in ("max_wait_ms", "wait_share", "evict_after_idle_seconds"):
        if value < 0:
            raise InputError("must be >= 0", field=name)
    elif value <= 0:
        raise InputError("must be > 0", field=name)


def _shown(number: float) -> str:
    if isinstance(number, int):  # exact (10**18 + 1 is not "1e+18"), and no float overflow
        digits = str(number)
        return digits if len(digits) <= 20 else f"a number of {len(digits)} digits"
    return f"{number:g}"


def _finite_number(value: object) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    # An int too large for a float is no infinity, but math.isfinite cannot say so: it overflows.
    return isinstance(value, int) or math.isfinite(value)


def _names(field: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """Allowed hosts or origins in the form requests are compared in. A host is compared as
    :func:`host_name` reads a ``Host`` header, so ``--allowed-host api.example:8000`` (or
    ``API.example.``) answers ``Host: api.example:8000`` rather than refusing every request."""
    if field == "allowed_hosts":
        return tuple(value.strip() if value.strip() == "*" else host_name(value) for value in values)
    return tuple(value.strip().lower().rstrip("/") for value in values)


def host_name(header: str) -> str:
    """The name of a ``Host`` header without its port, lower case: ``[::1]:8000`` is ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    name, _, port = header.rpartition(":")
    if name and port.isdigit() and ":" not in name:
        return name.rstrip(".")
    return header.rstrip(".")
