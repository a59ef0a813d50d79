"""Running a grid: one directory per run, finished runs kept, interrupted runs resumed."""

from __future__ import annotations

import json
import math
import numbers
import sys
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from instructerc.errors import InputError
from instructerc.experiments.grid import METRICS, ExperimentConfig, RunSpec, expand, scores_name
from instructerc.files import atomic_write, in_the_way

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


# (section, key, default) of recipe keys added after grids had run.
_LATER_KEYS = (
    ("finetune", "init_adapter", None),
    ("optim", "class_balance", 0.0),
    ("template", "dataset_classes", False),
    ("template", "unnamed_share", 0.0),
)


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
    for section, key, default in _LATER_KEYS:
        if data.get(section, {}).get(key, default) == default:
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
    dev = _read_dev_metrics(paths.model / DEV_METRICS)
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


def _read_dev_metrics(path: Path) -> dict[str, Any]:
    """The dev scores a finished model was selected on (they go into the run's result)."""
    try:
        dev = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # missing, unreadable or damaged: not a traceback
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise InputError(
            f"the dev scores of the trained model cannot be read ({reason}): delete the run's model folder to train it again", path=path
        ) from None
    _check_dev(dev, path, "", "delete the run's model folder to train it again")
    return dev


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
        usable = [(i, r) for i, r in enumerate(records) if isinstance(r["dev"], dict) and scores_name(Scoring.recorded(r).split) in r]
        for position, record in usable:
            _check_record(record, path, "" if position == 0 else f"other_scorings[{position - 1}].")
        return [record for _, record in usable]
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # JSONDecodeError is a ValueError
        raise InputError(f"unreadable run result ({type(error).__name__}: {error}): delete it to score the run again", path=path) from None


_RESCORE = "delete it to score the run again"


def _check_record(record: dict[str, Any], path: Path, where: str) -> None:
    """The scores of a record that the report reads: a damaged result must fail naming its field,
    not break the report halfway."""
    scores = scores_name(Scoring.recorded(record).split)
    by_dataset = record[scores]
    if not isinstance(by_dataset, dict) or not by_dataset:
        _damaged(path, f"{where}{scores}", "scores per dataset", by_dataset, _RESCORE)
    for dataset, metrics in by_dataset.items():
        for metric in METRICS:
            value = metrics.get(metric) if isinstance(metrics, dict) else None
            if not _is_score(value):
                _damaged(path, f"{where}{scores}.{dataset}.{metric}", "a finite number", value, _RESCORE)
    if not where:
        _check_dev(record["dev"], path, "dev.", _RESCORE)


def _check_dev(dev: Any, path: Path, where: str, advice: str) -> None:
    """Dev scores as the trainer writes them: ``by_dataset`` maps datasets to metrics."""
    by_dataset = dev.get("by_dataset", {}) if isinstance(dev, dict) else None
    if not isinstance(by_dataset, dict):
        _damaged(path, f"{where}by_dataset", "dev scores per dataset", by_dataset, advice)
    for dataset, metrics in by_dataset.items():
        value = metrics.get("weighted_f1") if isinstance(metrics, dict) else None
        if not _is_score(value):
            _damaged(path, f"{where}by_dataset.{dataset}.weighted_f1", "a finite number", value, advice)


