"""What every request passes before an endpoint sees it: who may call, how big, how slow.

:class:`RequestGuard` is ASGI middleware, outermost. For each HTTP request it:

- gives it a request id (the client's ``X-Request-ID`` when that is a short plain token, else a
  new one), returned in the ``X-Request-ID`` header of every answer and put on every log line
  written while the request runs (:data:`REQUEST_ID`, :class:`RequestIdFilter`);
- reads a request target in absolute form (``GET http://host/path``) as its path, with the
  URI's host as the ``Host`` (:func:`origin_form`; 400 for a URI that is no http one);
- answers only the ``Host`` names allowed (400 otherwise): a web page that rebinds its own DNS
  name to 127.0.0.1 still sends its own name, so DNS rebinding cannot reach the service (an
  HTTP/1.0 request without ``Host``, which no browser sends, is served);
- refuses cross-origin requests (403) unless their origin is allowed: a browser sends
  ``Origin`` with every cross-origin POST, so a page the user visits cannot post to the service;
- reads what is left of a refused request's body (bounded in bytes and time) before answering,
  because closing with unread bytes resets the connection and can erase the answer;
- reads the whole body, refusing it as soon as it passes ``max_body_bytes`` (413) or when it
  does not arrive within ``request_timeout_seconds`` (408), undoes a gzip or deflate
  ``Content-Encoding`` under the same bound (:func:`decoded_body`), and requires
  ``application/json`` for any non-empty body (415), which an HTML form cannot send;
- then watches for the client's disconnect and tells the endpoint through
  ``scope["instructerc.disconnected"]`` (an :class:`asyncio.Event`), so a request whose client
  has gone is dropped before its model call.

The header phase is timed by the server's protocol (:func:`instructerc.service.server.protocol_class`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import uuid
import zlib
from typing import Any, Sequence
from urllib.parse import unquote

from instructerc.service.config import ServiceConfig, host_name

log = logging.getLogger(__name__)
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("instructerc_request_id", default="-")
DISCONNECTED = "instructerc.disconnected"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class RequestIdFilter(logging.Filter):
    """Puts the running request's id on every log record as ``request_id`` (``-`` outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class RequestGuard:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: Any, config: ServiceConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        request_id = _request_id(headers)
        token = REQUEST_ID.set(request_id)
        send = _with_request_id(send, request_id)
        try:
            await self._guarded(scope, receive, send)
        finally:
            REQUEST_ID.reset(token)

    async def _guarded(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            scope = origin_form(scope)
        except Refused as refused:
            await self._drain(receive)
            await answer(send, refused.status, refused.code, refused.message, field=refused.field)
            return
        headers = _headers(scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await self._drain(receive)
            await answer(send, *refusal)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.config.max_body_bytes:
            await self._drain(receive)
            await answer(send, 413, "body_too_large", f"the request body is over {self.config.max_body_bytes} bytes")
            return
        body = await self._body(receive, send)
        if body is None:
            return
        if scope["method"] not in _BODY_METHODS:
            # No route reads the body of a GET or DELETE: undoing its coding could only refuse
            # it (415 or 400), an answer these routes do not document, for bytes nobody reads.
            body = b""
        try:
            body = decoded_body(body, headers.get("content-encoding", ""), self.config.max_body_bytes)
        except Refused as refused:
            await answer(send, refused.status, refused.code, refused.message, field=refused.field)
            return
        problem = _content_type_problem(headers.get("content-type", ""))
        if body.strip() and problem is not None:
            await answer(send, 415, "unsupported_media_type", problem, field="content-type")
            return
        disconnected = asyncio.Event()
        watcher = asyncio.ensure_future(_watch(receive, disconnected))
        scope[DISCONNECTED] = disconnected
        try:
            await _answered(self.app, scope, _replay(body, disconnected), send)
        finally:
            watcher.cancel()

    def _refusal(self, scope: dict, headers: dict[str, str]) -> tuple[int, str, str] | None:
        host = headers.get("host", "")
        allowed = self.config.allowed_hosts
        # HTTP/1.0 has no Host header (1.1 requires one, checked by the HTTP parser). Only a
        # browser can be made to rebind a name, and every browser sends Host: a request without
        # one names no host to refuse, and reaches only the address the server is bound to.
        unnamed = "host" not in headers and scope.get("http_version") == "1.0"
        if "*" not in allowed and not unnamed and host_name(host) not in allowed:
            return 400, "host_not_allowed", f"the Host {host!r} is not served here (allowed: {', '.join(allowed)}; see --allowed-host)"
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin.rstrip("/").lower(), host.lower()):
            return 403, "cross_origin_refused", f"requests from the web origin {origin!r} are refused (see --allow-origin)"
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        if origin in (f"http://{host}", f"https://{host}"):  # the same origin: the /docs page
            return True
        return "*" in self.config.allowed_origins or origin in self.config.allowed_origins

    async def _drain(self, receive: Any) -> None:
        await drain(receive, self.config)

    async def _body(self, receive: Any, send: Any) -> bytes | None:
        """The whole body, or ``None`` once an error is answered (or the client is gone)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.request_timeout_seconds
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                await answer(
                    send, 408, "request_timeout", f"the request body did not arrive within {self.config.request_timeout_seconds:g} seconds"
                )
                return None
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            size += len(body)
            if size > self.config.max_body_bytes:
                if message.get("more_body", False):
                    await self._drain(receive)
                await answer(send, 413, "body_too_large", f"the request body is over {self.config.max_body_bytes} bytes")
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _answered(app: Any, scope: dict, receive: Any, send: Any) -> None:
    """Runs ``app``; an exception no endpoint answered is logged once, with its request id, and
    answered 500 in the service's format here. Starlette's own last resort runs outside this
    middleware: its answer had no ``X-Request-ID``, its log line no request id, and it re-raised
    the exception for the server to log a second traceback."""
    started = False

    async def sending(message: dict) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, sending)
    except Exception:
        if started:  # too late for an answer of its own: the server closes the connection
            raise
        # The path is percent-decoded: quoted, a %0A in it cannot start a forged log line.
        log.exception("unexpected error on %s %r", scope.get("method"), scope.get("path"))
        await answer(send, 500, "internal_error", "internal error")


async def drain(receive: Any, config: ServiceConfig) -> None:
    """Read and drop what is left of a refused request's body, up to twice ``max_body_bytes``
    more and for at most a second.

    The refusal closes the connection; closing a socket with unread bytes makes the kernel
    reset it, and a client still sending its body then gets the reset instead of the answer.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(1.0, config.request_timeout_seconds)
    size = 0
    while size <= 2 * config.max_body_bytes:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        size += len(message.get("body", b""))


class ConnectionsFull:
    """The ASGI app that answers a request arriving with ``max_connections`` connections open
    (the server's protocol routes it here, :func:`instructerc.service.server.protocol_class`):
    503 ``overloaded`` in the service's format, with ``Retry-After`` and the request id, where
    uvicorn's own refusal is plain text that no client of this API can read as an error."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        request_id = _request_id(_headers(scope))
        token = REQUEST_ID.set(request_id)
        try:
            log.warning("refused: %d connections are open, the most allowed (--max-connections)", self.config.max_connections)
            await drain(receive, self.config)
            await answer(
                _with_request_id(send, request_id),
                503,
                "overloaded",
                f"{self.config.max_connections} connections are open, the most this service keeps; retry later",
                headers=[(b"retry-after", b"1")],
            )
        finally:
            REQUEST_ID.reset(token)


# The start of a request target in absolute form: its scheme and authority (RFC 3986).
_ABSOLUTE_FORM = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)


def origin_form(scope: dict) -> dict:
    """The scope of a request whose target is in absolute form (``GET http://host/v1/labels``,
    which RFC 9112 3.2.2 says a server must accept) as if it were in origin form: its path the
    URI's path, its ``Host`` the URI's authority (the RFC says to ignore the Host header then, so
    the host check applies to the authority). Any other scope is returned as it is.

    uvicorn's h11 protocol passes the whole URI on as the path, which no route matched (404).
    Raises :class:`Refused` (400) for a URI that is not an ``http(s)`` one naming a host.
    """
    root = scope.get("root_path", "").encode("latin-1")
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("latin-1")
    target = raw_path[len(root) :] if raw_path.startswith(root) else raw_path
    parts = _ABSOLUTE_FORM.fullmatch(target)
    if target.startswith(b"/") or parts is None:
        return scope
    scheme, authority, path = (part.decode("latin-1") for part in parts.groups())
    # RFC 9110 4.2.1 and 4.2.4: an http URI without a host is invalid, and userinfo in one is an error.
    if scheme.lower() not in ("http", "https") or not host_name(authority) or "@" in authority:
        raise Refused(
            400, "malformed_request", f"the request target {target[:80].decode('latin-1')!r} is not a path nor an http URI naming a host"
        )
    path = path or "/"
    headers = [(name, value) for name, value in scope.get("headers", ()) if name.lower() != b"host"]
    return {
        **scope,
        "path": scope.get("root_path", "") + unquote(path),
        "raw_path": root + path.encode("latin-1"),
        "headers": [*headers, (b"host", authority.encode("latin-1"))],
    }


class Refused(Exception):
    """A request the guard answers with an error of the service's format instead of passing on."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


# More content codings than any client applies (one, or gzip over deflate).
MAX_CODINGS = 4
# zlib window bits of each content coding: gzip's header, or zlib's ("deflate" in HTTP).
_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decoded_body(body: bytes, content_encoding: str, max_bytes: int) -> bytes:
    """The body with its ``Content-Encoding`` undone (codings applied in order are undone last
    first), never more than ``max_bytes`` decoded: a few kilobytes of gzip can expand to
    gigabytes. Raises :class:`Refused`: 415 for a coding not supported (or too many), 413 over the bound,
    400 for data that is not in its declared coding."""
    if not body:  # nothing was encoded: an empty body is empty in any coding
        return body
    codings = [c for c in (c.strip().lower() for c in content_encoding.split(",")) if c and c != "identity"]
    if len(codings) > MAX_CODINGS:
        # Each coding is undone up to max_bytes on the event loop: thousands of gzip layers of a
        # few bytes each fit in one body and would stall every other request for seconds.
        raise Refused(
            415,
            "unsupported_media_type",
            f"the Content-Encoding applies {len(codings)} codings; at most {MAX_CODINGS} are undone",
            field="content-encoding",
        )
    for coding in reversed(codings):
        if coding not in _CODINGS:
            raise Refused(
                415,
                "unsupported_media_type",
                f"the Content-Encoding {coding[:40]!r} is not supported (send the body as it is, or gzip or deflate it)",
                field="content-encoding",
            )
        body = _inflate(body, coding, max_bytes)
    return body


def _inflate(data: bytes, coding: str, max_bytes: int) -> bytes:
    attempts = [_CODINGS[coding]] + ([-zlib.MAX_WBITS] if coding == "deflate" else [])  # some clients send raw deflate
    for wbits in attempts:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data, max_bytes + 1)
        except zlib.error:
            continue
        if len(out) > max_bytes:
            raise Refused(413, "body_too_large", f"the request body is over {max_bytes} bytes once its {coding} is undone")
        if inflater.eof and not inflater.unused_data:
            return out
    raise Refused(
        400, "malformed_json", f"the body is not {coding} data, as its Content-Encoding says (or it is cut short)", field="content-encoding"
    )


