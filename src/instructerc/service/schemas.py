"""The JSON shapes of the HTTP API, for the OpenAPI document and response serialization.

Request bodies are *validated* by :mod:`instructerc.service.requests` (the user-format parser and
the service limits); the request models here only document them. Imported by the app factory
only, since pydantic comes with the optional ``serve`` extra.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from instructerc.service.requests import MAX_DATASET_CHARS


# A client generated from the document must be able to send what the service accepts, and be
# told what it refuses: an empty speaker, text or list is always refused, so the document says so.
class UtteranceIn(BaseModel):
    speaker: str = Field(min_length=1, description="who speaks; non-empty")
    text: str = Field(min_length=1, description="what was said; non-empty, at most max_utterance_chars characters")


def dataset_field(description: str) -> Any:
    """The optional ``dataset`` of a dialogue or a new conversation: one rule on every route
    (:func:`instructerc.service.requests.named_dataset`), so one set of documented bounds."""
    return Field(None, min_length=1, max_length=MAX_DATASET_CHARS, description=description)


class DialogueIn(BaseModel):
    # The user format's id: a string or an integer, answered as a string.
    id: Optional[Union[str, int]] = Field(None, description="echoed back as a string; not used by the model")
    dataset: Optional[str] = dataset_field(
        "the benchmark the dialogue is from (meld, iemocap, emorynlp): a unified-label model then also gives "
        "predicted_original_emotion; the prompt states its classes only for a model trained with template.dataset_classes"
    )
    utterances: list[UtteranceIn] = Field(min_length=1, description="in order; at most max_utterances")


class PredictRequest(BaseModel):
    dialogues: list[DialogueIn] = Field(
        min_length=1, description="at most max_dialogues; a single dialogue is wrapped in a one-element list"
    )


class NewConversation(BaseModel):
    # Any other key is refused: with every key optional, a misspelt one would drop the utterances.
    model_config = ConfigDict(extra="forbid")

    # null is accepted as "none", as an empty body or an empty list is.
    utterances: Optional[list[UtteranceIn]] = Field(default_factory=list, description="optional initial utterances, each predicted")
    dataset: Optional[str] = dataset_field(
        "the benchmark the conversation is from (meld, iemocap, emorynlp): a unified-label model then also gives "
        "predicted_original_emotion for every turn"
    )


class UtterancePrediction(BaseModel):
    speaker: str
    text: str
    predicted_emotion: str = Field(description="the most probable label of the model's label set")
    emotion_scores: dict[str, float] = Field(description="label -> probability, every label, summing to 1")
    truncated: bool = Field(
        False, description="the text was longer than the model's prompt budget and was cut (start and end kept) to be labelled"
    )


class DialogueUtterancePrediction(UtterancePrediction):
    predicted_original_emotion: Optional[str] = Field(
        None,
        description="only when the dialogue (or conversation) names a dataset the model's unified labels cover: the "
        "best-scoring of that dataset's own labels",
    )


class DialoguePrediction(BaseModel):
    id: Optional[str] = Field(description="the request's dialogue id, or null when it gave none")
    utterances: list[DialogueUtterancePrediction]


class PredictResponse(BaseModel):
    dialogues: list[DialoguePrediction]


class TurnPrediction(DialogueUtterancePrediction):
    index: int = Field(description="the utterance's position in the conversation, from 0")


class ConversationOut(BaseModel):
    id: str = Field(description="the conversation id: unguessable, keep it private")
    dataset: Optional[str] = Field(None, description="the benchmark the conversation named when it started; absent when none")
    utterances: list[TurnPrediction] = Field(description="each with the prediction made when it was added (from its history only)")


class AddedUtterance(TurnPrediction):
    conversation_id: str


class LabelsOut(BaseModel):
    label_set: str
    labels: list[str]


class HealthOut(BaseModel):
    status: str = Field(description="ok, or failed (answered 503) once the batching worker has died: restart the service")
    conversations: int = Field(description="live conversations in the store")
    pending: int = Field(description="utterances queued or being predicted")
    model_calls: int = Field(description="model calls since start; requests per call shows how well batching works")
    dropped: int = Field(0, description="requests dropped unpredicted because their client had gone")
    turn_scoring: str = Field(
        "rescoring",
        description="cached: a conversation's new utterance is scored from the key/value cache of its earlier turns; "
        "rescoring: the conversation is scored again (templates whose prompts do not share the dialogue as a prefix)",
    )
    turn_cache_bytes: int = Field(0, description="memory held by the conversations' key/value caches")
    turn_cache_conversations: int = Field(0, description="conversations with a cache")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. too_many_utterances")
    message: str
    field: Optional[str] = Field(None, description="the offending field of the body, e.g. dialogues[0].utterances[2].text")


class ErrorResponse(BaseModel):
    error: ErrorDetail


def request_body(model: type[BaseModel], required: bool = True, max_items: dict[str, int] | None = None) -> dict[str, Any]:
    """An ``openapi_extra`` entry documenting ``model`` as the JSON request body. ``max_items``:
    the service's limits on list properties by name (``{"dialogues": 32}``), refused beyond, so a
    client generated from the document knows them."""
    schema = with_max_items(inline_schema(model), max_items or {})
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def with_max_items(node: Any, max_items: dict[str, int]) -> Any:
    """``node`` with ``maxItems`` on every array property named in ``max_items``, however nested
    (also an array allowed to be null, documented as ``anyOf``)."""
    if isinstance(node, list):
        return [with_max_items(value, max_items) for value in node]
    if not isinstance(node, dict):
        return node
    out = {key: with_max_items(value, max_items) for key, value in node.items()}
    for name, schema in out.get("properties", {}).items():
        if name in max_items:
            for variant in schema.get("anyOf", [schema]):
                if variant.get("type") == "array":
                    variant["maxItems"] = max_items[name]
    return out


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with nested models inlined: a ``$defs`` reference inside an
    ``openapi_extra`` body would resolve against the OpenAPI document, where it does not exist."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)
