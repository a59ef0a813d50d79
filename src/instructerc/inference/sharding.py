"""Prediction across processes: ``instructerc predict`` under ``accelerate launch`` or ``torchrun``.

The input is cut into the chunks a single process would predict one after another, and chunk
``k`` goes to process ``k % world``: each chunk is then computed exactly as a single process
computes it (same dialogues in the same batches), so the merged output equals a single-process
run. Each process writes its chunks to a part file beside the output (for a stream such as
``/dev/stdout``, in the working directory: see :func:`part_path`); after a barrier the
first process interleaves the parts back into input order, writes the output atomically and
removes the parts.

A failed or stopped run leaves neither a part file nor a changed output, and no process keeps
waiting: one that waits for a process that is gone, or for a merge that failed, stops with one
line naming the output (with or without a launcher that stops the rest).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Callable, Iterator, TypeVar

from instructerc.errors import InputError
from instructerc.files import _writes_through, atomic_write

Result = TypeVar("Result")
# A process's status at a barrier when the program reading its output (a pipe) stopped reading.
READER_GONE = 2


@dataclass(frozen=True)
class Shard:
    """This process's share of the chunks; ``state`` is accelerate's process state (None: one process)."""

    rank: int = 0
    world: int = 1
    state: Any = None
    run: str = ""  # the same in every process of one run and in no other run (see part_path)
    group: Any = None  # the process group of the barriers (None: the run's own; see with_status_group)

    def owns(self, chunk: int) -> bool:
        return chunk % self.world == self.rank

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def close(self) -> None:
        """Ends this process's part in the process group. Left to interpreter exit, gloo's
        threads were sometimes destroyed still running, and the process aborted (SIGABRT) after
        its work was done."""
        if self.state is None:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def failed_ranks(self, failed: bool) -> list[int] | None:
        """A barrier that also tells which processes failed (this one if ``failed``). Every
        process calls it at the same points, the failing one instead of its next barrier.
        None: a process is gone (it stopped with an error of its own, or was killed)."""
        statuses = self.statuses(int(failed))
        return failed_of(statuses)

    def statuses(self, status: int) -> list[int] | None:
        """:meth:`failed_ranks` with each process's own status (0: fine, else why it failed,
        e.g. :data:`READER_GONE`), by rank; None: a process is gone."""
        if self.state is None:
            return [status if rank == self.rank else 0 for rank in range(self.world)]
        import torch
        import torch.distributed as dist

        flags = torch.zeros(self.world, dtype=torch.int64, device=self._device)
        flags[self.rank] = status
        try:
            dist.all_reduce(flags, op=dist.ReduceOp.SUM, group=self.group)
        except RuntimeError:  # the backend's "connection closed by peer"
            return None
        return [int(flag) for flag in flags.tolist()]

    def total(self, count: int) -> int:
        """``count`` summed over the processes (every process must call it)."""
        if self.state is None:
            return count
        import torch
        import torch.distributed as dist

        value = torch.tensor([count], dtype=torch.int64, device=self._device)
        dist.all_reduce(value, op=dist.ReduceOp.SUM, group=self.group)
        return int(value.item())

    @property
    def _device(self) -> Any:
        # A group of its own is gloo's (see with_status_group), which reduces CPU tensors.
        return self.state.device if self.group is None else "cpu"


def with_status_group(shard: Shard, seconds: float) -> Shard:
    """``shard`` whose barriers go through a process group of their own, where a barrier that
    the other processes do not reach within ``seconds`` reads as a process gone (None).

    For failures that may come while the other processes are inside a collective of the run's own
    group (a training step): a barrier there would be taken as that collective's partner, and
    one here cannot be, but waits for processes that are waiting for this one; the time limit
    ends that wait. Every process must call it at the same point."""
    if shard.state is None:
        return shard
    import datetime

    import torch.distributed as dist

    group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=seconds))
    return replace(shard, group=group)


def failed_of(statuses: list[int] | None) -> list[int] | None:
    """The ranks whose status is not 0 (None, a process gone, stays None)."""
    return None if statuses is None else [rank for rank, status in enumerate(statuses) if status]


def current_shard() -> tuple[Shard, Any]:
    """This process's shard and device: under a multi-process launcher, accelerate's rank,
    world size and device (a GPU per process, or the CPU over gloo); else one process and no
    device chosen (the predictor's default)."""
    from instructerc.distributed import launched_world_size

    if launched_world_size() == 1:
        return Shard(), None
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available(), **_joined_store())
    return Shard(state.process_index, state.num_processes, state, _run_name(state.process_index)), state.device


# How long the processes of a run started without torchrun's agent (by hand, mpirun, srun) wait
# for each other to join the process group: torchrun's own rendezvous waits as long for nodes.
# Left to torch, a process whose peer died or hung before joining waited half an hour.
JOIN_SECONDS = 600.0


