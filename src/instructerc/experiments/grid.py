"""An experiment: a base recipe, axes of named overrides, and seeds, expanded into runs.

    name: data-scaling-cpu
    base: ../recipes/smollm2-135m-meld-cpu.yaml     # relative to this file
    output_dir: ../runs/data-scaling                 # relative to this file
    seeds: [1, 2]
    axes:
      dataset:
        meld: {data.dataset: meld}
        iemocap: {data.dataset: iemocap}
      fraction:
        "1": {data.fraction: 1.0}
        "1/2": {data.fraction: 0.5}
    evaluate_split: test
    evaluate_max_dialogues: 40    # optional: a fixed subset of the split per dataset (slow templates)
    plot: {x: fraction, lines: dataset}

Every combination of one value per axis, times every seed, is one run.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructerc.config import from_mapping, read_yaml
from instructerc.errors import InputError


@dataclass(frozen=True)
class PlotConfig:
    """A line plot of a result: ``x`` and ``lines`` are axis names; y is the test weighted F1."""

    x: str
    lines: str | None = None
    log2_x: bool = True


@dataclass(frozen=True)
class ExperimentConfig:
    """See the module docstring."""

    name: str
    base: str
    output_dir: str
    axes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [42])
    evaluate_split: str = "test"
    evaluate_max_dialogues: int | None = None
    plot: PlotConfig | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise InputError("at least one seed is needed", field="seeds")
        if self.evaluate_max_dialogues is not None and self.evaluate_max_dialogues < 1:
            raise InputError("must be at least 1", field="evaluate_max_dialogues")
        for axis, values in self.axes.items():
            if not values:
                raise InputError(f"axis '{axis}' has no values", field=f"axes.{axis}")
        if self.plot is not None:
            for name in (self.plot.x, self.plot.lines):
                if name is not None and name not in self.axes:
                    raise InputError(f"plot axis '{name}' is not an axis of the grid", field="plot")


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid."""

    name: str
    values: dict[str, str]  # axis -> value name
    seed: int
    overrides: dict[str, Any]


def load_experiment(path: str | Path) -> tuple[ExperimentConfig, Path]:
    """The experiment and the folder its relative paths are relative to."""
    path = Path(path)
    try:
        return from_mapping(ExperimentConfig, read_yaml(path)), path.resolve().parent
    except InputError as error:
        raise InputError(error.message, path=path, field=error.field) from None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def expand(config: ExperimentConfig) -> list[RunSpec]:
    """Every combination of axis values, times every seed, in a stable order."""
    axes = list(config.axes.items())
    runs = []
    for combination in itertools.product(*[list(values.items()) for _, values in axes]):
        for seed in config.seeds:
            values = {axis: value for (axis, _), (value, _) in zip(axes, combination)}
            overrides = dict(config.overrides)
            for _, changes in combination:
                overrides.update(changes)
            overrides["seed"] = seed
            name = "__".join([f"{_slug(a)}={_slug(v)}" for a, v in values.items()] + [f"seed={seed}"])
            runs.append(RunSpec(name=name, values=values, seed=seed, overrides=overrides))
    return runs
