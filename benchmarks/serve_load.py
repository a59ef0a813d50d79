"""Load test of ``instructerc serve``: throughput and latency of server modes, compared in one run.

Starts the server as a subprocess on 127.0.0.1 (a free port), drives it with ``--clients``
concurrent clients (asyncio + httpx, one connection each) for ``--seconds`` after a warm-up,
then stops it; the same again for each of ``--modes``; prints requests per second, p50/p99
latency, errors (must be 0), latency by turn of the conversation, the memory of the
conversations' key/value caches, and the throughput ratio of the first mode to the second.

Modes: ``cache`` (batching, a conversation's new turn scored from its key/value cache),
``rescore`` (batching, every turn re-scores its conversation: ``--no-turn-cache``),
``unbatched`` (one model call per request, re-scoring: ``--no-batching --no-turn-cache``).

Workloads (``--workload``):

``conversation`` (default)
    Each client keeps its own conversation and adds one utterance per request
    (``POST /v1/conversations/{id}/utterances``), as a chat front end would; after the 8
    utterances of its script it deletes the conversation and starts a new one. Only the
    utterance requests are timed and counted (creating and deleting predict nothing), but
    errors of any request are counted.
``predict``
    Each request is ``POST /v1/predict`` with one whole dialogue of 4 to 8 utterances.
``long``
    Each client grows one conversation to ``--turns`` utterances (the scripts' lines, cycled)
    and stops: ``--seconds`` does not apply. The warm-up is one conversation of 10 turns.

The model: ``--default-model`` (the one shipped in the package), ``--model DIR`` (a model
directory), ``--backbone CHECKPOINT`` (a plain Hugging Face
checkpoint such as the converted embedded SmolLM2, copied into a temporary model directory
as if fully fine-tuned: its speed is real, its predictions are not), or by default the tests'
tiny 2-layer Llama (fast, for checking the machinery).

The clients share the machine with the server; on a small machine they take CPU from it, and a
busy machine's other processes slow torch's multi-threaded kernels (``--threads`` sets the
server's). Compare the two modes from one run, not figures from different runs.

    python benchmarks/serve_load.py --seconds 20 [--json out.json]
    python benchmarks/serve_load.py --default-model --seconds 20 --json results/speed/serve-conversation.json
    python benchmarks/serve_load.py --default-model --workload long --clients 1 --turns 80 --json results/speed/serve-long.json
    python benchmarks/serve_load.py --seconds 20 --backbone ~/.cache/instructerc/models/SmolLM2-135M-Instruct-98362432
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from _report import (
    existing_dir,
    input_errors_to,
    non_negative_float,
    output_file,
    positive_float,
    positive_int,
    write_json,
)

REPO = Path(__file__).resolve().parents[1]

# The server's flags per mode.
MODE_FLAGS: dict[str, tuple[str, ...]] = {
    "cache": ("--batching", "--turn-cache"),
    "rescore": ("--batching", "--no-turn-cache"),
    "unbatched": ("--no-batching", "--no-turn-cache"),
}

# Short dialogues in the style of MELD (invented here): the clients cycle through them.
DIALOGUES: tuple[tuple[tuple[str, str], ...], ...] = (
    (
        ("Monica", "Did anyone see my keys? I left them right here on the counter."),
        ("Joey", "Nope. Hey, is this sandwich yours?"),
        ("Monica", "Joey! That was for my lunch meeting!"),
        ("Joey", "Sorry, sorry. It looked lonely."),
        ("Chandler", "Could this morning BE any more chaotic?"),
        ("Monica", "Found them. They were in the fridge. Of course they were."),
        ("Chandler", "Well, at least your keys are fresh."),
        ("Monica", "I am going to be so late."),
    ),
    (
        ("Rachel", "I got the job! They called me an hour ago!"),
        ("Phoebe", "Oh my God, that's amazing! I knew you would!"),
        ("Rachel", "I start on Monday. I'm kind of terrified."),
        ("Phoebe", "Terrified is good. It means you care."),
        ("Ross", "Wait, what job? Nobody tells me anything."),
        ("Rachel", "The buyer position at the store, Ross."),
    ),
    (
        ("Ross", "The museum is closing the dinosaur wing."),
        ("Chandler", "For how long?"),
        ("Ross", "For good. Forever. It's gone."),
        ("Chandler", "Oh man. I'm sorry, buddy."),
        ("Ross", "Twelve years I worked on that exhibit."),
    ),
    (
        ("Phoebe", "Why is there a duck in the bathtub?"),
        ("Joey", "He looked cold!"),
        ("Phoebe", "That's disgusting, Joey, I shower in there."),
        ("Joey", "Relax, I'll clean it. Probably."),
        ("Phoebe", "Get him out before I scream."),
        ("Joey", "Okay, okay! Come on, little guy."),
        ("Phoebe", "And don't bring him back!"),
    ),
)


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    by_turn: dict[int, list[float]] = field(default_factory=dict)  # 1-based turn of the conversation -> latencies
    utterances: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def turn(self, index: int, seconds: float) -> None:
        self.latencies.append(seconds)
        self.utterances += 1
        self.by_turn.setdefault(index, []).append(seconds)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


@dataclass(frozen=True)
class Result:
    mode: str
    seconds: float
    requests: int
    utterances: int
    errors: int
    p50_ms: float
    p99_ms: float
    model_calls: int
    error_samples: tuple[str, ...]
    by_turn_ms: dict[int, float] = field(default_factory=dict)  # mean latency per turn of the conversations
    turn_scoring: str = "?"
    cache_bytes: int = 0
    cache_conversations: int = 0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def utterances_per_model_call(self) -> float:
        return self.utterances / self.model_calls if self.model_calls else 0.0

    def figures(self) -> dict:
        return {
            "mode": self.mode,
            "seconds": self.seconds,
            "requests": self.requests,
            "requests_per_second": self.requests_per_second,
            "utterances": self.utterances,
            "utterances_per_second": self.utterances / self.seconds,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "errors": self.errors,
            "model_calls": self.model_calls,
            "utterances_per_model_call": self.utterances_per_model_call,
            "error_samples": list(self.error_samples),
            "mean_ms_by_turn": {str(k): v for k, v in sorted(self.by_turn_ms.items())},
            "turn_scoring": self.turn_scoring,
            "turn_cache_bytes_at_end": self.cache_bytes,
            "turn_cache_conversations_at_end": self.cache_conversations,
        }

    def mean_of_turns(self, first: int, last: int) -> float:
        values = [self.by_turn_ms[k] for k in range(first, last + 1) if k in self.by_turn_ms]
        return sum(values) / len(values) if values else float("nan")

    def line(self) -> str:
        per_call = self.utterances_per_model_call
        return (
            f"{self.mode:9} ({self.turn_scoring})  {self.requests_per_second:8.1f} req/s  {self.utterances / self.seconds:8.1f} utt/s  "
            f"p50 {self.p50_ms:7.1f} ms  p99 {self.p99_ms:7.1f} ms  errors {self.errors}  "
            f"({self.requests} requests in {self.seconds:.1f} s, {per_call:.1f} utterances per model call; "
            f"cache {self.cache_bytes / 2**20:.1f} MiB for {self.cache_conversations} conversations at the end)"
        )

    def turn_lines(self) -> list[str]:
        turns = sorted(self.by_turn_ms)
        if len(turns) <= 12:
            return ["    mean latency by turn: " + ", ".join(f"{k}: {self.by_turn_ms[k]:.0f} ms" for k in turns)]
        spans = [(a, min(a + 9, turns[-1])) for a in range(1, turns[-1] + 1, 10)]
        return ["    mean latency by turns: " + ", ".join(f"{a}-{b}: {self.mean_of_turns(a, b):.0f} ms" for a, b in spans)]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


# -- model directories ----------------------------------------------------------------------------
def tiny_model(target: Path) -> Path:
    spec = importlib.util.spec_from_file_location("tiny", REPO / "tests" / "tiny.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from instructerc.labels.benchmarks import MELD
    from instructerc.prompts.templates import TemplateConfig

    # The shipped default model's template, so that the turn cache is exercised.
    return module.tiny_model_dir(target, MELD, TemplateConfig(name="dialogue-stream", demonstration=False))


def model_around(checkpoint: Path, target: Path) -> Path:
    """A full-fine-tuning model directory holding a copy of ``checkpoint`` (never written to)."""
    from instructerc.labels.benchmarks import MELD
    from instructerc.modeling.backbone import BackboneConfig
    from instructerc.modeling.model_dir import Manifest
    from instructerc.prompts.setup import PromptSetup
    from instructerc.prompts.templates import TemplateConfig
    from instructerc.retrieval.index import RetrievalConfig

    shutil.copytree(checkpoint, target)
    Manifest(backbone=BackboneConfig(model=str(target)), method="full").save(target)
    PromptSetup(TemplateConfig(name="dialogue-prefix", demonstration=False), MELD, 1024, RetrievalConfig()).save(target)
    return target


# -- the server -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerFailed(Exception):
    """The server did not start, or stopped answering: the benchmark ends with its log's tail."""


