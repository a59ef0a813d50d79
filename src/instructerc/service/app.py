"""The FastAPI application: endpoints and error answers (what every request passes first, the
host, origin, body and time checks, is :mod:`instructerc.service.guard`).

:func:`create_app` takes a loaded predictor (anything with ``predict_at(items, mode)`` and
``label_set``), so tests can hand it an instrumented one; FastAPI is imported inside it.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations
(``Request``), which are imported inside :func:`create_app` and so must be evaluated there.
"""

import asyncio
import itertools
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Sequence, Union

from instructerc import __version__
from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.inference.incremental import CacheStore
from instructerc.labels.prediction import per_dialogue
from instructerc.labels.unified import UnifiedMapping, mapping_of
from instructerc.service.batching import Abandoned, Batcher, BatchingConfig, Item, Overloaded, WorkerDead
from instructerc.service.config import ServiceConfig
from instructerc.service.guard import DISCONNECTED, REQUEST_ID, RequestGuard
from instructerc.service.requests import (
    REQUEST_DATASET,
    ApiError,
    RequestedDialogue,
    conversation_request,
    declared_charset,
    parse_json,
    predict_request,
    utterance_request,
)
from instructerc.service.store import Conversation, ConversationStore, StoreFull, TokenBucket, Turn

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

# The service always scores every label: each answer is a label with a probability.
MODE = "score"


@dataclass(frozen=True)
class LiveTurn:
    """The newest utterance of a live conversation, scored from the conversation's cache."""

    conversation: Conversation
    dialogue: Dialogue
    # Earlier turns that came back truncated: cut again in this turn's prompt, as predicting the
    # whole conversation cuts them (the text alone is not enough: a speaker's name may be cut).
    cut_before: tuple[int, ...] = ()


