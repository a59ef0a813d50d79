"""Running independent forward passes in several CPU worker threads.

A small model's matrix products scale poorly across cores within one call: on this project's
2-core CPU, a 1,024 x 576 x 1,536 product ran at 89 GFLOPS on two threads and at 108 GFLOPS
as two one-thread products side by side. So on a CPU the predictor runs its batches in
``workers`` threads of ``threads // workers`` intra-op threads each (PyTorch releases the GIL
inside its operators), as CPU inference engines run several streams.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``count`` for the block (it is process-wide), then restored."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def with_callers_autocast(function: Callable[[Item], Result]) -> Callable[[Item], Result]:
    """``function`` run under the autocast the calling thread is in (autocast is per thread, so
    worker threads would otherwise compute in the weights' own type)."""
    import torch

    active = [(device, torch.get_autocast_dtype(device)) for device in ("cpu", "cuda") if torch.is_autocast_enabled(device)]
    if not active:
        return function

    def wrapped(item: Item) -> Result:
        with ExitStack() as stack:
            for device, dtype in active:
                stack.enter_context(torch.autocast(device, dtype=dtype))
            return function(item)

    return wrapped


def completed(function: Callable[[Item], Result], items: Iterable[Item], workers: int) -> Iterator[Result]:
    """``function(item)`` for every item, in completion order, on ``workers`` threads sharing
    this process's intra-op threads (and the caller's autocast); one worker runs them here, in
    order, with nothing changed."""
    if workers <= 1:
        yield from map(function, items)
        return
    import torch

    function = with_callers_autocast(function)
    with intra_op_threads(max(1, torch.get_num_threads() // workers)), ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(function, item) for item in items]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def default_workers() -> int:
    """Two workers where PyTorch has two or more threads (measured on 2 cores; see the module docstring)."""
    import torch

    return 2 if torch.get_num_threads() >= 2 else 1
