"""Training checkpoints: trainable weights, optimizer, scheduler, RNG states and position.

Loaded with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from instructerc.files import atomic_write


@dataclass
class TrainState:
    """Where a run is: enough to resume it exactly."""

    stage: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_score: float | None = None
    best_step: int | None = None
    # Seconds spent training and scoring dev, summed over interruptions (for the model card).
    train_seconds: float = 0.0
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, state: TrainState, trainable: dict[str, Any], optimizer: Any, scheduler: Any) -> None:
    import torch

    staging = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    torch.save(trainable, staging / "trainable.pt")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}, staging / "optim.pt")
    with atomic_write(staging / "state.json") as handle:
        json.dump(asdict(state), handle, indent=2)
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)


def load_checkpoint(directory: Path) -> tuple[TrainState, dict[str, Any], dict[str, Any]]:
    import torch

    state = TrainState(**json.loads((directory / "state.json").read_text(encoding="utf-8")))
    trainable = torch.load(directory / "trainable.pt", weights_only=True)
    optim = torch.load(directory / "optim.pt", weights_only=True)
    return state, trainable, optim


def latest_checkpoint(checkpoints: Path) -> Path | None:
    found = sorted(p for p in checkpoints.glob("step-*") if (p / "state.json").is_file())
    return found[-1] if found else None


def prune_checkpoints(checkpoints: Path, keep: int = 1) -> None:
    found = sorted(p for p in checkpoints.glob("step-*") if (p / "state.json").is_file())
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