class Service:
    """What the endpoints share: the predictor behind its batcher, the conversations, the limits."""

    def __init__(self, predictor: Any, config: ServiceConfig) -> None:
        self.predictor = predictor
        self.config = config
        # Live conversations' key/value caches, where the predictor can continue them.
        self.caches = (
            CacheStore(int(config.turn_cache_mb * 2**20)) if config.turn_cache and getattr(predictor, "caches_turns", False) else None
        )
        self.batcher = Batcher(
            self._predict_batch,
            BatchingConfig(
                enabled=config.batching,
                max_batch_size=config.max_batch_size,
                max_wait=config.max_wait_ms / 1000,
                wait_share=config.wait_share,
                max_pending=config.max_pending,
            ),
        )
        self.store = ConversationStore(
            config.max_conversations,
            config.max_idle_seconds,
            evict_after_idle_seconds=config.evict_after_idle_seconds,
            on_drop=self.forget,
        )
        self.creations = TokenBucket(config.new_conversations_per_second, config.new_conversation_burst)
        self._ids = itertools.count()

    def _predict_batch(self, items: Sequence[Item | LiveTurn]) -> list[Any]:
        """One model call's items: live turns continue their conversations' caches (all in one
        batch); the rest, and live turns when no caches are kept, are scored from their text.
        Runs in the batcher's worker thread."""
        cached = self.caches is not None
        turns = [k for k, item in enumerate(items) if cached and isinstance(item, LiveTurn)]
        others = [k for k, item in enumerate(items) if not (cached and isinstance(item, LiveTurn))]
        results: list[Any] = [None] * len(items)
        for k, prediction in zip(others, self._rescore([items[k] for k in others])):
            results[k] = prediction
        if turns and self.caches is not None:
            conversations = [items[k].conversation for k in turns]
            caches = [self.caches.take(c.id) for c in conversations]
            for k, cache in zip(turns, caches):
                cache.cut_turns.update(items[k].cut_before)  # a cache dropped and started afresh must know them too
            try:
                predictions = self.predictor.predict_turns([(items[k].dialogue, cache) for k, cache in zip(turns, caches)])
            finally:
                for conversation, cache in zip(conversations, caches):
                    # One dropped while its turn waited or was scored is gone: keeping its cache
                    # would hold memory for nothing, but its take must still end (release).
                    if conversation.closed:
                        self.caches.release(conversation.id)
                    else:
                        self.caches.put(conversation.id, cache)
            for k, prediction in zip(turns, predictions):
                results[k] = prediction
        return results

    def _rescore(self, items: Sequence[Item | LiveTurn]) -> list[Any]:
        """Items scored from their text, live turns (their newest utterance) among them."""
        plain = [(item.dialogue, len(item.dialogue) - 1) if isinstance(item, LiveTurn) else item for item in items]
        cut_before = [item.cut_before if isinstance(item, LiveTurn) else () for item in items]
        if not any(cut_before):  # the plain call, which any predictor has
            return list(self.predictor.predict_at(plain, mode=MODE))
        return list(self.predictor.predict_at(plain, mode=MODE, cut_before=cut_before))

    def turn_item(self, conversation: Conversation, utterances: tuple[Utterance, ...]) -> LiveTurn:
        """What to queue for a conversation's newest utterance (``utterances`` ends with it)."""
        cut = tuple(i for i, turn in enumerate(conversation.turns) if getattr(turn.prediction, "truncated", False))
        return LiveTurn(conversation, self.internal(utterances, conversation.dataset), cut)

    def forget(self, conversation: Conversation) -> None:
        """Drops what is kept for a conversation that left the store (its key/value cache)."""
        conversation.closed = True  # before the discard: a turn of it in flight checks it (see _predict_batch)
        if self.caches is not None:
            self.caches.discard(conversation.id)

    def internal(self, utterances: tuple[Utterance, ...], named: str | None = None) -> Dialogue:
        """A dialogue under an id no other dialogue in flight has: clients may reuse ids, but
        the predictor keys demonstrations and shared prefixes by dialogue id. ``named``: the
        benchmark the request names, kept only where it changes the prompt (a model whose label
        statement lists the named benchmark's classes), so the service prompts as ``predict`` does."""
        return Dialogue(id=f"request-{next(self._ids)}", dataset=self.prompted_dataset(named), split="test", utterances=utterances)

    def prompted_dataset(self, named: str | None) -> str:
        setup = getattr(self.predictor, "setup", None)
        if named is None or setup is None or not setup.template.dataset_classes:
            return REQUEST_DATASET
        mapping = mapping_of(setup.label_set)
        return named if mapping is not None and mapping.covers(named) else REQUEST_DATASET

    async def predict(self, items: Sequence[Item], request: Any = None, admitted: bool = False) -> list[Any]:
        """Predictions for ``items``, or an :class:`ApiError` for this request alone. With the
        ``request``, the items are dropped unpredicted if its client goes away first."""
        abandoned = None if request is None else request.scope.get(DISCONNECTED)
        try:
            predictions = await self.batcher.submit(items, admitted=admitted, abandoned=abandoned, request_id=REQUEST_ID.get())
        except Overloaded as error:
            raise ApiError(503, "overloaded", str(error)) from None
        except WorkerDead as error:
            raise ApiError(503, "unavailable", f"{error}; the service must be restarted") from None
        except Abandoned:
            log.info("the client went away before its %d utterance(s) were predicted; dropped", len(items))
            raise ApiError(499, "client_closed_request", "the client closed the connection") from None
        except InputError as error:
            if error.field == "dtype":
                # The service's precision, not the request: the model's numbers overflow it.
                log.error("the model failed on a request: %s", error.message)
                raise ApiError(500, "model_error", f"{error.message} when the service is started") from None
            # The prompt builder's verdict on this request's text, e.g. an utterance longer than
            # the model's context even without history.
            raise ApiError(422, "not_predictable", error.message) from None
        except Exception:
            log.exception("the model failed on a request")
            raise ApiError(500, "model_error", "the model failed on this request; other requests are unaffected") from None
        cut = sum(bool(getattr(p, "truncated", False)) for p in predictions)
        if cut:
            log.warning("%d utterance(s) were longer than the prompt budget and were cut (start and end kept)", cut)
        return predictions


def create_app(predictor: Any, config: ServiceConfig | None = None) -> "FastAPI":
    from fastapi import FastAPI

    if getattr(predictor, "retriever", None) is not None:
        # Every request's texts differ: cached embeddings would only fill the disk with them.
        predictor.retriever.cache_queries = False
    service = Service(predictor, config or ServiceConfig())

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
        # A path with a trailing slash is answered 404 naming the path without it, not redirected:
        # the redirect's empty 307 is no error a client can read, its Location is built from the
        # Host header (http:// behind a TLS proxy, without a proxy's path prefix), and an empty
        # conversation id (.../conversations//, or %2F) was sent on to another resource.
        redirect_slashes=False,
    )
    app.state.service = service
    _add_middleware(app, service.config)
    _add_error_handlers(app)
    _add_predict_route(app, service)
    _add_conversation_routes(app, service)
    _add_status_routes(app, service)
    _document_only_answered(app)
    return app


