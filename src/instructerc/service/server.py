"""Running the service: load a model directory and serve it with uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instructerc.errors import InputError
from instructerc.service.config import ServiceConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def require_serve_extra() -> None:
    """A :class:`MissingExtra` with the install command when FastAPI or uvicorn is missing."""
    from instructerc.extras import require_extra

    require_extra("serve", "serve")


def serve(
    model_dir: Path,
    config: ServiceConfig,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    device: Any = None,
    threads: int | None = None,
    dtype: str = "auto",
    log_level: str = "info",
    access_log: bool = True,
    trust_remote_code: bool = False,
    sock: Any = None,
) -> None:
    """Serve ``model_dir`` until interrupted (Ctrl-C or SIGTERM stop it gracefully).

    ``sock``: a socket already bound to ``host``:``port`` (:func:`listening_socket`); by default
    one is bound here, before the model loads, so a wrong host or a port in use is said at once.

    ``threads`` sets torch's CPU threads for the model (default: torch's choice, one per core);
    ``dtype`` its precision (:mod:`instructerc.modeling.precision`).
    """
    require_serve_extra()
    import uvicorn

    if threads is not None:
        import torch

        torch.set_num_threads(threads)

    from instructerc.inference.predictor import Predictor
    from instructerc.service.app import create_app

    sock = sock if sock is not None else listening_socket(host, port)
    try:
        predictor = Predictor.from_directory(model_dir, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        app = create_app(predictor, config)
        server = uvicorn.Server(uvicorn_config(app, config, host=host, port=port, log_level=log_level, access_log=access_log))
        server.run(sockets=[sock])
    finally:
        sock.close()


BACKLOG = 2048  # uvicorn's default


def listening_socket(host: str, port: int) -> Any:
    """A TCP socket bound to ``host``:``port`` as uvicorn binds one (IPv6 when the host has a
    colon) and already listening, or an :class:`InputError` saying why it cannot be."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening now, not when uvicorn starts after the model has loaded: with SO_REUSEADDR a
        # second server may bind a port whose socket is not yet listening, and would fail only
        # later, with a traceback. Connections made while the model loads wait in the backlog.
        sock.listen(BACKLOG)
    except (OSError, OverflowError) as error:
        sock.close()
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        port_problem = isinstance(error, OverflowError) or getattr(error, "errno", None) in (errno.EADDRINUSE, errno.EACCES)
        raise InputError(f"cannot listen on {host}:{port}: {reason}", field="port" if port_problem else "host") from None
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Any, config: ServiceConfig, **options: Any) -> Any:
    """The uvicorn settings of the service: its connection cap and timeouts, and request ids in
    the log. ``options`` go to ``uvicorn.Config`` as they are (host, port, log_level, ...)."""
    import uvicorn

    return uvicorn.Config(
        app,
        # The connection cap is the protocol's (limit_concurrency would answer in plain text).
        http=protocol_class(config.request_timeout_seconds, config),
        timeout_keep_alive=config.keep_alive_seconds,
        log_config=log_config(options.get("log_level", "info")),
        **options,
    )


def protocol_class(header_seconds: float, config: ServiceConfig | None = None) -> type:
    """uvicorn's HTTP protocol (httptools when installed, as uvicorn itself chooses, else h11),
    closing a connection whose request headers are not complete within ``header_seconds``.

    uvicorn times a connection only while it is idle between requests (keep-alive); a client that
    sends a header line now and then would otherwise hold its connection for ever. Once the
    headers are in, the body has its own deadline (:class:`~instructerc.service.guard.RequestGuard`).

    With ``config``, a request that arrives while more than ``max_connections`` connections are
    open (its own included), or with ``max_connections`` requests in flight, is answered 503 in
    the service's JSON format (:class:`~instructerc.service.guard.ConnectionsFull`).
    """
    from instructerc.service.guard import ConnectionsFull

    refusal = ConnectionsFull(config) if config is not None else None
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class HeaderDeadline(Base):  # type: ignore[misc, valid-type]
        _deadline: Any = None
        _app: Any = None

        # uvicorn reads ``self.app`` once per request, when its headers are in: the one place to
        # send a request beyond the cap to the refusal instead.
        @property
        def app(self) -> Any:
            if refusal is not None and self._full():
                return refusal
            return self._app

        @app.setter
        def app(self, app: Any) -> None:
            self._app = app

        def _full(self) -> bool:
            limit = refusal.config.max_connections if refusal is not None else 0
            return len(self.connections) > limit or len(self.tasks) >= limit

        def send_400_response(self, msg: str) -> None:
            """A request the HTTP parser cannot read (an HTTP/1.1 request without Host, a bad
            header or chunk) is answered in the service's JSON format with a request id, not
            uvicorn's plain text, unless an answer to it has already begun."""
            if self.cycle is not None and self.cycle.response_started:
                super().send_400_response(msg)
                return
            self.transport.write(malformed_request_answer())
            self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request's headers get the same time

        def connection_lost(self, exc: Any) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(header_seconds, self._expire)

        def _expire(self) -> None:
            self._deadline = None
            in_progress = self.cycle is not None and not self.cycle.response_complete
            if not in_progress and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


def malformed_request_answer() -> bytes:
    """The raw HTTP answer to bytes that are not an HTTP request: 400 ``malformed_request``."""
    from instructerc.service.guard import error_body, new_request_id

    body = error_body(
        "malformed_request", "the request is not valid HTTP/1.1 (its request line, a header, the chunked body, or a missing Host header)"
    )
    head = (
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\nx-request-id: {new_request_id()}\r\n\r\n"
    )
    return head.encode("ascii") + body


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's logging configuration with the request id on every line (``-`` outside a
    request), and the service's own loggers on the same handler."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"request_id": {"()": "instructerc.service.guard.RequestIdFilter"}}
    for formatter in config["formatters"].values():
        formatter["fmt"] = formatter["fmt"].replace("%(levelprefix)s", "%(levelprefix)s [%(request_id)s]", 1)
    for handler in config["handlers"].values():
        handler["filters"] = ["request_id"]
    config["loggers"]["instructerc"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config
