"""Micro-batching: requests that arrive together share one model call.

Each request queues a *job* (the utterances it wants predicted) and awaits its own future. One
collector task takes the first queued job, lets others join until ``max_batch_size`` utterances
are gathered or the wait is over, and runs the model on them in a single worker thread, so the
event loop keeps accepting requests while the model runs and the model is never called from two
threads at once. Requests that queue up during a model call form the next batch.

The wait is ``max_wait``, or ``wait_share`` of the last model call's duration when that is
longer. Clients answered by one model call need a moment to send their next request; with a
fixed short wait they miss the next batch, and concurrent clients settle into two alternating
half-size batches. Waiting a small share of a slow model call lets them join, for at most that
share of added latency (with a fast model the fixed ``max_wait`` applies).

A model error fails only the request that caused it: a failed batch of several jobs is run
again job by job, and each job gets its own result or its own exception. An error that is not an
``Exception`` (``SystemExit``, ``KeyboardInterrupt``, or any other ``BaseException`` out of the
model) ends the collector: every waiting request then fails with :class:`WorkerDead`, so does
every later one, and :attr:`Batcher.alive` turns false for the health check.

A job whose client has gone (``abandoned``) before its batch starts is dropped, not computed.
Utterances count as pending from admission (which may be before a request waits for its
conversation's lock) until their request has its answer, so ``max_pending`` bounds them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from instructerc.data.dialogue import Dialogue

Item = tuple[Dialogue, int]
PredictFn = Callable[[Sequence[Item]], Sequence[Any]]

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """More utterances are pending than the service accepts; the client should retry later."""


class WorkerDead(Exception):
    """The collector has stopped on an error it cannot recover from; no request can be answered."""


class Abandoned(Exception):
    """The request's client went away before its batch started: it was dropped, not computed."""


@dataclass(frozen=True)
class BatchingConfig:
    """How jobs are grouped (see :class:`instructerc.service.config.ServiceConfig`)."""

    enabled: bool = True
    max_batch_size: int = 64
    max_wait: float = 0.005
    wait_share: float = 0.05
    max_pending: int = 4096


@dataclass
class _Job:
    items: Sequence[Item]
    future: asyncio.Future
    request_id: str = "-"