def _joined_store() -> dict[str, Any]:
    """The store the run's process group is formed over (``init_process_group``'s ``store``,
    ``rank`` and ``world_size``), once every process has joined it within :data:`JOIN_SECONDS`;
    {}: torchrun's agent holds the store and has seen its processes start (torch joins it).

    Only the join is bounded: the store then gets torch's default time limit for a process group
    (half an hour), and the group its own default, so that a long wait later (a checkpoint
    gathered, dev scored on one process) is not taken for a process gone."""
    import datetime
    import os

    import torch.distributed as dist

    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return {}
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(
        host_name=os.environ["MASTER_ADDR"],
        port=int(os.environ.get("MASTER_PORT") or 29500),  # accelerate's and torchrun's default
        world_size=world,
        is_master=rank == 0,
        timeout=datetime.timedelta(seconds=JOIN_SECONDS),
        wait_for_workers=True,
        multi_tenant=True,
    )
    store.set_timeout(dist.default_pg_timeout)
    return {"store": store, "rank": rank, "world_size": world}


def _run_name(rank: int) -> str:
    """A name the first process draws and sends to the others (every process must call it)."""
    import uuid

    import torch.distributed as dist

    names = [uuid.uuid4().hex[:12] if rank == 0 else None]
    dist.broadcast_object_list(names, src=0)
    return str(names[0])


def part_path(output: Path, shard: Shard) -> Path:
    """This process's part file: beside the output, or for an output that is a stream
    (``/dev/stdout``, ``/dev/fd/1``, a pipe) in the working directory, under the run's name.
    Beside a stream would be ``/dev`` (no place for files; not writable but by root) or
    ``/dev/fd`` (which cannot hold any); the run's name keeps apart two runs that each write to
    their own stdout from one folder."""
    suffix = f".part-{shard.rank:05d}-of-{shard.world:05d}"
    if _is_stream(output):
        return Path.cwd() / f".instructerc-{output.name}-{shard.run or 'run'}{suffix}"
    return output.with_name(f".{output.name}{suffix}")


def _is_stream(output: Path) -> bool:
    """Whether ``output`` is written in place, not replaced (a stream or a device: see
    :func:`instructerc.files.atomic_write`). An output that cannot be written at all is not: its
    error comes when it is written."""
    try:
        return _writes_through(output)
    except (InputError, OSError):
        return False


@contextlib.contextmanager
def shard_output(output: Path, shard: Shard) -> Iterator[IO[str]]:
    """Where this process writes its chunks' records: the output itself for one process (written
    atomically), else its part file.

    A process that fails here exits at once rather than tell the others (that would wait until
    they finished their shares): a launcher then stops them, and without one they learn it in
    :func:`merge_parts`, when the process they wait for is gone."""
    if shard.world == 1:
        with atomic_write(output) as handle:
            yield handle
        return
    part = part_path(output, shard)
    try:
        with atomic_write(part) as handle:
            yield handle
    except OSError as error:
        if not _concerns_part(error, part):
            raise
        # The part, not the output, is the file that could not be written.
        raise InputError(f"cannot write this process's part of the output: {error.strerror or error}", path=part) from None


def _concerns_part(error: OSError, part: Path) -> bool:
    """Whether ``error`` is about writing ``part`` (or its temporary file), not e.g. reading the input."""
    return error.filename is None or Path(error.filename).name.lstrip(".").startswith(part.name.lstrip("."))


def merge_parts(output: Path, shard: Shard, chunk_lines: list[int]) -> None:
    """After every process has written its part: the first process writes the output, the
    parts' lines in input order (``chunk_lines[k]``: lines of chunk ``k``), and removes the parts.
    If any process failed, every process stops with an error and the output is left as it was."""
    if shard.world == 1:
        return
    try:
        _stop_if_failed(shard.failed_ranks(False), output, shard.world)
        merge_error = None
        if shard.main:
            try:
                _merge(output, shard, chunk_lines)
            except Exception as error:  # raised below, once the others know
                merge_error = error
        statuses = shard.statuses(_merge_status(merge_error))
        if merge_error is not None:
            raise merge_error
        if statuses is not None and READER_GONE in statuses:
            # The first process's stdout reader stopped reading (``| head``): it ends silently
            # with SIGPIPE's status, as one process does, and so do the others.
            raise SystemExit(128 + 13)
        _stop_if_failed(failed_of(statuses), output, shard.world)
    finally:
        # Also on SIGTERM or Ctrl-C while waiting: a stopped run leaves no part behind.
        part_path(output, shard).unlink(missing_ok=True)


# What a failed run did not do, said by the processes a failure elsewhere stopped.
OUTPUT_NOT_WRITTEN = "the output was not written"


def done_alike(shard: Shard, work: Callable[[], Result], output: Path, lost: str = OUTPUT_NOT_WRITTEN) -> Result:
    """``work()`` (checking the input, loading the model) in every process, where each process
    checks the same files and fails alike: the first process that fails says why, the others
    that failed exit with the same status silently, and those that did not stop naming the
    output (and that ``lost`` is lost). Every process still runs it (across machines the files
    may differ), but the user reads one error, not one per process."""
    result = said_once(shard, work)
    _stop_if_failed(shard.failed_ranks(False), output, shard.world, lost)
    return result


