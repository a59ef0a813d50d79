"""What every request passes before an endpoint sees it: who may call, how big, how slow.

:class:`RequestGuard` is ASGI middleware, outermost. For each HTTP request it:

- gives it a request id (the client's ``X-Request-ID`` when that is a short plain token, else a
  new one), returned in the ``X-Request-ID`` header of every answer and put on every log line
  written while the request runs (:data:`REQUEST_ID`, :class:`RequestIdFilter`);
- answers only the ``Host`` names allowed (400 otherwise): a web page that rebinds its own DNS
  name to 127.0.0.1 still sends its own name, so DNS rebinding cannot reach the service;
- refuses cross-origin requests (403) unless their origin is allowed: a browser sends
  ``Origin`` with every cross-origin POST, so a page the user visits cannot post to the service;
- reads what is left of a refused request's body (bounded in bytes and time) before answering,
  because closing with unread bytes resets the connection and can erase the answer;
- reads the whole body, refusing it as soon as it passes ``max_body_bytes`` (413) or when it
  does not arrive within ``request_timeout_seconds`` (408), and requires ``application/json``
  for any non-empty body (415), which an HTML form cannot send;
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
from typing import Any

from instructerc.service.config import ServiceConfig

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("instructerc_request_id", default="-")
DISCONNECTED = "instructerc.disconnected"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class RequestIdFilter(logging.Filter):
    """Puts the running request's id on every log record as ``request_id`` (``-`` outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def host_name(header: str) -> str:
    """The name of a ``Host`` header without its port, lower case: ``[::1]:8000`` is ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    name, _, port = header.rpartition(":")
    if name and port.isdigit() and ":" not in name:
        return name.rstrip(".")
    return header.rstrip(".")


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
        given = headers.get("x-request-id", "")
        request_id = given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        token = REQUEST_ID.set(request_id)
        send = _with_request_id(send, request_id)
        try:
            await self._guarded(scope, headers, receive, send)
        finally:
            REQUEST_ID.reset(token)

    async def _guarded(self, scope: dict, headers: dict[str, str], receive: Any, send: Any) -> None:
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
        if body.strip() and scope["method"] in _BODY_METHODS and not _is_json(headers.get("content-type", "")):
            await answer(
                send, 415, "unsupported_media_type", "the body must be sent as Content-Type: application/json", field="content-type"
            )
            return
        disconnected = asyncio.Event()
        watcher = asyncio.ensure_future(_watch(receive, disconnected))
        scope[DISCONNECTED] = disconnected
        try:
            await self.app(scope, _replay(body, disconnected), send)
        finally:
            watcher.cancel()

    def _refusal(self, scope: dict, headers: dict[str, str]) -> tuple[int, str, str] | None:
        host = headers.get("host", "")
        allowed = self.config.allowed_hosts
        if "*" not in allowed and host_name(host) not in allowed:
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
        """Read and drop what is left of a refused request's body, up to twice ``max_body_bytes``
        more and for at most a second.

        The refusal closes the connection; closing a socket with unread bytes makes the kernel
        reset it, and a client still sending its body then gets the reset instead of the answer.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(1.0, self.config.request_timeout_seconds)
        size = 0
        while size <= 2 * self.config.max_body_bytes:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            size += len(message.get("body", b""))

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


async def answer(send: Any, status: int, code: str, message: str, field: str | None = None) -> None:
    """A JSON error in the service's format; the connection is closed after it (the rest of the
    request may never have been read)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: dict) -> dict[str, str]:
    # latin-1 maps every byte, so no header value can make decoding fail.
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", ())}


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


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
