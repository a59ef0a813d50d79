"""Turning request bodies into dialogues, or into an :class:`ApiError` that names the field.

Types and required fields are checked by the same parser as JSONL files
(:func:`instructerc.data.jsonl.parse_dialogue`), so the service accepts exactly the user format;
this module adds the service's limits and the field paths of a request body.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Any

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.jsonl import benchmark_spelling, parse_dialogue
from instructerc.data.text import breaks_line, canonical_label
from instructerc.data.validation import TextProblem, check_value, load_json
from instructerc.errors import InputError
from instructerc.service.config import ServiceConfig

# The dataset name of request dialogues: no training data is called this, so demonstration
# retrieval never mistakes a request for a training dialogue and leaves it out of the pool.
REQUEST_DATASET = "request"


@dataclass(frozen=True)
class RequestedDialogue:
    """A dialogue of a predict request: the client's id and the dataset it names (``None`` when
    it gives none), and its utterances under the service's own id."""

    client_id: str | None
    dataset: str | None
    dialogue: Dialogue


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "field"?}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


def parse_json(body: bytes, allow_empty: bool = False, charset: str | None = None) -> Any:
    """The JSON value of a body; 400 when it is not JSON in ``charset`` (the one its
    ``Content-Type`` names, :func:`declared_charset`), or in UTF-8 when it names none."""
    if allow_empty and not body.strip():  # nothing to decode, whatever the charset is called
        return {}
    text = _body_text(body, charset)
    if not text.strip():  # a byte order mark alone, or UTF-16 spaces
        if allow_empty:
            return {}
        # The parser's "Expecting value at column 4" points into a body that holds nothing.
        raise ApiError(400, "malformed_json", "the body is empty; it must be a JSON object")
    try:
        # The JSONL reader's parser: bounded nesting; long numbers are refused with their field.
        payload = load_json(text)
    except TextProblem as problem:
        raise ApiError(400, "malformed_json", f"the body is {problem.message}") from None
    try:
        # The whole body, not only the dialogues the parser reads: a key or value outside them
        # (an unknown key, echoed in an error) must be text too, or the answer cannot be encoded.
        check_value(payload)
    except TextProblem as problem:
        raise ApiError(422, "invalid_request", problem.message, field=problem.field) from None
    return payload


