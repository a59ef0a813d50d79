"""Where this process stands in a distributed run (``torchrun``, ``accelerate launch``).

torch is looked up, not imported: a command that has not loaded it has no process group, and
asking must not cost the import.
"""

from __future__ import annotations

import sys
from typing import Any


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
