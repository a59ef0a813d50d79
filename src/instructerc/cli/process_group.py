"""The end of a command run as one of several processes (``torchrun``, ``accelerate launch``)."""

from __future__ import annotations

import logging
import os
import sys

from instructerc.distributed import process_group


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
