"""The FastAPI application: endpoints, error answers and the request-body limit.

:func:`create_app` takes a loaded predictor (anything with ``predict_at(items, mode)`` and
``label_set``), so tests can hand it an instrumented one; FastAPI is imported inside it.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations
(``Request``), which are imported inside :func:`create_app` and so must be evaluated there.
"""

import itertools
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Sequence

from instructerc import __version__
from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.service.batching import Batcher, BatchingConfig, Item, Overloaded
from instructerc.service.config import ServiceConfig
from instructerc.service.requests import REQUEST_DATASET, ApiError, conversation_request, parse_json, predict_request, utterance_request
from instructerc.service.store import ConversationStore, Turn

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

# The service always scores every label: each answer is a label with a probability.
MODE = "score"


class Service:
    """What the endpoints share: the predictor behind its batcher, the conversations, the limits."""

    def __init__(self, predictor: Any, config: ServiceConfig) -> None:
        self.predictor = predictor
        self.config = config
        self.batcher = Batcher(
            lambda items: predictor.predict_at(items, mode=MODE),
            BatchingConfig(
                enabled=config.batching, max_batch_size=config.max_batch_size, max_wait=config.max_wait_ms / 1000,
                wait_share=config.wait_share, max_pending=config.max_pending,
            ),
        )
        self.store = ConversationStore(config.max_conversations, config.max_idle_seconds)
        self._ids = itertools.count()

    def internal(self, utterances: tuple[Utterance, ...]) -> Dialogue:
        """A dialogue under an id no other dialogue in flight has: clients may reuse ids, but
        the predictor keys demonstrations and shared prefixes by dialogue id."""
        return Dialogue(id=f"request-{next(self._ids)}", dataset=REQUEST_DATASET, split="test", utterances=utterances)

    async def predict(self, items: Sequence[Item]) -> list[Any]:
        """Predictions for ``items``, or an :class:`ApiError` for this request alone."""
        try:
            return await self.batcher.submit(items)
        except Overloaded as error:
            raise ApiError(503, "overloaded", str(error)) from None
        except InputError as error:
            # The prompt builder's verdict on this request's text, e.g. an utterance longer than
            # the model's context even without history.
            raise ApiError(422, "not_predictable", error.message) from None
        except Exception:
            log.exception("the model failed on a request")
            raise ApiError(500, "model_error", "the model failed on this request; other requests are unaffected") from None


