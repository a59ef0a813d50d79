"""The ``--json`` file of every benchmark: its figures, the arguments it ran with and the machine.

``write_json(path, figures, args)`` writes ``{"arguments": ..., "machine": ..., **figures}``
atomically (a temporary file beside ``path``, renamed over it once complete), so an interrupted
run never leaves a half-written file nor destroys an earlier one. Values JSON cannot hold become
plain ones: paths strings, numpy scalars numbers, NaN and infinities ``null``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Iterable, Mapping


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` reports)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the figures depend on besides the code: CPU, cores, threads, library versions."""
    import torch

    from instructerc.modeling.precision import cpu_has_native_bf16

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "thread_env": {name: os.environ[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if name in os.environ},
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def arguments(args: argparse.Namespace, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The command's arguments, without ``json`` itself and the internal ones named in ``skip``."""
    left_out = {"json", *skip}
    return {name: plain(value) for name, value in vars(args).items() if name not in left_out}


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return plain(value.tolist())
    return str(value)


def write_json(path: Path, figures: Mapping[str, Any], args: argparse.Namespace, skip: Iterable[str] = ()) -> None:
    """Write the figures, the arguments (less ``skip``) and the machine to ``path``, atomically."""
    from instructerc.files import atomic_write

    clash = {"arguments", "machine"} & set(figures)
    if clash:
        raise ValueError(f"figures may not use the report's own keys: {sorted(clash)}")
    report = {"arguments": arguments(args, skip), "machine": machine(), **plain(figures)}
    with atomic_write(path) as handle:
        handle.write(json.dumps(report, indent=2, allow_nan=False) + "\n")
    print(f"wrote {path}")