async def answer(
    send: Any, status: int, code: str, message: str, field: str | None = None, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """A JSON error in the service's format; the connection is closed after it (the rest of the
    request may never have been read)."""
    body = error_body(code, message, field)
    fixed = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": [*fixed, *headers]})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: dict) -> dict[str, str]:
    """The request's headers by lower-case name. A header sent more than once is one value, its
    values joined by commas (RFC 9110, 5.3): keeping only the last let a second ``Content-Type:
    application/json`` pass the guard while the endpoint read the body in the first one's charset,
    and dropped all but one of repeated ``Content-Encoding`` codings."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        # latin-1 maps every byte, so no header value can make decoding fail.
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def error_body(code: str, message: str, field: str | None = None) -> bytes:
    """An error in the service's format, ``{"error": {"code", "message", "field"?}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return json.dumps({"error": error}).encode()


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def _request_id(headers: dict[str, str]) -> str:
    given = headers.get("x-request-id", "")
    return given if _CLIENT_ID.fullmatch(given) else new_request_id()


def _content_type_problem(content_type: str) -> str | None:
    """Why a body sent with this ``Content-Type`` is refused, or ``None`` when it is JSON."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    # No JSON media type or charset holds a comma: this is the header given twice (see _headers),
    # and which one holds would be anyone's guess.
    if "," in content_type:
        return f"the Content-Type header is given more than once ({content_type!r}); send one: application/json"
    if media_type != "application/json":
        return "the body must be sent as Content-Type: application/json"
    return None


def _with_request_id(send: Any, request_id: str) -> Any:
    async def sending(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
        await send(message)

    return sending


async def _watch(receive: Any, disconnected: asyncio.Event) -> None:
    """Set ``disconnected`` when the client goes (the next message after a whole body)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.set()


def _replay(body: bytes, disconnected: asyncio.Event) -> Any:
    """A ``receive`` that yields the buffered body once, then reports the disconnect when the
    watcher sees it (the watcher alone reads the real ``receive``)."""
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    return replayed
