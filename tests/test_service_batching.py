"""The micro-batcher with a fake model: grouping, order, failure isolation, back-pressure."""

from __future__ import annotations

import asyncio
import threading
from typing import Sequence

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.service.batching import Batcher, BatchingConfig, Item, Overloaded


def dialogue(name: str, length: int = 1) -> Dialogue:
    return Dialogue(id=name, dataset="test", split="test", utterances=tuple(Utterance("Ann", f"{name} {k}") for k in range(length)))


class FakeModel:
    """Answers each item with its utterance text; raises on any text containing 'boom'."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()
        self.delay = delay
        self._release = threading.Event()

    def __call__(self, items: Sequence[Item]) -> list[str]:
        texts = [d.utterances[i].text for d, i in items]
        self.calls.append(texts)
        self.threads.add(threading.current_thread().name)
        if self.delay:
            threading.Event().wait(self.delay)
        if any("boom" in t for t in texts):
            raise RuntimeError("boom")
        return texts


def run(coroutine):
    return asyncio.run(coroutine)


async def with_batcher(model: FakeModel, config: BatchingConfig, work):
    batcher = Batcher(model, config)
    await batcher.start()
    try:
        return await work(batcher)
    finally:
        await batcher.stop()


def jobs(names: Sequence[str], length: int = 1) -> list[list[Item]]:
    return [[(dialogue(n, length), k) for k in range(length)] for n in names]


def test_jobs_queued_together_share_one_model_call_and_get_their_own_results() -> None:
    model = FakeModel()

    async def work(batcher):
        return await asyncio.gather(*(batcher.submit(j) for j in jobs("abcd", length=2)))

    results = run(with_batcher(model, BatchingConfig(max_batch_size=16, max_wait=0.05), work))

    assert results == [[f"{n} 0", f"{n} 1"] for n in "abcd"]
    assert len(model.calls) == 1
    assert model.threads == {"instructerc-model_0"}  # never the event loop's thread


def test_a_batch_holds_at_most_max_batch_size_utterances_and_keeps_arrival_order() -> None:
    model = FakeModel()

    async def work(batcher):
        return await asyncio.gather(*(batcher.submit(j) for j in jobs("abcdefg", length=3)))

    results = run(with_batcher(model, BatchingConfig(max_batch_size=7, max_wait=0.05), work))

    assert [r[0] for r in results] == [f"{n} 0" for n in "abcdefg"]
    assert all(len(call) <= 7 for call in model.calls)
    assert [t for call in model.calls for t in call] == [f"{n} {k}" for n in "abcdefg" for k in range(3)]


def test_a_job_larger_than_a_batch_runs_alone_unsplit() -> None:
    model = FakeModel()

    async def work(batcher):
        return await batcher.submit(jobs("x", length=10)[0])

    assert len(run(with_batcher(model, BatchingConfig(max_batch_size=4), work))) == 10
    assert [len(c) for c in model.calls] == [10]


def test_with_batching_off_every_job_is_its_own_model_call() -> None:
    model = FakeModel()

    async def work(batcher):
        return await asyncio.gather(*(batcher.submit(j) for j in jobs("abcdefgh")))

    run(with_batcher(model, BatchingConfig(enabled=False, max_wait=0.05), work))

    assert [len(c) for c in model.calls] == [1] * 8


def test_a_failing_job_fails_alone_and_its_batch_mates_get_their_results() -> None:
    model = FakeModel()

    async def work(batcher):
        return await asyncio.gather(*(batcher.submit(j) for j in jobs(["a", "boom", "c"])), return_exceptions=True)

    a, boom, c = run(with_batcher(model, BatchingConfig(max_wait=0.05), work))

    assert (a, c) == (["a 0"], ["c 0"])
    assert isinstance(boom, RuntimeError)
    assert len(model.calls) == 4  # the batch, then each job alone


def test_the_batcher_keeps_serving_after_a_failure() -> None:
    model = FakeModel()

    async def work(batcher):
        with pytest.raises(RuntimeError):
            await batcher.submit(jobs(["boom"])[0])
        return await batcher.submit(jobs(["after"])[0])

    assert run(with_batcher(model, BatchingConfig(), work)) == ["after 0"]


def test_too_many_pending_utterances_are_refused_but_a_lone_request_is_always_taken() -> None:
    model = FakeModel(delay=0.2)

    async def work(batcher):
        alone = asyncio.ensure_future(batcher.submit(jobs("a", length=5)[0]))  # over max_pending, but alone
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await batcher.submit(jobs("b")[0])
        return await alone

    assert len(run(with_batcher(model, BatchingConfig(max_pending=4), work))) == 5


def test_a_cancelled_request_is_not_computed() -> None:
    model = FakeModel(delay=0.1)

    async def work(batcher):
        first = asyncio.ensure_future(batcher.submit(jobs("a")[0]))
        await asyncio.sleep(0.02)  # the model is busy with a
        gone = asyncio.ensure_future(batcher.submit(jobs(["gone"])[0]))
        await asyncio.sleep(0)
        gone.cancel()
        kept = await batcher.submit(jobs(["kept"])[0])
        return await first, kept

    assert run(with_batcher(model, BatchingConfig(max_wait=0.0), work)) == (["a 0"], ["kept 0"])
    assert ["gone 0"] not in model.calls and all("gone 0" not in c for c in model.calls)


def test_stopping_fails_waiting_requests_instead_of_leaving_them_hanging() -> None:
    # The call outlasts the 0.02 s before stop() by far: on a loaded machine (a CI runner, a
    # training run beside the tests) a 0.1 s call had finished before stop() ran.
    model = FakeModel(delay=1.0)

    async def work():
        batcher = Batcher(model, BatchingConfig(enabled=False))
        await batcher.start()
        waiting = [asyncio.ensure_future(batcher.submit(j)) for j in jobs("abc")]
        await asyncio.sleep(0.02)
        await batcher.stop()
        return await asyncio.gather(*waiting, return_exceptions=True)

    results = run(work())

    assert all(isinstance(r, RuntimeError) for r in results)


def test_after_a_slow_model_call_a_batch_waits_a_share_of_it_so_answered_clients_can_rejoin() -> None:
    async def work(batcher):
        await batcher.submit(jobs("a")[0])  # one slow call (0.3 s) sets the wait share
        second = asyncio.ensure_future(batcher.submit(jobs("b")[0]))
        await asyncio.sleep(0.06)  # past the fixed max_wait, well within half of the last call
        third = asyncio.ensure_future(batcher.submit(jobs("c")[0]))
        return await second, await third

    shared, fixed = FakeModel(delay=0.3), FakeModel(delay=0.3)
    run(with_batcher(shared, BatchingConfig(max_wait=0.005, wait_share=0.5), work))
    run(with_batcher(fixed, BatchingConfig(max_wait=0.005, wait_share=0.0), work))

    assert shared.calls == [["a 0"], ["b 0", "c 0"]]
    assert fixed.calls == [["a 0"], ["b 0"], ["c 0"]]