def create_app(predictor: Any, config: ServiceConfig | None = None) -> "FastAPI":
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    from instructerc.service import schemas

    service = Service(predictor, config or ServiceConfig())
    limits = service.config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()

    app = FastAPI(
        title="instructerc",
        version=__version__,
        summary="Emotion recognition in conversation: label every utterance with an emotion and its probabilities.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    errors = {status: {"model": schemas.ErrorResponse} for status in (400, 404, 409, 413, 422, 500, 503)}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        # An overloaded server asks well-behaved clients to back off rather than retry at once.
        headers = {"Retry-After": "1"} if error.status == 503 else None
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse(ApiError(error.status_code, code, str(error.detail)).body(), status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return JSONResponse(ApiError(422, "invalid_request", str(first.get("msg", "invalid request")), field).body(), status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(ApiError(500, "internal_error", "internal error").body(), status_code=500)

    @app.post("/v1/predict", response_model=schemas.PredictResponse, responses=errors, openapi_extra=schemas.request_body(schemas.PredictRequest))
    async def predict(request: Request) -> dict[str, Any]:
        """Emotions of every utterance of one or more dialogues (each predicted from its history)."""
        requested = predict_request(parse_json(await request.body()), limits)
        dialogues = [service.internal(d.utterances) for _, d in requested]
        predictions = await service.predict([(d, i) for d in dialogues for i in range(len(d))])
        out, start = [], 0
        for (client_id, dialogue) in requested:
            chunk = predictions[start:start + len(dialogue)]
            start += len(dialogue)
            out.append({"id": client_id, "utterances": [_utterance(u, p) for u, p in zip(dialogue.utterances, chunk)]})
        return {"dialogues": out}

    @app.post("/v1/conversations", status_code=201, response_model=schemas.ConversationOut, responses=errors, openapi_extra=schemas.request_body(schemas.NewConversation))
    async def create_conversation(request: Request) -> dict[str, Any]:
        """Start a conversation, optionally with utterances (each predicted); returns its id."""
        utterances = conversation_request(parse_json(await request.body(), allow_empty=True), limits)
        if len(utterances) > limits.max_conversation_utterances:
            raise ApiError(409, "conversation_full", f"at most {limits.max_conversation_utterances} utterances per conversation", field="utterances")
        dialogue = service.internal(utterances)
        predictions = await service.predict([(dialogue, i) for i in range(len(dialogue))])
        conversation = service.store.create([Turn(u, p) for u, p in zip(utterances, predictions)])
        return _conversation(conversation.id, conversation.turns)

    @app.post("/v1/conversations/{conversation_id}/utterances", response_model=schemas.AddedUtterance, responses=errors, openapi_extra=schemas.request_body(schemas.UtteranceIn))
    async def add_utterance(conversation_id: str, request: Request) -> dict[str, Any]:
        """Add the next utterance; it is predicted from the history the server keeps."""
        utterance = utterance_request(parse_json(await request.body()), limits)
        conversation = _known(service.store.get(conversation_id), conversation_id)
        async with conversation.lock:
            if conversation_id not in service.store:  # deleted or evicted while this request waited
                raise _unknown(conversation_id)
            index = len(conversation.turns)
            if index >= limits.max_conversation_utterances:
                raise ApiError(409, "conversation_full", f"the conversation has {index} utterances, the most allowed; start a new one")
            history = tuple(turn.utterance for turn in conversation.turns)
            [prediction] = await service.predict([(service.internal(history + (utterance,)), index)])
            conversation.turns.append(Turn(utterance, prediction))
        return {"conversation_id": conversation.id, "index": index, **_utterance(utterance, prediction)}

    @app.get("/v1/conversations/{conversation_id}", response_model=schemas.ConversationOut, responses=errors)
    async def get_conversation(conversation_id: str) -> dict[str, Any]:
        """The utterances so far, each with the prediction made when it was added."""
        conversation = _known(service.store.get(conversation_id), conversation_id)
        return _conversation(conversation.id, conversation.turns)

    @app.delete("/v1/conversations/{conversation_id}", status_code=204, response_class=Response, responses=errors)
    async def delete_conversation(conversation_id: str) -> Response:
        if not service.store.delete(conversation_id):
            raise _unknown(conversation_id)
        return Response(status_code=204)

    @app.get("/v1/labels", response_model=schemas.LabelsOut)
    async def labels() -> dict[str, Any]:
        """The labels the model answers in, in the order of ``emotion_scores``."""
        label_set = predictor.label_set
        return {"label_set": label_set.name, "labels": list(label_set.labels)}

    @app.get("/healthz", response_model=schemas.HealthOut)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "conversations": len(service.store), "pending": service.batcher.pending, "model_calls": service.batcher.model_calls}

    return app


def _utterance(utterance: Utterance, prediction: Any) -> dict[str, Any]:
    return {"speaker": utterance.speaker, "text": utterance.text, "predicted_emotion": prediction.label, "emotion_scores": prediction.scores}


def _conversation(conversation_id: str, turns: Sequence[Turn]) -> dict[str, Any]:
    return {"id": conversation_id, "utterances": [{"index": i, **_utterance(t.utterance, t.prediction)} for i, t in enumerate(turns)]}


def _known(conversation: Any, conversation_id: str) -> Any:
    if conversation is None:
        raise _unknown(conversation_id)
    return conversation


def _unknown(conversation_id: str) -> ApiError:
    return ApiError(404, "unknown_conversation", "no such conversation (never created, deleted, expired or evicted)", field="conversation_id")


class BodyLimit:
    """ASGI middleware: reads the whole request body, answering 413 as soon as it passes
    ``max_bytes``, then hands the body on. The bytes are counted as they arrive, so a missing
    or false Content-Length changes nothing; a declared length over the limit is refused at once.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, send: Any) -> None:
        import json

        body = json.dumps(ApiError(413, "body_too_large", f"the request body is over {self.max_bytes} bytes").body()).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that yields the buffered body once, then defers to the real one (which
    reports the client's disconnect)."""
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