def said_once(shard: Shard, work: Callable[[], Result]) -> Result:
    """``work()``, where an input error that every process meets is said by the first of them
    alone: the others exit with its status silently. They wait for it in a barrier rather than
    exit first: a launcher that saw one of them end would stop the process about to say why. A
    process that fails alone (the barrier finds a process gone) says its own error."""
    try:
        return work()
    except InputError:
        failed = shard.failed_ranks(True)
        if failed and failed[0] != shard.rank:
            # Returns once process failed[0] has ended its group, which it does before it says
            # why: this process stays until that process has left (and so said it).
            shard.failed_ranks(False)
            wait_to_be_stopped()
            raise SystemExit(2) from None  # its status
        raise


# How long a process that leaves the saying of an error to another waits for the launcher to stop
# it (once that process has said it and exited). Launchers notice within their monitor interval
# (torchrun: 0.1 s; older ones 5 s); the bound only matters when the other process did not fail.
STOPPED_BY_LAUNCHER_SECONDS = 10.0


def wait_to_be_stopped(seconds: float = STOPPED_BY_LAUNCHER_SECONDS) -> None:
    """Returns when the launcher stops this process (SIGTERM, or Ctrl-C), or after ``seconds``.

    A process that exits silently before the one saying the error has said it would be seen by
    the launcher first, which then stops the other with SIGTERM, often before its line is
    printed. Without a launcher's agent (processes started by hand, one process) nothing stops
    the other process early, so this returns at once."""
    import os
    import signal
    import threading
    import time

    if threading.current_thread() is not threading.main_thread() or not os.environ.get("TORCHELASTIC_RUN_ID"):
        return  # TORCHELASTIC_RUN_ID: set by torchrun's agent, which accelerate launch runs too
    # Handled here, not by the CLI's handlers, which would say "terminated" or "interrupted".
    # Not blocked and waited for (sigtimedwait): a signal the main thread blocks goes to another
    # thread of the process (torch's), where nothing takes it.
    previous: dict[int, Any] = {}
    try:
        for number in (signal.SIGTERM, signal.SIGINT):
            previous[number] = signal.signal(number, _stopped)
        time.sleep(seconds)
        _put_back(previous)  # here too: a signal coming as the time is up is still taken
    except _Stopped:
        pass
    finally:
        _put_back(previous)


def _put_back(handlers: dict[int, Any]) -> None:
    import signal

    for number, handler in handlers.items():
        if handler is not None:  # None: not installed from Python, nothing to put back
            signal.signal(number, handler)


class _Stopped(Exception):
    """The launcher stopped a process waiting in :func:`wait_to_be_stopped`."""


def _stopped(signum: int, frame: Any) -> None:
    raise _Stopped


def left_to_the_first_process() -> bool:
    """Whether an error met before the run's process group exists (a mistyped option, a missing
    extra) is left to the first process (RANK 0) to say: this process was started by a
    multi-process launcher with another RANK, and every process meets that error alike. A
    broken launcher environment is each process's own to say."""
    import os

    from instructerc.distributed import launched_world_size, process_group

    if process_group() is not None:
        return False  # said_once's business
    try:
        if launched_world_size() == 1:
            return False
    except InputError:
        return False
    return int(os.environ["RANK"]) != 0


def said_by_the_first_process(status: int) -> int | None:
    """``status``, once the launcher stops this process, when the error about to be said is left to
    the first process (see :func:`left_to_the_first_process`); None: this process says it."""
    if not left_to_the_first_process():
        return None
    wait_to_be_stopped()
    return status


def _merge_status(error: Exception | None) -> int:
    if error is None:
        return 0
    return READER_GONE if isinstance(error, BrokenPipeError) else 1


def _stop_if_failed(failed: list[int] | None, output: Path, world: int, lost: str = OUTPUT_NOT_WRITTEN) -> None:
    if failed is None:
        raise InputError(f"stopped: another process ended before finishing (its error is above); {lost}", path=output)
    if failed:
        which = ", ".join(str(rank) for rank in failed)
        # The failed process says why after it has ended its group: leaving first, this process
        # would have the launcher stop it before it does, and "its error is above" name nothing.
        wait_to_be_stopped()
        raise InputError(f"stopped: process {which} of {world} failed (its error is above); {lost}", path=output)


def _merge(output: Path, shard: Shard, chunk_lines: list[int]) -> None:
    """The parts' lines interleaved by chunk into ``output``; the parts are removed whatever happens."""
    parts = [part_path(output, Shard(rank, shard.world, run=shard.run)) for rank in range(shard.world)]
    try:
        with contextlib.ExitStack() as stack:
            handles = [stack.enter_context(part.open(encoding="utf-8")) for part in parts]
            with atomic_write(output) as merged:
                for chunk, lines in enumerate(chunk_lines):
                    source = handles[chunk % shard.world]
                    for _ in range(lines):
                        line = source.readline()
                        if not line:
                            raise RuntimeError(f"{parts[chunk % shard.world]} ends before chunk {chunk}: a process did not finish")
                        merged.write(line)
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