def _document_only_answered(app: "FastAPI") -> None:
    """The OpenAPI document without a 422 on routes that take no body. FastAPI documents a 422
    for every route with a path parameter, and the route can only replace it (see ``by_id``), but a
    conversation id is any string: no GET or DELETE of one is ever answered 422, and a client
    generated from the document would handle an error that never comes."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()  # cached by FastAPI: removing twice is removing once
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                if "requestBody" not in operation:
                    operation.get("responses", {}).pop("422", None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


# What is answered before any endpoint runs, whatever the route: a Host not served, a request
# target that is no path nor http URI, or a malformed body (400), a refused origin (403), a body too slow (408) or too large (413) by the
# guard; a request beyond the connection cap (503) by the server's protocol.
_GUARD_STATUSES = (400, 403, 408, 413, 503)
# A body that is not JSON-typed (415) or not a valid request (422); a model failure (500), an
# overload or a dead worker (503).
_BODY_STATUSES = (415, 422)
_MODEL_STATUSES = (500, 503)


def _error_responses(*statuses: int) -> dict[int, dict[str, Any]]:
    """The error statuses an endpoint documents in the OpenAPI schema: the guard's and
    ``statuses``, the ones its own code answers (a client generated from the document should
    not be told that labels can be rate limited, nor miss that any request can be refused)."""
    from instructerc.service import schemas

    return {status: {"model": schemas.ErrorResponse} for status in sorted({*_GUARD_STATUSES, *statuses})}


def _add_middleware(app: "FastAPI", limits: ServiceConfig) -> None:
    if limits.allowed_origins:
        app.add_middleware(
            _json_cors(),
            allow_origins=["*"] if "*" in limits.allowed_origins else list(limits.allowed_origins),
            allow_methods=["GET", "POST", "DELETE"],
            # content-encoding: the guard undoes a gzip body, which a page can send (CompressionStream).
            allow_headers=["content-type", "content-encoding", "x-request-id"],
            # The service listens on loopback: a page of an allowed public origin reaches it only
            # if the browser's Private Network Access preflight is answered yes.
            allow_private_network=True,
            expose_headers=["x-request-id"],
        )
    app.add_middleware(RequestGuard, config=limits)  # added last: outermost, before CORS


def _json_cors() -> type:
    """Starlette's CORS middleware, refusing a preflight in the service's JSON error format
    (400 ``cors_preflight_refused``) where Starlette answers plain text no client can read as
    an error. The origin is checked before it, by the guard (403)."""
    from fastapi.responses import JSONResponse
    from starlette.middleware.cors import CORSMiddleware

    class JsonCors(CORSMiddleware):
        def preflight_response(self, request_headers: Any) -> Any:
            response = super().preflight_response(request_headers)
            if response.status_code < 400:
                return response
            refused = response.body.decode().removeprefix("Disallowed CORS ")  # e.g. "method, headers"
            message = (
                f"the browser's CORS preflight is refused (not allowed: the requested {refused}); allowed methods: "
                f"{', '.join(self.allow_methods)}; allowed headers: {', '.join(sorted(self.allow_headers))}"
            )
            body = ApiError(response.status_code, "cors_preflight_refused", message).body()
            kept = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
            return JSONResponse(body, status_code=response.status_code, headers=kept)

    return JsonCors


def _add_error_handlers(app: "FastAPI") -> None:
    """Every error is answered as an :class:`ApiError` body: status, code, message, field (an
    exception no handler here answers is answered 500 by the guard, with the request's id)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        # An overloaded server asks well-behaved clients to back off rather than retry at once.
        headers = {"Retry-After": "1"} if error.status in (429, 503) else None
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, error: Overloaded) -> JSONResponse:
        return await api_error(request, ApiError(503, "overloaded", str(error)))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        message, headers = str(error.detail), error.headers
        if error.status_code == 404:
            message = _not_found_message(request)
        if error.status_code == 405:
            allowed = _allowed_methods(request)
            message, headers = f"{request.method} is not allowed here; allowed: {', '.join(allowed)}", {"Allow": ", ".join(allowed)}
        return JSONResponse(ApiError(error.status_code, code, message).body(), status_code=error.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return JSONResponse(ApiError(422, "invalid_request", str(first.get("msg", "invalid request")), field).body(), status_code=422)


def _not_found_message(request: Any) -> str:
    """A 404 for a path no route answers, naming the route a trailing slash missed."""
    from starlette.routing import Match

    path = request.scope.get("path", "")
    if len(path) > 1 and path.endswith("/"):
        # One slash only: ``/v1/conversations//`` is an empty conversation id, not the collection.
        # Named by its template: the path itself may hold a client's kilobytes-long id.
        bare = {**request.scope, "path": path[:-1]}
        for route in request.app.router.routes:
            if route.matches(bare)[0] is not Match.NONE:
                return f"no such path; did you mean {getattr(route, 'path', path[:-1])}, without the trailing slash?"
    return "no such path; the routes are listed at /openapi.json"


def _allowed_methods(request: Any) -> list[str]:
    """Every method some route answers at the request's path. Starlette's 405 names only the
    methods of the first route there, so ``GET /v1/conversations/{id}`` hid ``DELETE``."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _add_predict_route(app: "FastAPI", service: Service) -> None:
    from fastapi import Request

    from instructerc.service import schemas

    @app.post(
        "/v1/predict",
        response_model=schemas.PredictResponse,
        response_model_exclude_unset=True,  # predicted_original_emotion only where it applies
        responses=_error_responses(*_BODY_STATUSES, *_MODEL_STATUSES),
        openapi_extra=schemas.request_body(
            schemas.PredictRequest, max_items={"dialogues": service.config.max_dialogues, "utterances": service.config.max_utterances}
        ),
    )
    async def predict(request: Request) -> dict[str, Any]:
        """Emotions of every utterance of one or more dialogues (each predicted from its history)."""
        requested = predict_request(await _json(request), service.config)
        dialogues = [service.internal(r.dialogue.utterances, r.dataset) for r in requested]
        predictions = await service.predict([(d, i) for d in dialogues for i in range(len(d))], request)
        grouped = per_dialogue(predictions, dialogues)
        mapping = mapping_of(service.predictor.label_set)
        return {"dialogues": [_dialogue_out(r, chunk, mapping) for r, chunk in zip(requested, grouped)]}


def _add_conversation_routes(app: "FastAPI", service: Service) -> None:
    from fastapi import Request
    from fastapi.responses import Response

    from instructerc.service import schemas

    limits = service.config

    @app.post(
        "/v1/conversations",
        status_code=201,
        response_model=schemas.ConversationOut,
        response_model_exclude_unset=True,  # dataset and predicted_original_emotion only where they apply
        responses=_error_responses(409, 429, *_BODY_STATUSES, *_MODEL_STATUSES),
        openapi_extra=_new_conversation_body(limits),
    )
    async def create_conversation(request: Request) -> dict[str, Any]:
        """Start a conversation, optionally with utterances (each predicted); returns its id."""
        requested = conversation_request(await _json(request, allow_empty=True), limits)
        _check_new_conversation(service, len(requested.utterances))
        try:
            dialogue = service.internal(requested.utterances, requested.dataset)
            predictions = await service.predict([(dialogue, i) for i in range(len(dialogue))], request)
            conversation = service.store.create([Turn(u, p) for u, p in zip(requested.utterances, predictions)], requested.dataset)
        except Exception as error:
            # Nothing was created (the model failed, the store filled): the creation does not count
            # against the client's rate, or a failing model would lock it out. A client that left
            # mid-request (a cancellation, not an Exception) keeps its count: it used the model.
            service.creations.give_back()
            if isinstance(error, StoreFull):
                raise _store_full() from None
            raise
        return _conversation(conversation, mapping_of(service.predictor.label_set))

    _add_turn_route(app, service)

    # 422 is never answered here (the id is any string), but FastAPI documents its own 422 body
    # for every route with a path parameter unless the route names one: named here (in the
    # service's format, so FastAPI's validation schemas stay out of the document), then left out
    # of the document by _document_only_answered.
    by_id = _error_responses(404, 422)

    @app.get(
        "/v1/conversations/{conversation_id}",
        response_model=schemas.ConversationOut,
        response_model_exclude_unset=True,
        responses=by_id,
    )
    async def get_conversation(conversation_id: str) -> dict[str, Any]:
        """The utterances so far, each with the prediction made when it was added."""
        conversation = _known(service.store.get(conversation_id), conversation_id)
        return _conversation(conversation, mapping_of(service.predictor.label_set))

    # Every resource that answers GET answers HEAD (RFC 9110): its status and headers, no body.
    app.head("/v1/conversations/{conversation_id}", include_in_schema=False)(get_conversation)

    @app.delete("/v1/conversations/{conversation_id}", status_code=204, response_class=Response, responses=by_id)
    async def delete_conversation(conversation_id: str) -> Response:
        if not service.store.delete(conversation_id):  # its cache goes with it (the store's on_drop)
            raise _unknown(conversation_id)
        return Response(status_code=204)


def _add_turn_route(app: "FastAPI", service: Service) -> None:
    from fastapi import Request

    from instructerc.service import schemas

    limits = service.config

    @app.post(
        "/v1/conversations/{conversation_id}/utterances",
        response_model=schemas.AddedUtterance,
        response_model_exclude_unset=True,
        responses=_error_responses(404, 409, *_BODY_STATUSES, *_MODEL_STATUSES),
        openapi_extra=schemas.request_body(schemas.UtteranceIn),
    )
    async def add_utterance(conversation_id: str, request: Request) -> dict[str, Any]:
        """Add the next utterance; it is predicted from the history the server keeps."""
        payload = await _json(request)
        conversation = _known(service.store.get(conversation_id), conversation_id)
        # Read under the benchmark the conversation names, as /v1/predict reads a dialogue naming it.
        utterance = utterance_request(payload, limits, conversation.dataset)
        # Admitted before waiting for the lock: requests queued behind one conversation count too.
        with service.batcher.admitted(1):  # Overloaded is answered 503 by its handler
            async with conversation.lock:
                if conversation_id not in service.store:  # deleted or evicted while this request waited
                    raise _unknown(conversation_id)
                index = len(conversation.turns)
                if index >= limits.max_conversation_utterances:
                    raise ApiError(
                        409,
                        "conversation_full",
                        f"the conversation has {index} utterances, the most allowed; start a new one",
                        field="conversation_id",
                    )
                # As said: the predictor cuts the turns that came back truncated again (see
                # turn_item), as their own prompts cut them; a text given already cut would be
                # cut once more where the speaker's name is over the budget too.
                history = tuple(turn.utterance for turn in conversation.turns)
                item = service.turn_item(conversation, history + (utterance,))
                [prediction] = await service.predict([item], request, admitted=True)
                conversation.turns.append(Turn(utterance, prediction))
                service.store.touch(conversation)
        turn = _turn(Turn(utterance, prediction), conversation, mapping_of(service.predictor.label_set))
        return {"conversation_id": conversation.id, "index": index, **turn}


def _new_conversation_body(limits: ServiceConfig) -> dict[str, Any]:
    """The documented body of a new conversation: optional (an empty body starts an empty one),
    with no more initial utterances than one request or one conversation may hold."""
    from instructerc.service import schemas

    most = min(limits.max_utterances, limits.max_conversation_utterances)
    return schemas.request_body(schemas.NewConversation, required=False, max_items={"utterances": most})


async def _json(request: Any, allow_empty: bool = False) -> Any:
    """The request's JSON body, read in the charset its ``Content-Type`` declares.

    Parsed in a worker thread: a body of the largest size made of small arrays takes about a
    second to parse and check, which on the event loop stalled every other request (health
    probes included) for that long, and for minutes with many such bodies at once."""
    charset = declared_charset(request.headers.get("content-type", ""))
    return await asyncio.to_thread(parse_json, await request.body(), allow_empty, charset)


def _check_new_conversation(service: Service, utterances: int) -> None:
    """Refuses a new conversation before any model time is spent: too long, no room, or too fast."""
    limits = service.config
    if utterances > limits.max_conversation_utterances:
        raise ApiError(
            409, "conversation_full", f"at most {limits.max_conversation_utterances} utterances per conversation", field="utterances"
        )
    if not service.store.has_room():
        raise _store_full()
    if not service.creations.take():
        raise ApiError(
            429, "too_many_new_conversations", f"at most {limits.new_conversations_per_second:g} new conversations per second; retry later"
        )


def _add_status_routes(app: "FastAPI", service: Service) -> None:
    from fastapi import Response
    from fastapi.responses import JSONResponse

    from instructerc.service import schemas

    @app.get("/v1/labels", response_model=schemas.LabelsOut, responses=_error_responses())
    async def labels() -> dict[str, Any]:
        """The labels the model answers in, in the order of ``emotion_scores``."""
        label_set = service.predictor.label_set
        return {"label_set": label_set.name, "labels": list(label_set.labels)}

    app.head("/v1/labels", include_in_schema=False)(labels)  # as GET, without the body

    # Its 503 is its own body once the worker has died, or the error any route gets at the connection cap.
    health_responses = {**_error_responses(), 503: {"model": Union[schemas.HealthOut, schemas.ErrorResponse]}}

    @app.get("/healthz", response_model=schemas.HealthOut, responses=health_responses)
    async def health() -> Any:
        """``ok`` (200) while requests can be answered; ``failed`` (503) once the batching worker has died."""
        alive = service.batcher.alive
        service.store.purge()  # expired conversations are not live, and their caches go with them
        body = {
            "status": "ok" if alive else "failed",
            "conversations": len(service.store),
            "pending": service.batcher.pending,
            "model_calls": service.batcher.model_calls,
            "dropped": service.batcher.dropped,
            "turn_scoring": "cached" if service.caches is not None else "rescoring",
            "turn_cache_bytes": service.caches.nbytes if service.caches is not None else 0,
            "turn_cache_conversations": len(service.caches) if service.caches is not None else 0,
        }
        return body if alive else JSONResponse(body, status_code=503)

    @app.head("/healthz", include_in_schema=False)
    async def health_head() -> Response:
        """The status of ``GET /healthz`` without its body, for monitors and load balancers that probe with HEAD."""
        return Response(status_code=200 if service.batcher.alive else 503)


def _dialogue_out(requested: RequestedDialogue, predictions: Sequence[Any], mapping: UnifiedMapping | None) -> dict[str, Any]:
    """A predicted dialogue; one that names a dataset the model's unified labels cover also gets
    each label in that dataset's own words, as ``instructerc predict`` gives it."""
    utterances = [_predicted(u, p, requested.dataset, mapping) for u, p in zip(requested.dialogue.utterances, predictions)]
    return {"id": requested.client_id, "utterances": utterances}


def _predicted(utterance: Utterance, prediction: Any, named: str | None, mapping: UnifiedMapping | None) -> dict[str, Any]:
    """An utterance's prediction; where its dialogue or conversation names a dataset the model's
    unified labels cover, also in that dataset's own words."""
    out = _utterance(utterance, prediction)
    if mapping is not None and named is not None and mapping.covers(named):
        out["predicted_original_emotion"] = mapping.best_original(named, prediction.scores)
    return out


def _utterance(utterance: Utterance, prediction: Any) -> dict[str, Any]:
    return {
        "speaker": utterance.speaker,
        "text": utterance.text,
        "predicted_emotion": prediction.label,
        "emotion_scores": prediction.scores,
        "truncated": bool(getattr(prediction, "truncated", False)),
    }


def _store_full() -> ApiError:
    return ApiError(503, "conversations_full", "every stored conversation is in use; retry later")


def _conversation(conversation: Conversation, mapping: UnifiedMapping | None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": conversation.id}
    if conversation.dataset is not None:
        out["dataset"] = conversation.dataset
    out["utterances"] = [{"index": i, **_turn(turn, conversation, mapping)} for i, turn in enumerate(conversation.turns)]
    return out


def _turn(turn: Turn, conversation: Conversation, mapping: UnifiedMapping | None) -> dict[str, Any]:
    """A turn's prediction, named as ``/v1/predict`` names a dialogue's (see :func:`_predicted`)."""
    return _predicted(turn.utterance, turn.prediction, conversation.dataset, mapping)


def _known(conversation: Any, conversation_id: str) -> Any:
    if conversation is None:
        raise _unknown(conversation_id)
    return conversation


def _unknown(conversation_id: str) -> ApiError:
    return ApiError(
        404,
        "unknown_conversation",
        # Conversations live in the server's memory: a restart loses them, as eviction does.
        "no such conversation (never created, deleted, expired, evicted, or lost when the server restarted); start a new one",
        field="conversation_id",
    )
