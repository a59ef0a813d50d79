"""``instructerc serve``: the HTTP API over a model directory (see :mod:`instructerc.service`)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from instructerc.cli.options import add_dtype_option, add_trust_remote_code_option, path_arg
from instructerc.errors import InputError
from instructerc.service.config import ServiceConfig

# Flag groups: ServiceConfig field -> (type, help); defaults come from ServiceConfig itself.
_OPTIONS: dict[str, dict[str, tuple[type, str]]] = {
    "request limits": {
        "max_body_bytes": (int, "most bytes of a request body (413 beyond)"),
        "max_dialogues": (int, "most dialogues per /v1/predict request"),
        "max_utterances": (int, "most utterances per dialogue of a request"),
        "max_utterance_chars": (int, "most characters of an utterance's text"),
        "max_speaker_chars": (int, "most characters of a speaker name"),
    },
    "batching": {
        "max_batch_size": (int, "most utterances predicted in one model call"),
        "max_wait_ms": (float, "how long a request waits for others to join its batch"),
        "wait_share": (float, "or this share of the last model call's duration, if longer"),
        "max_pending": (int, "most utterances waiting for the model (503 beyond)"),
    },
    "conversations": {
        "max_conversations": (int, "live conversations kept (least recently used evicted)"),
        "max_idle_seconds": (float, "a conversation unused this long is dropped"),
        "max_conversation_utterances": (int, "most utterances of one conversation"),
        "evict_after_idle_seconds": (float, "a full store evicts only a conversation unused this long (503 otherwise)"),
        "new_conversations_per_second": (float, "new conversations allowed per second on average (429 beyond)"),
        "new_conversation_burst": (int, "new conversations allowed at once"),
        "turn_cache_mb": (float, "most MiB of key/value caches kept for live conversations (least recently used dropped)"),
    },
    "connections": {
        "request_timeout_seconds": (float, "time a client has to send a request's headers, and then its body (408)"),
        "keep_alive_seconds": (float, "an idle kept-alive connection is closed after this long"),
        "max_connections": (int, "most open connections and requests in flight (503 beyond)"),
    },
}
# On/off flags (--x / --no-x) per group: ServiceConfig bool field -> help.
_SWITCHES: dict[str, dict[str, str]] = {
    "batching": {"batching": "predict requests that arrive together in one model call"},
    "conversations": {"turn_cache": "score a new utterance from its conversation's key/value cache"},
}
# Repeatable flags for the list fields of ServiceConfig.
_LISTS: dict[str, tuple[str, str]] = {
    "allowed_hosts": (
        "--allowed-host",
        "a Host name to answer (repeat; default: the loopback names; * for any); needed with --host 0.0.0.0",
    ),
    "allowed_origins": (
        "--allow-origin",
        "a web origin whose cross-origin requests are answered, e.g. https://app.example (repeat; * for any; default: none)",
    ),
}


def register(commands: argparse._SubParsersAction) -> None:
    from instructerc.service.server import DEFAULT_HOST, DEFAULT_PORT

    serve = commands.add_parser(
        "serve",
        help="serve a model over HTTP (needs the 'serve' extra)",
        description="Serve a model directory over HTTP: /v1/predict, /v1/conversations, /v1/labels, /healthz, /openapi.json.",
    )
    serve.add_argument(
        "--model",
        type=path_arg,
        metavar="DIR",
        help="a model directory written by 'instructerc train' (default: the model shipped with the package)",
    )
    serve.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    add_dtype_option(serve, "the model computes in")
    serve.add_argument(
        "--threads",
        type=_threads,
        metavar="N",
        help="CPU threads for the model (default: one per core); fewer leave room for the HTTP side",
    )
    serve.add_argument("--host", type=_host, default=DEFAULT_HOST, help="address to bind (default: %(default)s, this machine only)")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT, help="default: %(default)s")
    levels = ("critical", "error", "warning", "info", "debug")
    serve.add_argument("--log-level", default="info", choices=levels, help="what the log shows (default: %(default)s)")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True, help="log every request (default: on)")
    add_trust_remote_code_option(serve)
    for title, options in _OPTIONS.items():
        group = serve.add_argument_group(title)
        for name, text in _SWITCHES.get(title, {}).items():
            group.add_argument(
                f"--{name.replace('_', '-')}",
                action=argparse.BooleanOptionalAction,
                default=getattr(ServiceConfig, name),
                help=f"{text} (default: {'on' if getattr(ServiceConfig, name) else 'off'})",
            )
        for name, (kind, text) in options.items():
            group.add_argument(
                f"--{name.replace('_', '-')}",
                dest=name,
                type=kind,
                default=getattr(ServiceConfig, name),
                metavar="N",
                help=f"{text} (default: %(default)s)",
            )
    callers = serve.add_argument_group("who may call")
    for name, (flag, text) in _LISTS.items():
        callers.add_argument(flag, dest=name, action="append", metavar="NAME", help=text)
    serve.set_defaults(handler=run_server)


def service_config(args: argparse.Namespace) -> ServiceConfig:
    lists = {name: tuple(getattr(args, name)) for name in _LISTS if getattr(args, name) is not None}
    try:
        return ServiceConfig(
            **{name: getattr(args, name) for switches in _SWITCHES.values() for name in switches},
            **lists,
            **{name: getattr(args, name) for options in _OPTIONS.values() for name in options},
        )
    except InputError as error:
        # The config names its field (max_batch_size); the user typed the option (--max-batch-size).
        flag = option_of(error.field)
        raise InputError(f"{flag} {error.message}") from None


def option_of(field: str | None) -> str:
    """The option of ``serve`` that sets the ServiceConfig field ``field``."""
    if field in _LISTS:
        return _LISTS[field][0]
    return f"--{(field or '').replace('_', '-')}"


def answering_bound_address(config: ServiceConfig, host: str) -> ServiceConfig:
    """``config`` also answering the address it binds as a ``Host`` name, whether or not
    ``--allowed-host`` named others (README: "the bound address is added for you"): a client that
    calls ``http://ADDRESS:PORT/`` was refused with a server listening on exactly that address.
    A wildcard address is no name of this machine, so nothing is added for it."""
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name in ("0.0.0.0", "::") or name in config.allowed_hosts:
        return config
    return replace(config, allowed_hosts=config.allowed_hosts + (name,))


SEVERAL_SERVERS = (
    "every process would bind the same port. Start it without torchrun or accelerate launch; to serve from several "
    "processes or GPUs, start one server per process on a port of its own (--port, --device cuda:N) behind a load "
    "balancer; on a CPU, --threads N gives one server more cores"
)


def run_server(args: argparse.Namespace) -> int:
    from instructerc.cli.process_group import refuse_under_launcher
    from instructerc.extras import require_extra
    from instructerc.modeling.default_model import default_model_dir
    from instructerc.modeling.model_dir import Manifest
    from instructerc.service.server import listening_socket, require_serve_extra, serve

    # Before anything is loaded: every process of the launcher would load the model and bind the same port.
    refuse_under_launcher("serve", SEVERAL_SERVERS)
    require_serve_extra()
    require_extra("serve", "train")
    config = answering_bound_address(service_config(args), args.host)
    model = args.model if args.model is not None else default_model_dir()
    Manifest.load(Path(model))  # a wrong --model is said before the port is taken
    if args.device is not None:
        usable_device(args.device)  # and so is a device this machine does not have
    sock = listening_socket(args.host, args.port)
    print(
        f"instructerc: serving {model} on http://{_url_host(args.host)}:{args.port} (batching {'on' if config.batching else 'off'})",
        flush=True,
    )
    serve(
        model,
        config,
        host=args.host,
        port=args.port,
        device=args.device,
        threads=args.threads,
        dtype=args.dtype or "auto",
        log_level=args.log_level,
        access_log=args.access_log,
        trust_remote_code=args.trust_remote_code,
        sock=sock,
    )
    return 0


def usable_device(name: str) -> None:
    """An :class:`InputError` naming ``--device`` when torch cannot place a tensor on ``name``:
    the model would otherwise fail to load with a traceback, after the port was taken."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"{name!r} is not a device (cpu, cuda, cuda:1, mps, ...)", field="device") from None
    try:
        torch.empty(0, device=device)
    except Exception as error:  # noqa: BLE001 - each backend says "not here" in its own exception type
        reason = str(error).strip().split(". ")[0][:200] or type(error).__name__
        raise InputError(f"this machine cannot compute on {name!r}: {reason}", field="device") from None


# Far above any machine's cores; torch fails with an overflow error (after the port is taken)
# on numbers beyond 32 bits, and a typo of that size is no useful thread count.
MAX_THREADS = 1024


def _threads(text: str) -> int:
    value = int(text) if text.strip().isascii() and text.strip().isdigit() else 0
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_THREADS}")
    return value


def _host(text: str) -> str:
    # The socket layer reads an empty address as every interface: an unset variable in
    # --host "$HOST" would open the service to the network.
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give an address (0.0.0.0 listens on every interface)")
    return text


def _port(text: str) -> int:
    # isdigit alone also takes '²', which int() then refuses as "invalid _port value".
    value = int(text) if text.strip().isascii() and text.strip().isdigit() else -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a TCP port, 1 to 65535")
    return value


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