def declared_charset(content_type: str) -> str | None:
    """The ``charset`` parameter of a ``Content-Type`` header (``application/json;
    charset="utf-16"`` gives ``utf-16``), or ``None`` when it has none."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').strip() or None
    return None


# Byte order marks, longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _body_text(body: bytes, charset: str | None) -> str:
    """The body as text. A declared charset is honoured: reading a latin-1 body as UTF-8 would
    either refuse it or, worse, silently turn its accented letters into others. Without one the
    body is UTF-8 (RFC 8259), or what its byte order mark says (editors and PowerShell add one)."""
    if charset is None:
        charset = next((name for mark, name in _BYTE_ORDER_MARKS if body.startswith(mark)), "utf-8")
    try:
        text = body.decode(_text_codec(charset))
    except LookupError:  # a codec that is no text encoding: a binary (base64) or text (rot13) transform
        raise _unknown_charset(charset) from None
    except UnicodeDecodeError as error:
        raise ApiError(400, "malformed_json", f"the body is not {charset.upper()} (byte {error.start} cannot be decoded)") from None
    except UnicodeError:  # a decoder that refuses the text as a whole, not at one byte
        raise ApiError(400, "malformed_json", f"the body is not {charset.upper()}") from None
    return text.removeprefix("\ufeff")  # a byte order mark is not part of the JSON


# Python's own codecs that are no charset of the web (IANA's): an HTTP client naming one is
# mistaken, and reading the body with it turns escapes or letters into other text without a
# word (unicode_escape), or fails in ways no text encoding does (punycode, undefined).
_NOT_CHARSETS = frozenset({"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape", "charmap", "palmos", "mbcs", "oem"})


def _text_codec(charset: str) -> str:
    """The name of the codec that reads ``charset``, or a 415 naming the Content-Type."""
    try:
        name = codecs.lookup(charset).name
    except (LookupError, ValueError):  # an unknown name, or one holding a NUL
        raise _unknown_charset(charset) from None
    if name in _NOT_CHARSETS:
        raise _unknown_charset(charset)
    return name


def _unknown_charset(charset: str) -> ApiError:
    # A header can be kilobytes long: the message names only its start (repr shows what is unprintable).
    return ApiError(
        415,
        "unsupported_media_type",
        f"the charset {charset[:40]!r} of the Content-Type is not a known text encoding",
        field="content-type",
    )


def predict_request(payload: Any, config: ServiceConfig) -> list[RequestedDialogue]:
    """The dialogues of ``{"dialogues": [...]}``."""
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_request", 'the body must be a JSON object {"dialogues": [...]}')
    if "dialogues" not in payload:
        hint = ' (wrap a single dialogue as {"dialogues": [dialogue]})' if "utterances" in payload else ""
        raise ApiError(422, "invalid_request", f"missing 'dialogues'{hint}", field="dialogues")
    raw = payload["dialogues"]
    if not isinstance(raw, list) or not raw:
        raise ApiError(422, "invalid_request", "'dialogues' must be a non-empty list", field="dialogues")
    if len(raw) > config.max_dialogues:
        raise ApiError(422, "too_many_dialogues", f"{len(raw)} dialogues; at most {config.max_dialogues} per request", field="dialogues")
    out = []
    for k, record in enumerate(raw):
        where = f"dialogues[{k}]"
        named = named_dataset(record.get("dataset"), f"{where}.dataset") if isinstance(record, dict) else None
        dialogue = _dialogue(record, where, config)
        out.append(RequestedDialogue(dialogue.id if record.get("id") is not None else None, named, dialogue))
    return out


@dataclass(frozen=True)
class RequestedConversation:
    """A new conversation's initial utterances and the benchmark it names (``None`` when none)."""

    utterances: tuple[Utterance, ...]
    dataset: str | None


# A named dataset is kept as long as its conversation lives, so its size is bounded like a speaker's.
MAX_DATASET_CHARS = 64


def conversation_request(payload: Any, config: ServiceConfig) -> RequestedConversation:
    """A new conversation: ``{}``, or ``{"utterances": [...], "dataset": "meld"}`` with either key."""
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_request", 'the body must be a JSON object {"utterances": [...]} (or empty)')
    unknown = sorted(set(payload) - {"utterances", "dataset"})
    if unknown:
        # An empty body is a valid request, so a misspelt key would silently drop the utterances.
        raise ApiError(
            422, "invalid_request", f"unknown key(s) {unknown}; the body holds only 'utterances' and 'dataset'", field=unknown[0]
        )
    dataset = named_dataset(payload.get("dataset"))
    raw = payload.get("utterances")
    if raw is None or raw == []:
        return RequestedConversation((), dataset)
    if not isinstance(raw, list):
        raise ApiError(422, "invalid_request", "'utterances' must be a list", field="utterances")
    return RequestedConversation(_dialogue(_named({"utterances": raw}, dataset), "", config).utterances, dataset)


def named_dataset(value: Any, field: str = "dataset") -> str | None:
    """The benchmark a dialogue or a conversation names, spelt as the toolkit spells it (``None``:
    none named): one rule for every route, the data files' own (:func:`benchmark_spelling`), so
    ``MELD`` pasted with a zero-width space is MELD everywhere and a name of invisible characters only is refused
    everywhere. A name is also bounded and one line, as a conversation keeps and echoes it."""
    if value is None:
        return None
    if not isinstance(value, str) or not canonical_label(value):
        raise ApiError(422, "invalid_request", "'dataset' must be a non-empty string (or null)", field=field)
    if len(value) > MAX_DATASET_CHARS:
        raise ApiError(422, "invalid_request", f"'dataset' has {len(value)} characters; at most {MAX_DATASET_CHARS}", field=field)
    if breaks_line(canonical_label(value)):  # at either end it is trimmed, as white space is
        raise ApiError(422, "invalid_request", "'dataset' holds a line break or another control character", field=field)
    return benchmark_spelling(value)


