"""Running a grid: one directory per run, finished runs kept, interrupted runs resumed."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from instructerc.errors import InputError
from instructerc.experiments.grid import ExperimentConfig, RunSpec, expand, scores_name
from instructerc.files import atomic_write

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class Scoring:
    """What a run's model is scored on. Two grids may share a run but score it differently, so a
    recorded score is reused only for the same scoring. (The model, its data and its precision
    are fixed by the run's directory.)"""

    split: str
    max_dialogues: int | None

    @classmethod
    def of(cls, config: ExperimentConfig) -> Scoring:
        return cls(config.evaluate_split, config.evaluate_max_dialogues)

    @classmethod
    def recorded(cls, record: dict[str, Any]) -> Scoring:
        # Records written before subsets existed scored the whole split.
        return cls(record["evaluate_split"], record.get("evaluate_max_dialogues"))

    def describe(self) -> str:
        return self.split if self.max_dialogues is None else f"{self.split} (at most {self.max_dialogues} dialogues per dataset)"


@dataclass(frozen=True)
class RunResult:
    spec: RunSpec
    dev: dict[str, Any]  # the dev metrics that selected the checkpoint
    test: dict[str, Any]  # per dataset, the scores on the grid's evaluation split (test unless it says otherwise)

    @property
    def name(self) -> str:
        return self.spec.name


def resolved_config(config: ExperimentConfig, root: Path, spec: RunSpec) -> Any:
    from instructerc.training.config import TrainConfig

    return TrainConfig.from_yaml(root / config.base, spec.overrides)


# (section, key) of recipe keys added after grids had run, with a default of None.
_LATER_KEYS = (("finetune", "init_adapter"),)


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

    data = train_config.to_dict()
    data.pop("output_dir", None)
    data.pop("distributed", None)
    # Keys added to the recipe format later count only when set, so the runs of earlier grids
    # keep their directories.
    for section, key in _LATER_KEYS:
        if data.get(section, {}).get(key) is None:
            data.get(section, {}).pop(key, None)
    data["backbone"]["dtype"] = resolve_dtype(train_config.backbone.dtype, _training_device())
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _training_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _directory_of(config: ExperimentConfig, root: Path, train_config: Any) -> Path:
    return (root / config.output_dir / f"run-{run_key(train_config)}").resolve()


def run_directory(config: ExperimentConfig, root: Path, spec: RunSpec) -> Path:
    return _directory_of(config, root, resolved_config(config, root, spec))


def evaluate_run(
    directory: Path, source: Any, split: str, progress: bool, max_dialogues: int | None = None, dtype: str = "auto"
) -> dict[str, Any]:
    """Metrics per dataset of a run's dev-selected model on ``split`` (read only here), with the
    full evaluation (predictions, confusion matrices, report) written beside the model, in the
    precision ``dtype``."""
    from instructerc.evaluation.evaluate import evaluate_model

    result = evaluate_model(
        directory / "model", source, split, directory / f"eval-{split}", max_dialogues=max_dialogues, progress=progress, dtype=dtype
    )
    return {dataset: metrics.to_dict() for dataset, metrics in result.systems["llm"].by_dataset.items()}


def run_one(config: ExperimentConfig, root: Path, spec: RunSpec, progress: bool = True) -> RunResult:
    """Train (or resume) one run, then score its dev-selected model on the evaluation split once."""
    from instructerc.evaluation.dev_scoring import predictor_dev_scoring
    from instructerc.modeling.model_dir import DEV_METRICS, MANIFEST
    from instructerc.training.trainer import RunPaths, Trainer

    resolved = resolved_config(config, root, spec)
    directory = _directory_of(config, root, resolved)
    done = directory / RESULT_FILE
    scoring = Scoring.of(config)
    finished = load_result(done, spec, scoring)
    if finished is not None:
        return finished
    train_config = replace(resolved, output_dir=str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / "spec.json") as handle:
        json.dump(
            {"grid": config.name, "name": spec.name, "values": spec.values, "seed": spec.seed, "overrides": spec.overrides},
            handle,
            indent=2,
        )
    paths = RunPaths(directory)
    if not (paths.model / MANIFEST).is_file():
        resume = paths.checkpoints.is_dir() and any(paths.checkpoints.iterdir())
        Trainer(train_config, progress=progress, dev_scoring=predictor_dev_scoring).run(resume=resume)
    dev = json.loads((paths.model / DEV_METRICS).read_text(encoding="utf-8"))
    test = evaluate_run(directory, train_config.data.source(), scoring.split, progress, scoring.max_dialogues, train_config.backbone.dtype)
    record = {
        "name": spec.name,
        "values": spec.values,
        "seed": spec.seed,
        "dev": dev,
        scores_name(scoring.split): test,
        "evaluate_split": scoring.split,
        "evaluate_max_dialogues": scoring.max_dialogues,
    }
    _write_record(done, record)
    return RunResult(spec, dev, test)


def _write_record(path: Path, record: dict[str, Any]) -> None:
    """``record`` as the run's result, its scores under other scorings kept in ``other_scorings``
    (grids sharing the run read them back without evaluating again)."""
    scoring = Scoring.recorded(record)
    kept = [r for r in _records(path) if Scoring.recorded(r) != scoring] if path.is_file() else []
    with atomic_write(path) as handle:
        json.dump({**record, "other_scorings": [_scores_only(r) for r in kept]}, handle, indent=2)


def _scores_only(record: dict[str, Any]) -> dict[str, Any]:
    scores = scores_name(record["evaluate_split"])
    return {key: record.get(key) for key in ("evaluate_split", "evaluate_max_dialogues", scores)}


def _records(path: Path) -> list[dict[str, Any]]:
    """Every scoring a result file holds, each as a record of the top level's form. A record of a
    dev evaluation from before ``dev_eval`` has no usable scores (they overwrote the selection
    scores under ``dev``): it is left out, so the run is scored again."""
    try:
        top = json.loads(path.read_text(encoding="utf-8"))
        records = [top] + [{**top, **other} for other in top.get("other_scorings", [])]
        return [r for r in records if isinstance(r["dev"], dict) and scores_name(Scoring.recorded(r).split) in r]
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # JSONDecodeError is a ValueError
        raise InputError(f"unreadable run result ({type(error).__name__}: {error}): delete it to score the run again", path=path) from None


def load_result(path: Path, spec: RunSpec, scoring: Scoring) -> RunResult | None:
    """The run's recorded result under ``scoring``; None if there is none (the run is unfinished,
    or was scored on another split or subset only)."""
    if not path.is_file():
        return None
    for record in _records(path):
        if Scoring.recorded(record) == scoring:
            return RunResult(spec, record["dev"], record[scores_name(scoring.split)])
    return None


def run_state(config: ExperimentConfig, directory: Path) -> str:
    """``done`` (scored as ``config`` asks), ``to score`` (only other scorings recorded) or ``pending``."""
    path = directory / RESULT_FILE
    if not path.is_file():
        return "pending"
    return "done" if Scoring.of(config) in [Scoring.recorded(r) for r in _records(path)] else "to score"


def run_grid(config: ExperimentConfig, root: Path, progress: bool = True, only: str | None = None) -> list[RunResult]:
    """Every run of the grid (finished ones are read back, not redone)."""
    results = []
    specs = expand(config)
    for position, spec in enumerate(specs, start=1):
        if only is not None and only not in spec.name:
            continue
        directory = run_directory(config, root, spec)
        state = run_state(config, directory)
        state = {"pending": "running", "to score": f"trained, scoring on {Scoring.of(config).describe()}"}.get(state, state)
        print(f"[{position}/{len(specs)}] {spec.name} ({directory.name}): {state}")
        results.append(run_one(config, root, spec, progress))
    return results
