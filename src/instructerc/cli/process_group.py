"""The start and end of a command run as one of several processes (``torchrun``, ``accelerate launch``)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from instructerc.distributed import interruptible_rendezvous, launched_world_size, process_group
from instructerc.errors import InputError


def joined_shard() -> Any:
    """This process's :class:`~instructerc.inference.sharding.Shard` of the run, its process
    group formed (one process: no group): :func:`joined_shard_and_device` without the device."""
    return joined_shard_and_device()[0]


def joined_shard_and_device() -> tuple[Any, Any]:
    """This process's shard of the run, its process group formed (one process: no group), and
    its device (None: one process, the default device). The launcher's variables are checked
    first; Ctrl-C and SIGTERM end a process waiting for peers that never come; a group that
    cannot be formed (the port taken, the first process not answering) is one line naming where
    it was to meet, not torch's traceback."""
    from instructerc.inference.sharding import current_shard

    try:
        with interruptible_rendezvous():
            return current_shard()
    except RuntimeError as error:
        dist = sys.modules.get("torch.distributed")
        if dist is None or not isinstance(error, getattr(dist, "DistError", ())):
            raise
        where = f"MASTER_ADDR {os.environ.get('MASTER_ADDR')}, MASTER_PORT {os.environ.get('MASTER_PORT') or 29500}"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"cannot form the run's process group ({where}): {reason}") from None


def refuse_under_launcher(command: str, instead: str) -> None:
    """An error, said once (by the first process; the others exit 2 silently), when ``command``
    runs under a multi-process launcher although it is a one-process job: each process would
    otherwise do all of it, and write (or bind) the same things. ``instead``: what to do."""
    world = launched_world_size()
    if world == 1:
        return
    from instructerc.inference.sharding import said_once

    shard = joined_shard()

    def refuse() -> None:
        raise InputError(
            f"{command} runs as one process, but a launcher (torchrun, accelerate launch) started {world} "
            f"(environment variable WORLD_SIZE is {world}): {instead}"
        )

    try:
        said_once(shard, refuse)
    finally:
        shard.close()


def end_process_group() -> bool:
    """Ends the run's process group, if this process is in one; True if it was."""
    dist = process_group()
    if dist is None:
        return False
    dist.destroy_process_group()
    return True


def exit_group_member(status: int) -> None:
    """Exits a process of a multi-process run once its work is done and its outputs are closed,
    without the interpreter's teardown. There, objects of the ended process group still held by
    the distributed modules are destroyed after Python has begun to shut down, and a finished
    process sometimes aborted (SIGABRT, 'terminate called without an active exception') even
    after ``destroy_process_group``: the launcher then reports the run failed and stops the
    processes still finishing."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone, or a closed stream: nothing left to save
            pass
    logging.shutdown()
    os._exit(status)