class Batcher:
    """Queues jobs and runs them through ``predict`` in batches; see the module docstring.

    ``predict`` takes (dialogue, utterance index) items and returns one result per item, in order.
    Use :meth:`start` and :meth:`stop` from the event loop that calls :meth:`submit`.
    """

    def __init__(self, predict: PredictFn, config: BatchingConfig) -> None:
        self._predict = predict
        self.config = config
        self._queue: asyncio.Queue[_Job] | None = None
        self._carry: _Job | None = None
        self._running: list[_Job] = []
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.pending = 0
        self.model_calls = 0
        self.dropped = 0  # jobs abandoned by their clients before their batch started
        self.failure: BaseException | None = None
        self._last_call_seconds = 0.0

    @property
    def alive(self) -> bool:
        """Whether requests can be answered: started, not stopped and not dead."""
        return self._task is not None and not self._task.done() and self.failure is None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="instructerc-model")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="instructerc-batcher")

    async def stop(self) -> None:
        """Stop collecting; requests still waiting get an error rather than hanging."""
        waiting = list(self._running)  # read before cancelling: the task clears it on its way out
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._carry is not None:
            waiting.append(self._carry)
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for job in waiting:
            _settle(job, error=RuntimeError("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    @contextlib.contextmanager
    def admitted(self, count: int) -> Iterator[None]:
        """Count ``count`` utterances as pending while the block runs; :class:`Overloaded` when
        that would pass ``max_pending`` (a request alone is always admitted)."""
        if self.pending and self.pending + count > self.config.max_pending:
            raise Overloaded(f"{self.pending} utterances are waiting for the model; retry later")
        self.pending += count
        try:
            yield
        finally:
            self.pending -= count

    async def submit(
        self, items: Sequence[Item], *, admitted: bool = False, abandoned: asyncio.Event | None = None, request_id: str = "-"
    ) -> list[Any]:
        """One result per item; raises :class:`Overloaded`, :class:`WorkerDead`, :class:`Abandoned`
        (when ``abandoned`` is set before the batch starts), or what the model raised for these
        items. ``admitted``: the caller already holds :meth:`admitted` for these items."""
        if self._queue is None:
            raise RuntimeError("the batcher is not running")
        if not self.alive:
            raise WorkerDead(f"the batching worker has stopped ({type(self.failure).__name__ if self.failure else 'not running'})")
        if not items:
            return []
        if admitted:
            return await self._submit(items, abandoned, request_id)
        with self.admitted(len(items)):
            return await self._submit(items, abandoned, request_id)

    async def _submit(self, items: Sequence[Item], abandoned: asyncio.Event | None, request_id: str) -> list[Any]:
        assert self._queue is not None
        job = _Job(items, asyncio.get_running_loop().create_future(), request_id)
        self._queue.put_nowait(job)
        if abandoned is None:
            return await job.future
        gone = asyncio.ensure_future(abandoned.wait())
        try:
            await asyncio.wait({job.future, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not job.future.done():
            job.future.cancel()  # the collector skips a cancelled job; one already running finishes unread
            raise Abandoned()
        return job.future.result()

    # -- the collector task -----------------------------------------------------------------------
    async def _collect(self) -> None:
        try:
            while True:
                batch = await self._next_batch()
                self._running = batch
                await self._run(batch)
                self._running = []
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - whatever it was, no request may hang on it
            self.failure = error
            log.critical(
                "the batching worker died on %s: %s; every request now fails until the service restarts", type(error).__name__, error
            )
            self._fail_waiting(WorkerDead(f"the batching worker died ({type(error).__name__})"))

    def _fail_waiting(self, error: BaseException) -> None:
        waiting = list(self._running)
        self._running = []
        if self._carry is not None:
            waiting.append(self._carry)
            self._carry = None
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for job in waiting:
            _settle(job, error=error)

    async def _next_batch(self) -> list[_Job]:
        assert self._queue is not None
        first, self._carry = (self._carry, None) if self._carry is not None else (await self._queue.get(), None)
        batch, size = [first], len(first.items)
        if not self.config.enabled:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self.config.max_wait, self.config.wait_share * self._last_call_seconds)
        while size < self.config.max_batch_size:
            job = await self._queued_until(deadline)
            if job is None:
                break
            if size + len(job.items) > self.config.max_batch_size:
                self._carry = job  # it opens the next batch, so arrival order is kept
                break
            batch.append(job)
            size += len(job.items)
        return batch

    async def _queued_until(self, deadline: float) -> _Job | None:
        assert self._queue is not None
        if not self._queue.empty():
            return self._queue.get_nowait()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), remaining)
        except asyncio.TimeoutError:
            return None

    async def _run(self, batch: list[_Job]) -> None:
        # A request cancelled while it waited (its client gone, or shutdown) is not computed.
        live = [job for job in batch if not job.future.done()]
        self.dropped += len(batch) - len(live)
        if not live:
            return
        try:
            results = await self._call([item for job in live for item in job.items])
        except Exception as error:
            if len(live) == 1:
                _settle(live[0], error=error)
                return
            log.warning(
                "a batch of %d requests (%s) failed (%s: %s); running them one by one",
                len(live),
                " ".join(job.request_id for job in live),
                type(error).__name__,
                error,
            )
            for job in live:
                await self._run_alone(job)
            return
        start = 0
        for job in live:
            _settle(job, results=results[start : start + len(job.items)])
            start += len(job.items)

    async def _run_alone(self, job: _Job) -> None:
        if job.future.done():
            return
        try:
            results = await self._call(job.items)
        except Exception as error:
            _settle(job, error=error)
        else:
            _settle(job, results=results)

    async def _call(self, items: Sequence[Item]) -> list[Any]:
        assert self._executor is not None
        self.model_calls += 1
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            results = list(await loop.run_in_executor(self._executor, self._predict, list(items)))
        finally:
            self._last_call_seconds = loop.time() - start
        if len(results) != len(items):
            raise RuntimeError(f"the model returned {len(results)} predictions for {len(items)} utterances")
        return results


def _settle(job: _Job, results: list[Any] | None = None, error: BaseException | None = None) -> None:
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(results)
