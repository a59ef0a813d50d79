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

Every combination of one value per axis, times every seed, is one run, named after its axis
values (characters other than letters, digits and ``.+-`` become ``-``): seeds must differ, and
two axes, or two values of one axis, may not give one name. ``seed`` and ``output_dir`` are the
grid's own (``seeds``, ``output_dir``) and may not be overridden. The grid is checked
whole when it is loaded (every run's recipe resolves, the report can be drawn), so a bad entry
fails before any training, naming the grid file and the entry. Each run lives in a directory
named after its resolved recipe (:func:`run_key`), so grids that share a run train it once.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructerc.config import from_mapping, read_yaml
from instructerc.data.dialogue import SPLITS
from instructerc.errors import InputError

METRICS = ("weighted_f1", "macro_f1", "accuracy")
# The report's own columns besides the scores: an axis of one of these names (or named like a
# score column) would overwrite it in the CSV, or be overwritten.
RESERVED_COLUMNS = ("run", "seed", "scored_on")


def scores_name(split: str) -> str:
    """The name of a grid's evaluation scores on ``split`` in result records and report columns
    (``test`` -> ``test_weighted_f1``). Plain ``dev`` already names the dev scores that selected the
    checkpoint, so the evaluation of dev is ``dev_eval``."""
    return "dev_eval" if split == "dev" else split


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
        # The report is written as <name>.csv, .md and .png under the results folder: a name
        # with a folder in it would put them elsewhere.
        if self.name in ("", ".", "..") or Path(self.name).name != self.name or "\\" in self.name or "\0" in self.name:
            raise InputError(f"must be a plain file name (no folder), got {self.name!r}", field="name")
        # Relative to the grid's folder, an empty path is that folder itself: runs would land
        # among the grid files, and the base recipe would be "not a file" without saying why.
        for key, value in (("name", self.name), ("base", self.base), ("output_dir", self.output_dir)):
            if not value.strip():
                raise InputError("must not be empty", field=key)
        if not self.seeds:
            raise InputError("at least one seed is needed", field="seeds")
        repeated = sorted({seed for seed in self.seeds if self.seeds.count(seed) > 1})
        if repeated:
            # A repeated seed is the same run again: it would count twice in the mean ± std.
            raise InputError(f"seeds {repeated} appear more than once", field="seeds")
        if self.evaluate_split not in SPLITS:
            raise InputError(f"unknown split {self.evaluate_split!r} (expected one of: {', '.join(SPLITS)})", field="evaluate_split")
        if self.evaluate_max_dialogues is not None and self.evaluate_max_dialogues < 1:
            raise InputError("must be at least 1", field="evaluate_max_dialogues")
        _refuse_grid_keys(self.overrides, "overrides")
        for axis, values in self.axes.items():
            for value, changes in values.items():
                _refuse_grid_keys(changes, f"axes.{axis}.{value}")
            if not values:
                raise InputError(f"axis '{axis}' has no values", field=f"axes.{axis}")
            if axis in RESERVED_COLUMNS or axis.endswith(tuple(f"_{metric}" for metric in METRICS)):
                raise InputError(f"axis '{axis}' has the name of a column of the results table; rename it", field=f"axes.{axis}")
            _check_distinct_slugs(list(values), f"values of axis '{axis}'", f"axes.{axis}")
        _check_distinct_slugs(list(self.axes), "axes", "axes")
        if self.plot is not None:
            self._check_plot(self.plot)

    def _check_plot(self, plot: PlotConfig) -> None:
        for key, name in (("x", plot.x), ("lines", plot.lines)):
            if name is not None and name not in self.axes:
                raise InputError(f"plot axis '{name}' is not an axis of the grid", field=f"plot.{key}")
        for value in self.axes[plot.x]:
            number = axis_number(value)
            if number is None or (plot.log2_x and number <= 0):
                wanted = "a positive number" if plot.log2_x else "a number"
                raise InputError(
                    f"the values of the x axis '{plot.x}' are plotted as numbers: {value!r} is not {wanted} (like 0.5 or 1/2)",
                    field="plot.x",
                )


# Recipe keys the grid sets for every run itself, so an override of them would be dropped unseen.
GRID_KEYS = {
    "seed": "every run's seed comes from the grid's seeds: list the seeds there",
    "output_dir": "every run is written under the grid's output_dir, in a folder of its own",
}


def _refuse_grid_keys(overrides: dict[str, Any], entry: str) -> None:
    for key in overrides:
        if key in GRID_KEYS:
            raise InputError(f"'{key}' cannot be overridden: {GRID_KEYS[key]}", field=f"{entry}.{key}")


def axis_number(value: str) -> float | None:
    """Where an axis value (``0.5``, ``1/2``) sits on a plot's x axis; None if it is no finite number."""
    try:
        if "/" in value:
            top, bottom = value.split("/", 1)
            number = float(top) / float(bottom)
        else:
            number = float(value)
    except (ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


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
    # Read outside the try: its errors already name the file, and the line (invalid YAML) that
    # re-raising with the grid's path and field alone dropped.
    data = read_yaml(path)
    try:
        config = from_mapping(ExperimentConfig, data)
    except InputError as error:
        raise InputError(error.message, path=path, field=error.field) from None
    root = path.resolve().parent
    check_recipes(config, root, path)
    return config, root


def check_recipes(config: ExperimentConfig, root: Path, grid: Path) -> None:
    """Every run's recipe resolves; else an error naming the grid entry at fault (its overrides,
    one axis value, or a combination of values), with the recipe field it broke."""
    base = root / config.base
    if not base.is_file():
        raise InputError(f"the base recipe {base} is not a file", path=grid, field="base")
    _resolve(config, root, config.overrides, {}, grid, "overrides")
    for index, seed in enumerate(config.seeds):
        _resolve(config, root, {**config.overrides, "seed": seed}, config.overrides, grid, f"seeds[{index}]")
    for axis, values in config.axes.items():
        for value, changes in values.items():
            _resolve(config, root, combined(config.overrides, changes), config.overrides, grid, f"axes.{axis}.{value}")
    specs = expand(config)
    for spec in specs:
        _resolve(config, root, spec.overrides, config.overrides, grid, f"axes ({spec.name})")
    _check_distinct_runs(config, root, grid, specs)


# -- where each run lives: one directory per resolved recipe, shared by every grid that has the run


def resolved_config(config: ExperimentConfig, root: Path, spec: RunSpec) -> Any:
    """The training recipe of one run of the grid: the base recipe under the run's overrides."""
    from instructerc.training.config import TrainConfig

    return TrainConfig.from_yaml(root / config.base, spec.overrides)


def run_key(train_config: Any) -> str:
    """A run's identity: a hash of its fully resolved training config (its output place aside).

    Two grids that contain the same run (say, fraction 1 of a data-scaling grid and the
    single-dataset row of a label-space grid) share one directory and train it once. ``auto``
    precision counts as the type it means on this machine, so runs in bf16 and in float32 differ.
    How the model is laid over processes (``distributed``: DDP or FSDP) is not part of it: the
    two compute the same weights.
    """
    import hashlib

    from instructerc.modeling.precision import resolve_dtype
    from instructerc.training.config import later_keys

    data = train_config.to_dict()
    data.pop("output_dir", None)
    data.pop("distributed", None)
    # Keys added to the recipe format later count only when set, so the runs of earlier grids
    # keep their directories.
    for section, key, default in later_keys():
        if data.get(section, {}).get(key, default) == default:
            data.get(section, {}).pop(key, None)
    data["backbone"]["dtype"] = resolve_dtype(train_config.backbone.dtype, _training_device())
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _training_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def directory_of(config: ExperimentConfig, root: Path, train_config: Any) -> Path:
    """Where the run of recipe ``train_config`` lives: named by its identity (:func:`run_key`)."""
    return (root / config.output_dir / f"run-{run_key(train_config)}").resolve()


def run_directory(config: ExperimentConfig, root: Path, spec: RunSpec) -> Path:
    """The run's directory, once :func:`check_inputs` found that it holds a run of the inputs
    the recipe names from here."""
    train_config = resolved_config(config, root, spec)
    directory = directory_of(config, root, train_config)
    check_inputs(directory, train_config)
    return directory


# -- the recipe's relative paths: the run's identity holds them as written, not what they name

SPEC_FILE = "spec.json"


def _path_values(train_config: Any) -> dict[str, Any]:
    return {
        "data.path": train_config.data.path,
        "backbone.model": train_config.backbone.model,
        "finetune.init_adapter": train_config.finetune.init_adapter,
    }


def run_inputs(train_config: Any, directory: Path) -> dict[str, str]:
    """Where each relative path of the recipe that names something here leads, relative to the
    run's ``directory`` (a hub id names nothing here and is left out). Recorded in a run's
    spec.json: moving the whole project, or the grid file with its output_dir, keeps these;
    starting the grid from another working directory (relative paths are read from it) does not."""
    inputs = {}
    for name, value in _path_values(train_config).items():
        if isinstance(value, str) and value.strip() and not os.path.isabs(value) and os.path.exists(value):
            inputs[name] = os.path.relpath(os.path.abspath(value), directory)
    return inputs


def check_inputs(directory: Path, train_config: Any) -> None:
    """An :class:`InputError` naming the run's spec.json and the field when a relative path of
    the recipe names something else from this working directory than when the run was made: the run's
    directory is named by the recipe as written, so its model and scores (of other data, another
    backbone) would be reused as this grid's. Runs made before inputs were recorded pass."""
    file = directory / SPEC_FILE
    try:
        recorded = json.loads(file.read_text(encoding="utf-8")).get("inputs")
    except (OSError, ValueError, AttributeError):
        return  # no run yet, or none recorded: nothing to tell it from
    if not isinstance(recorded, dict):
        return
    current, values = run_inputs(train_config, directory), _path_values(train_config)
    for name, then in recorded.items():
        # Naming nothing here, it is no other input: reading it fails on its own, naming it.
        if name in current and current[name] != then:
            raise InputError(
                f"this run was made with {name} {values[name]!r} naming {os.path.normpath(directory / str(then))}, but from this "
                f"working directory it names {os.path.normpath(directory / current[name])}: relative paths in a recipe are read "
                "from the working directory, so start the grid from the folder it was first started from",
                path=file,
                field=f"inputs.{name}",
            )


def _check_distinct_runs(config: ExperimentConfig, root: Path, grid: Path, specs: list[RunSpec]) -> None:
    """Two runs of one grid that resolve to the same recipe share one run directory: it trains
    once, and the report shows its scores under two settings, as if they had been compared (an
    axis value that changes nothing, or two axes setting one key, the last one winning)."""
    seen: dict[Path, str] = {}
    for spec in specs:
        directory = run_directory(config, root, spec)
        first = seen.setdefault(directory, spec.name)
        if first != spec.name:
            raise InputError(
                f"runs {first} and {spec.name} resolve to the same recipe ({directory.name}): an axis value changes nothing "
                "another does not, or two axes set one key; make their overrides differ",
                path=grid,
                field="axes",
            )


def combined(overrides: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` (an axis value's overrides) added to ``overrides``, as one ``--set`` after
    another: a key both give a mapping for merges where the recipe has a section
    (``optim: {lr: ...}`` then ``optim: {weight_decay: ...}`` sets both); a plain dict update
    kept only the second mapping, so the first axis's value, or the grid's own override, was lost."""
    from instructerc.training.config import hint_at, merged, override_steps

    result = dict(overrides)
    for key, value in changes.items():
        result[key] = merged(result[key], value, hint_at(override_steps(key))) if key in result else value
    return result


def _resolve(config: ExperimentConfig, root: Path, overrides: dict[str, Any], reference: dict[str, Any], grid: Path, entry: str) -> None:
    """Resolve the base recipe under ``overrides``; a failure is ``entry``'s fault unless the
    ``reference`` overrides (what ``entry`` adds to) already fail, e.g. a base recipe wrong by
    itself, whose own error names it."""
    from instructerc.training.config import TrainConfig

    base = root / config.base
    try:
        TrainConfig.from_yaml(base, overrides)
    except InputError as error:
        TrainConfig.from_yaml(base, reference)
        where = f"field '{error.field}' of the recipe: " if error.field else ""
        raise InputError(f"{where}{error.message}", path=grid, field=entry) from None


# Letters and digits of any script stay (an axis of values ``高`` and ``低`` became ``x`` twice, and
# the grid was refused as two values of one name); ``_`` goes, as ``__`` separates the name's parts.
# ASCII names are slugged as before, so earlier grids keep their run names.
_NOT_IN_NAMES = re.compile(r"(?:[^\w.+-]|_)+")


def _slug(text: str) -> str:
    return _NOT_IN_NAMES.sub("-", text).strip("-") or "x"


def _check_distinct_slugs(names: list[str], what: str, field: str) -> None:
    """Run names are built from slugs of axis names and values: two names with one slug (``a|b``
    and ``a/b``) would give two different runs one name, which ``--only`` and the CSV's ``run``
    column could not tell apart."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(_slug(name), name)
        if other != name:
            raise InputError(f"{what} {other!r} and {name!r} both give runs the name part '{_slug(name)}'; rename one", field=field)


def expand(config: ExperimentConfig) -> list[RunSpec]:
    """Every combination of axis values, times every seed, in a stable order."""
    axes = list(config.axes.items())
    runs = []
    for combination in itertools.product(*[list(values.items()) for _, values in axes]):
        for seed in config.seeds:
            values = {axis: value for (axis, _), (value, _) in zip(axes, combination)}
            overrides = dict(config.overrides)
            for _, changes in combination:
                overrides = combined(overrides, changes)
            overrides["seed"] = seed
            name = "__".join([f"{_slug(a)}={_slug(v)}" for a, v in values.items()] + [f"seed={seed}"])
            runs.append(RunSpec(name=name, values=values, seed=seed, overrides=overrides))
    return runs
