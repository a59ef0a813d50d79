"""Where this process stands in a distributed run (``torchrun``, ``accelerate launch``).

torch is looked up, not imported: a command that has not loaded it has no process group, and
asking must not cost the import.
"""

from __future__ import annotations

import sys
from typing import Any

from instructerc.errors import InputError


def process_group() -> Any | None:
    """``torch.distributed`` when this process is in an initialised process group, else None."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def later_process_of_a_run() -> bool:
    """Whether this is a process other than the first of a distributed run: what every process
    would say alike (a warning, a hint) is said by the first alone."""
    dist = process_group()
    return dist is not None and dist.get_rank() != 0


def launched_world_size() -> int:
    """How many processes the launcher started this run with (1: no launcher), once its
    variables are checked: a shell that exported ``WORLD_SIZE`` alone, or a job script that
    spelled one wrong, would otherwise fail deep inside accelerate with a traceback."""
    import os

    world = _launcher_int("WORLD_SIZE", os.environ.get("WORLD_SIZE") or "1", minimum=1)
    if world == 1:
        return 1
    for name in ("RANK", "MASTER_ADDR"):
        if not os.environ.get(name):
            start = "start the processes with torchrun or accelerate launch"
            raise InputError(f"environment variable {name} is not set while WORLD_SIZE is {world}: {start}")
    rank = _launcher_int("RANK", os.environ["RANK"], minimum=0)
    if rank >= world:
        raise InputError(f"environment variable RANK ({rank}) must be below WORLD_SIZE ({world})")
    return world


def _launcher_int(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise InputError(f"environment variable {name} must be a whole number of at least {minimum}, got '{value}'")
    return number
