"""Where this process stands in a distributed run (``torchrun``, ``accelerate launch``; ``mpirun`` and
``srun`` given ``MASTER_ADDR`` and ``MASTER_PORT``, see :func:`adopt_other_launcher`).

torch is looked up, not imported: a command that has not loaded it has no process group, and
asking must not cost the import.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator

from instructerc.errors import InputError

# How long a process that failed in a training run waits for the others to say whether they
# failed alike (then the first alone says why). Those that did not fail are in a collective
# waiting for this one, and never answer: it then says its own error. Processes that fail alike
# fail at the same check within moments of each other.
SAME_FAILURE_SECONDS = 60.0


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
    variables are checked (mpirun's and srun's taken as torchrun's first): a shell that exported
    ``WORLD_SIZE`` alone, or a job script that spelled one wrong, would otherwise fail deep inside
    accelerate with a traceback."""
    import os

    adopt_other_launcher()
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
    if os.environ.get("MASTER_PORT"):  # unset, accelerate picks 29500
        _launcher_int("MASTER_PORT", os.environ["MASTER_PORT"], minimum=1, maximum=65535)
    _check_master_addr(os.environ["MASTER_ADDR"])
    return world


# Launchers that start every process of a run themselves, and the variables each process gets
# from them: world size, rank, local rank, local world size (None: not given).
OTHER_LAUNCHERS: dict[str, tuple[str, str, str, str | None]] = {
    "mpirun (Open MPI)": ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    "mpirun (MPICH, Intel MPI)": ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    "mpirun (MVAPICH)": ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE"),
    # The step's task count, set by srun alone: SLURM_NTASKS is also set in a batch script,
    # which runs once however many tasks the job was given.
    "srun (Slurm)": ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID", None),
}


def adopt_other_launcher() -> None:
    """A process that mpirun or srun started as one of several, without torchrun's variables,
    gets them (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``) from that
    launcher's: accelerate and torch read torchrun's alone, and each process would otherwise run
    the whole job by itself and write the same outputs. Where the processes meet
    (``MASTER_ADDR``, ``MASTER_PORT``) only the user knows, so it must be given; torchrun's own
    variables, when set, win."""
    import os

    if os.environ.get("WORLD_SIZE") or os.environ.get("RANK"):
        return
    for launcher, names in OTHER_LAUNCHERS.items():
        if os.environ.get(names[0]):
            break
    else:
        return
    world = _launcher_int(names[0], os.environ[names[0]], minimum=1)
    if world == 1:
        return
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise InputError(
            f"{launcher} started this process as one of {world} ({names[0]} is {world}), but "
            f"{_variables_not_set(missing)}: set MASTER_ADDR to the first process's host and MASTER_PORT to a "
            "free port there, for every process, or start the processes with torchrun or accelerate launch"
        )
    given = {"WORLD_SIZE": str(world), "RANK": os.environ.get(names[1], "")}
    if not given["RANK"]:
        raise InputError(f"environment variable {names[1]} is not set while {names[0]} is {world}: {launcher} sets both")
    given["RANK"] = str(_launcher_int(names[1], given["RANK"], minimum=0))
    local = os.environ.get(names[2], "").strip()
    given["LOCAL_RANK"] = str(_launcher_int(names[2], local, minimum=0)) if local else given["RANK"]
    local_world = os.environ.get(names[3], "").strip() if names[3] else _slurm_tasks_on_this_node()
    if local_world:
        given["LOCAL_WORLD_SIZE"] = local_world
    os.environ.update(given)


def _variables_not_set(names: list[str]) -> str:
    if len(names) == 1:
        return f"environment variable {names[0]} is not set"
    return f"environment variables {' and '.join(names)} are not set"


def _slurm_tasks_on_this_node() -> str:
    """srun's tasks on this node, where every node runs as many (``4`` or ``4(x2)``); else ''."""
    import os
    import re

    match = re.fullmatch(r"(\d+)(\(x\d+\))?", os.environ.get("SLURM_STEP_TASKS_PER_NODE", "").strip())
    return match.group(1) if match else ""


def _check_master_addr(host: str) -> None:
    """A host name no machine can be found by: torch would retry it for half an hour."""
    import socket

    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InputError(f"environment variable MASTER_ADDR names no host this machine can find ('{host}': {reason})") from None


def _launcher_int(name: str, value: str, minimum: int, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        bounds = f"of at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise InputError(f"environment variable {name} must be a whole number {bounds}, got '{value}'")
    return number


def check_lone_local_rank() -> None:
    """A ``LOCAL_RANK`` left in the environment of a single process (no ``WORLD_SIZE``, no
    ``MASTER_ADDR``: a shell that exported it, a job script run by hand): accelerate reads it
    as a distributed run and fails with a traceback about ``MASTER_ADDR``. For commands that
    form their process group through accelerate; call it after :func:`launched_world_size`
    found one process."""
    import os

    local = os.environ.get("LOCAL_RANK", "").strip()
    if local and local != "-1" and not os.environ.get("MASTER_ADDR"):
        raise InputError(
            f"environment variable LOCAL_RANK is set ({local}) but no launcher started this process (WORLD_SIZE and "
            "MASTER_ADDR are not set): unset LOCAL_RANK to run as one process, or start the processes with torchrun "
            "or accelerate launch"
        )


@contextlib.contextmanager
def interruptible_rendezvous() -> Iterator[None]:
    """Ctrl-C and SIGTERM end the process at once while its process group is formed. The
    processes wait for each other there in torch's C++ code (for up to half an hour, when one
    never comes), where the interpreter's own handlers (``KeyboardInterrupt``, the CLI's
    SIGTERM) never get to run: the process could only be killed with SIGKILL. Nothing is
    written yet at that point, so nothing is left to clean up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, signal.SIG_DFL) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


# What the backends say when the other end of a connection went away (gloo; NCCL).
_PEER_GONE = ("closed by peer", "reset by peer", "Broken pipe", "remote process exited")


def peer_gone(error: BaseException) -> bool:
    """Whether ``error`` is the process group's report that another process of the run is gone
    (it failed or was killed), as raised in this process's next collective."""
    if not isinstance(error, RuntimeError) or process_group() is None:
        return False
    text = str(error)
    return any(phrase in text for phrase in _PEER_GONE)