def _is_score(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _damaged(path: Path, field: str, wanted: str, value: Any, advice: str) -> None:
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    raise InputError(f"damaged: expected {wanted}, got {shown}; {advice}", path=path, field=field)


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
    """``done`` (scored as ``config`` asks), ``to score`` (trained; only other scorings recorded,
    or its scoring was cut), ``stopped at step N`` (training was cut: it resumes from that
    checkpoint) or ``pending``."""
    from instructerc.modeling.model_dir import MANIFEST
    from instructerc.training.checkpoint import latest_checkpoint
    from instructerc.training.trainer import RunPaths

    path = directory / RESULT_FILE
    if path.is_file():
        return "done" if Scoring.of(config) in [Scoring.recorded(r) for r in _records(path)] else "to score"
    paths = RunPaths(directory)
    if (paths.model / MANIFEST).is_file():
        return "to score"
    latest = latest_checkpoint(paths.checkpoints)
    if latest is None:
        return "pending"
    step = latest.name.removeprefix("step-")
    return f"stopped at step {int(step)}" if step.isdigit() else f"stopped ({latest.name})"


def selected(name: str, only: str | Sequence[str] | None) -> bool:
    """Whether a run of this name is chosen by ``only``: a text its name contains, or several
    texts of which it contains one (``--only`` given more than once)."""
    if only is None:
        return True
    return any(text in name for text in ([only] if isinstance(only, str) else only))


def check_output_folder(folder: Path, field: str = "output_dir", what: str = "its runs", named: str = "output_dir") -> None:
    """Refuses a grid output folder (``field``, ``named`` so in the advice: the grid's output_dir,
    or --results) that is, or
    lies inside, a file, before any run: the first run's folder could not be made, and the error
    ('Not a directory', exit 1) named neither the folder's key nor what was wrong with it; a
    report folder failed only after every run had trained ('File exists')."""
    # The same test as the evaluation's output folder: a broken symlink is refused as such.
    from instructerc.evaluation.report import check_writable

    found = in_the_way(folder, field, f": choose another {named}")
    if found is not None:
        raise InputError(f"is not a folder, but the grid writes {what} into one here: choose another {named}", path=found, field=field)
    check_writable(folder, field, f"the grid writes {what} into it: choose another {named}")


@dataclass(frozen=True)
class RunFailure:
    """A run of a grid that stopped with an error; the grid went on with the runs after it."""

    spec: RunSpec
    directory: Path
    message: str

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class GridOutcome:
    """What one invocation of a grid did: the runs it finished (or found done) and those that failed."""

    results: list[RunResult]
    failures: list[RunFailure]


def run_grid(config: ExperimentConfig, root: Path, progress: bool = True, only: str | Sequence[str] | None = None) -> GridOutcome:
    """Every run of the grid (finished ones are read back, not redone); with ``only``, the runs
    :func:`selected` by it. A run that fails is recorded and the grid goes on: one bad
    combination (a label set its data does not fit, a prompt too long for one window) must not
    cost the runs after it hours later. Ctrl-C and SIGTERM still stop the grid."""
    check_output_folder(root / config.output_dir)
    results, failures = [], []
    specs = expand(config)
    for position, spec in enumerate(specs, start=1):
        if not selected(spec.name, only):
            continue
        directory = run_directory(config, root, spec)
        try:
            # Its state is read from its files too (a damaged result), so inside the try.
            print(f"[{position}/{len(specs)}] {spec.name} ({directory.name}): {_doing(config, directory)}", flush=True)
            results.append(run_one(config, root, spec, progress))
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (main's Terminated)
            _say_how_to_continue(spec, directory)
            raise
        except Exception as error:  # noqa: BLE001 - every failure is reported at the end, by name
            failures.append(RunFailure(spec, directory, failure_message(error)))
            print(f"[{position}/{len(specs)}] {spec.name} ({directory.name}): failed: {failures[-1].message}", file=sys.stderr, flush=True)
    return GridOutcome(results, failures)


def _say_how_to_continue(spec: RunSpec, directory: Path) -> None:
    """A grid stopped during a run: which run, what it keeps, and that the same command goes on
    from there (``instructerc train`` says as much of a run it stops)."""
    from instructerc.distributed import later_process_of_a_run
    from instructerc.training.checkpoint import latest_checkpoint
    from instructerc.training.trainer import RunPaths

    if later_process_of_a_run():
        return
    latest = latest_checkpoint(RunPaths(directory).checkpoints)
    kept = f"; it is kept up to {latest}" if latest is not None else ""
    print(f"instructerc: the grid stopped during run {spec.name}{kept}; the same command continues the grid", file=sys.stderr)


def _doing(config: ExperimentConfig, directory: Path) -> str:
    """What the grid does with a run now, from its state."""
    state = run_state(config, directory)
    state = {"pending": "running", "to score": f"trained, scoring on {Scoring.of(config).describe()}"}.get(state, state)
    return f"resuming, {state}" if state.startswith("stopped") else state


def failure_message(error: Exception) -> str:
    """One line for a failed run. An error that is not the user's (a bug, a device error) also
    has its traceback printed, since the grid goes on and nothing else would show where it came from."""
    if isinstance(error, InputError):
        return str(error)
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}"
    traceback.print_exception(error, file=sys.stderr)
    return f"{type(error).__name__}: {error}"