class Server:
    """``instructerc serve`` as a subprocess on 127.0.0.1, stopped (by its own pid) on exit."""

    def __init__(self, model: Path, mode: str, log: Path, extra: Sequence[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [
            sys.executable,
            "-m",
            "instructerc",
            "serve",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *MODE_FLAGS[mode],
            "--no-access-log",
            "--log-level",
            "warning",
            *extra,
        ]
        self._handle = log.open("w")
        self.process = subprocess.Popen(command, stdout=self._handle, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"the server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise ServerFailed(f"the server was not ready after {timeout:g} s:\n{self.log.read_text()[-3000:]}")

    def health(self) -> dict:
        import httpx

        try:
            return httpx.get(f"{self.url}/healthz", timeout=10).json()
        except httpx.HTTPError as error:
            raise ServerFailed(f"the server stopped answering ({type(error).__name__}: {error}):\n{self.log.read_text()[-3000:]}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._handle.close()


# -- the clients ----------------------------------------------------------------------------------
async def conversation_client(url: str, number: int, until: float, tally: Tally | None, timeout: float) -> None:
    """Conversations of one script, one after another, until ``until``; a client's first turn is
    sent even after it, so that a slow server still gets measured on every client."""
    import httpx

    script = DIALOGUES[number % len(DIALOGUES)]
    answered = False
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        while time.monotonic() < until or not answered:
            created = await _request(client, tally, "POST", "/v1/conversations", 201)
            if created is None:
                if time.monotonic() >= until:
                    return
                await asyncio.sleep(0.1)  # counted as an error; no retry storm
                continue
            path = f"/v1/conversations/{created.json()['id']}"
            for index, (speaker, text) in enumerate(script, 1):
                if answered and time.monotonic() >= until:
                    break
                start = time.perf_counter()
                if await _request(client, tally, "POST", f"{path}/utterances", 200, {"speaker": speaker, "text": text}) is None:
                    break
                answered = True
                if tally is not None:
                    tally.turn(index, time.perf_counter() - start)
            await _request(client, tally, "DELETE", path, 204)
            if time.monotonic() >= until:
                return  # past the deadline: measured, or its first turn failed (counted as an error)


async def long_client(url: str, number: int, turns: int, tally: Tally | None, timeout: float) -> None:
    """One conversation grown to ``turns`` utterances, the scripts' lines cycled (numbered, so no two are alike)."""
    import httpx

    lines = [line for script in DIALOGUES[number % len(DIALOGUES) :] + DIALOGUES[: number % len(DIALOGUES)] for line in script]
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        created = await _request(client, tally, "POST", "/v1/conversations", 201)
        if created is None:
            return
        path = f"/v1/conversations/{created.json()['id']}"
        for index in range(1, turns + 1):
            speaker, text = lines[(index - 1) % len(lines)]
            start = time.perf_counter()
            body = {"speaker": speaker, "text": f"{text} ({index})"}
            if await _request(client, tally, "POST", f"{path}/utterances", 200, body) is None:
                break
            if tally is not None:
                tally.turn(index, time.perf_counter() - start)


async def predict_client(url: str, number: int, until: float, tally: Tally | None, timeout: float) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        turn = number
        while time.monotonic() < until:
            script = DIALOGUES[turn % len(DIALOGUES)]
            turn += 1
            body = {"dialogues": [{"id": f"client{number}-{turn}", "utterances": [{"speaker": s, "text": t} for s, t in script]}]}
            start = time.perf_counter()
            if await _request(client, tally, "POST", "/v1/predict", 200, body) is not None and tally is not None:
                tally.latencies.append(time.perf_counter() - start)
                tally.utterances += len(script)


async def _request(client, tally: Tally | None, method: str, path: str, expected: int, body: object = None):
    """The response, or None (counted as an error) for another status or a transport failure."""
    import httpx

    try:
        response = await client.request(method, path, json=body)
    except httpx.HTTPError as error:
        if tally is not None:
            tally.error(f"{method} {path}: {type(error).__name__} {error}")
        return None
    if response.status_code != expected:
        if tally is not None:
            tally.error(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return None
    return response


async def drive(
    url: str, workload: str, clients: int, seconds: float, tally: Tally | None, timeout: float = 120.0, turns: int = 80
) -> float:
    """Run the clients for ``seconds`` (``long``: for ``turns`` turns each); returns the wall time
    they took (the last requests finish after the deadline)."""
    start = time.monotonic()
    if workload == "long":
        runs = (long_client(url, k, turns, tally, timeout) for k in range(clients))
    else:
        client = conversation_client if workload == "conversation" else predict_client
        runs = (client(url, k, start + seconds, tally, timeout) for k in range(clients))
    results = await asyncio.gather(*runs, return_exceptions=True)
    for outcome in results:
        if isinstance(outcome, BaseException) and tally is not None:
            tally.error(f"client failed: {type(outcome).__name__}: {outcome}")
    return time.monotonic() - start


def measure(model: Path, mode: str, args: argparse.Namespace, logs: Path) -> Result:
    extra = ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms), "--wait-share", str(args.wait_share)]
    if args.threads is not None:
        extra += ["--threads", str(args.threads)]
    server = Server(model, mode, logs / f"server-{mode}.log", extra)
    try:
        server.wait_ready(args.startup_timeout)
        asyncio.run(drive(server.url, args.workload, args.clients, args.warmup, None, args.timeout, turns=10))
        calls_before = server.health()["model_calls"]
        tally = Tally()
        elapsed = asyncio.run(drive(server.url, args.workload, args.clients, args.seconds, tally, args.timeout, args.turns))
        health = server.health()
    finally:
        server.stop()
    return Result(
        mode=mode,
        seconds=elapsed,
        requests=len(tally.latencies),
        utterances=tally.utterances,
        errors=tally.errors,
        p50_ms=1000 * percentile(tally.latencies, 0.50),
        p99_ms=1000 * percentile(tally.latencies, 0.99),
        model_calls=health["model_calls"] - calls_before,
        error_samples=tuple(tally.error_samples),
        by_turn_ms={k: 1000 * sum(v) / len(v) for k, v in tally.by_turn.items()},
        turn_scoring=health.get("turn_scoring", "?"),
        cache_bytes=health.get("turn_cache_bytes", 0),
        cache_conversations=health.get("turn_cache_conversations", 0),
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from instructerc.service.config import ServiceConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--default-model", action="store_true", help="the model shipped in the package")
    source.add_argument("--model", type=existing_dir, metavar="DIR", help="an instructerc model directory")
    source.add_argument(
        "--backbone", type=existing_dir, metavar="CHECKPOINT", help="a plain HF checkpoint, copied into a temporary model directory"
    )
    parser.add_argument("--workload", choices=("conversation", "predict", "long"), default="conversation")
    parser.add_argument("--turns", type=positive_int, default=80, help="long workload: turns per conversation (default: %(default)s)")
    parser.add_argument(
        "--modes", nargs="+", choices=tuple(MODE_FLAGS), default=["cache", "rescore"], help="server modes, in order (default: %(default)s)"
    )
    parser.add_argument("--clients", type=positive_int, default=16)
    parser.add_argument("--seconds", type=positive_float, default=20.0, help="measured time per mode (default: %(default)s)")
    parser.add_argument("--warmup", type=non_negative_float, default=3.0, help="unmeasured time per mode first (default: %(default)s)")
    defaults = ServiceConfig()
    parser.add_argument("--max-batch-size", type=positive_int, default=defaults.max_batch_size, help="the server's (default: %(default)s)")
    parser.add_argument("--max-wait-ms", type=non_negative_float, default=defaults.max_wait_ms, help="the server's (default: %(default)s)")
    parser.add_argument(
        "--wait-share",
        type=non_negative_float,
        default=defaults.wait_share,
        help="the server's (default: %(default)s; 0: a fixed --max-wait-ms)",
    )
    parser.add_argument("--threads", type=positive_int, help="the server's CPU threads for the model (default: its default)")
    parser.add_argument(
        "--timeout", type=positive_float, default=120.0, help="a request taking longer counts as an error (default: %(default)s s)"
    )
    parser.add_argument("--startup-timeout", type=positive_float, default=180.0)
    parser.add_argument("--json", type=output_file, help="also write the figures here")
    args = parser.parse_args(argv)
    if not (args.seconds <= 600 and args.warmup <= 120 and args.clients <= 256):
        parser.error("keep --seconds in (0, 600], --warmup in [0, 120] and --clients in (0, 256]")
    check_model(parser, args)
    return args


def check_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A model directory that is one, and a checkpoint with a model's config, before any server starts."""
    from instructerc.modeling.model_dir import Manifest

    if args.model is not None:
        with input_errors_to(parser, "--model"):
            Manifest.load(args.model)
    if args.backbone is not None and not (args.backbone / "config.json").is_file():
        parser.error(f"argument --backbone: {args.backbone}: not a Hugging Face checkpoint (no config.json)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch:
        work = Path(scratch)
        if args.default_model:
            from instructerc.modeling.default_model import default_model_dir

            model, described = default_model_dir(), "the default model shipped in the package"
        elif args.model is not None:
            model, described = args.model, str(args.model)
        elif args.backbone is not None:
            model, described = model_around(args.backbone, work / "model"), f"{args.backbone} (not fine-tuned for ERC)"
        else:
            model, described = tiny_model(work / "model"), "tiny 2-layer Llama (tests/tiny.py)"
        print(f"model: {described}")
        length = f"{args.turns} turns each" if args.workload == "long" else f"{args.seconds:g} s per mode after {args.warmup:g} s warm-up"
        print(
            f"workload: {args.workload}, {args.clients} clients, {length}, "
            f"max batch {args.max_batch_size}, max wait {args.max_wait_ms:g} ms or {args.wait_share:g} of the last model call",
            flush=True,
        )
        results = []
        for mode in args.modes:
            try:
                result = measure(model, mode, args, work)
            except ServerFailed as error:
                print(f"serve_load.py: error: mode {mode}: {error}", file=sys.stderr)
                return 1
            print(result.line(), flush=True)
            if args.workload != "predict":
                print("\n".join(result.turn_lines()), flush=True)
            for sample in result.error_samples:
                print(f"    error: {sample}")
            results.append(result)
    figures: dict = {"model_description": described, "modes": [r.figures() for r in results]}
    if len(results) >= 2:
        first, second = results[:2]
        ratio = first.requests_per_second / second.requests_per_second if second.requests else float("inf")
        print(f"throughput ratio ({first.mode} / {second.mode}): {ratio:.2f}x")
        figures["throughput_ratio"] = ratio
    if args.json:
        write_json(args.json, figures, args)
    return 0 if all(r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