def _named(record: dict[str, Any], dataset: str | None) -> dict[str, Any]:
    """``record`` under the benchmark a conversation names, so its utterances are read as a
    /v1/predict dialogue of that name reads them (a gold ``original_emotion`` must be one of its labels)."""
    return record if dataset is None else {**record, "dataset": dataset}


def utterance_request(payload: Any, config: ServiceConfig, dataset: str | None = None) -> Utterance:
    """One utterance to add to a conversation: ``{"speaker": ..., "text": ...}``; ``dataset``:
    the benchmark the conversation names, whose rules its utterances follow."""
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_request", 'the body must be one utterance, a JSON object {"speaker": ..., "text": ...}')
    if "utterances" in payload and "text" not in payload:
        # The body of POST /v1/conversations sent here: say which route takes it.
        raise ApiError(
            422,
            "invalid_request",
            'this route adds one utterance {"speaker": ..., "text": ...}; several start a conversation: POST /v1/conversations',
            field="utterances",
        )
    try:
        dialogue = _dialogue(_named({"utterances": [payload]}, dataset), "", config)
    except ApiError as error:
        # The utterance is the whole body here, so its fields are named without a prefix.
        field = (error.field or "").removeprefix("utterances[0]").lstrip(".") or None
        raise ApiError(error.status, error.code, error.message, field) from None
    return dialogue.utterances[0]


_NULLABLE = ("id", "dataset")


def _dialogue(record: Any, where: str, config: ServiceConfig) -> Dialogue:
    prefix = f"{where}." if where else ""
    if not isinstance(record, dict):
        raise ApiError(422, "invalid_request", "a dialogue must be a JSON object", field=where or None)
    if isinstance(record, dict) and isinstance(record.get("utterances"), list) and len(record["utterances"]) > config.max_utterances:
        count = len(record["utterances"])
        raise ApiError(
            422, "too_many_utterances", f"{count} utterances; at most {config.max_utterances} per dialogue", field=f"{prefix}utterances"
        )
    # The OpenAPI document marks these optional fields nullable (clients generated from it send
    # null for "not given"), while the JSONL format they share with predict refuses null.
    record = {key: value for key, value in record.items() if not (key in _NULLABLE and value is None)}
    try:
        dialogue = parse_dialogue(record, path="request", line=0, split="test", label_set=None, default_dataset=REQUEST_DATASET)
    except InputError as error:
        raise ApiError(422, "invalid_request", error.message, field=f"{prefix}{error.field}" if error.field else (where or None)) from None
    # Only speaker and text matter to the model; dropping the rest keeps stored conversations small.
    utterances = tuple(Utterance(speaker=u.speaker, text=u.text) for u in dialogue.utterances)
    for index, utterance in enumerate(utterances):
        if len(utterance.text) > config.max_utterance_chars:
            raise ApiError(
                422,
                "utterance_too_long",
                f"{len(utterance.text)} characters; at most {config.max_utterance_chars} per utterance",
                field=f"{prefix}utterances[{index}].text",
            )
        if len(utterance.speaker) > config.max_speaker_chars:
            raise ApiError(
                422,
                "speaker_too_long",
                f"{len(utterance.speaker)} characters; at most {config.max_speaker_chars} per speaker name",
                field=f"{prefix}utterances[{index}].speaker",
            )
    return Dialogue(id=dialogue.id, dataset=REQUEST_DATASET, split="test", utterances=utterances)
