"""Running a grid: one directory per run, finished runs kept, interrupted runs resumed."""

from __future__ import annotations

import json
import math
import numbers
import sys
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn, Sequence

from instructerc.errors import InputError
from instructerc.experiments.grid import (
    METRICS,
    SPEC_FILE,
    ExperimentConfig,
    RunSpec,
    check_inputs,
    directory_of,
    expand,
    resolved_config,
    run_directory,
    run_inputs,
    scores_name,
)
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


def run_one(config: ExperimentConfig, root: Path, spec: RunSpec, progress: bool = True, together: Together | None = None) -> RunResult:
    """Train (or resume) one run, then score its dev-selected model on the evaluation split once.
    With ``together`` (the processes of a launcher, see :func:`run_together`), a failure is the
    processes' agreed :class:`RunFailed`."""
    if together is not None:
        return run_together(config, root, spec, progress, together)
    finished, train_config, directory = _train_part(config, root, spec, progress)
    return finished if finished is not None else _score_part(config, spec, train_config, directory, progress)


def _train_part(
    config: ExperimentConfig, root: Path, spec: RunSpec, progress: bool, main: bool = True
) -> tuple[RunResult | None, Any, Path]:
    """The run trained (or found trained): its recorded result if it is already scored as
    ``config`` asks, its training config and its directory. Every process of a launcher runs it."""
    from instructerc.evaluation.dev_scoring import predictor_dev_scoring
    from instructerc.modeling.model_dir import MANIFEST
    from instructerc.training.run_directory import RunPaths
    from instructerc.training.trainer import Trainer

    resolved = resolved_config(config, root, spec)
    directory = directory_of(config, root, resolved)
    check_inputs(directory, resolved)
    train_config = replace(resolved, output_dir=str(directory))
    finished = load_result(directory / RESULT_FILE, spec, Scoring.of(config))
    if finished is not None:
        return finished, train_config, directory
    directory.mkdir(parents=True, exist_ok=True)
    if main:  # the same content from every process: the first one's is enough
        record = {"grid": config.name, "name": spec.name, "values": spec.values, "seed": spec.seed, "overrides": spec.overrides}
        with atomic_write(directory / SPEC_FILE) as handle:
            json.dump({**record, "inputs": run_inputs(resolved, directory)}, handle, indent=2)
    paths = RunPaths(directory)
    if not (paths.model / MANIFEST).is_file():
        resume = paths.checkpoints.is_dir() and any(paths.checkpoints.iterdir())
        Trainer(train_config, progress=progress, dev_scoring=predictor_dev_scoring).run(resume=resume)
    return None, train_config, directory


def _score_part(config: ExperimentConfig, spec: RunSpec, train_config: Any, directory: Path, progress: bool) -> RunResult:
    """The trained run scored on the grid's split, its result written (by one process)."""
    from instructerc.modeling.model_dir import DEV_METRICS
    from instructerc.training.run_directory import RunPaths

    scoring = Scoring.of(config)
    dev = _read_dev_metrics(RunPaths(directory).model / DEV_METRICS)
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
    _write_record(directory / RESULT_FILE, record)
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
    from instructerc.training.run_directory import RunPaths

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
    cost the runs after it hours later. Ctrl-C and SIGTERM still stop the grid.

    Under a launcher every process runs the grid (the runs' trainings share them): the processes
    agree on each run's outcome before the next (see :func:`run_together`), and the first one
    alone says what happens."""
    check_output_folder(root / config.output_dir)
    together = Together.joined()
    results, failures = [], []
    specs = expand(config)
    for position, spec in enumerate(specs, start=1):
        if not selected(spec.name, only):
            continue
        directory = run_directory(config, root, spec)
        head = f"[{position}/{len(specs)}] {spec.name} ({directory.name})"
        try:
            # Its state is read from its files too (a damaged result), so inside the try.
            doing = _doing(config, directory)
            if together.main:
                print(f"{head}: {doing}", flush=True)
            results.append(run_one(config, root, spec, progress, together))
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (main's Terminated)
            _say_how_to_continue(spec, directory)
            raise
        except GridStopped:
            raise
        except Exception as error:  # noqa: BLE001 - every failure is reported at the end, by name
            failures.append(RunFailure(spec, directory, error.message if isinstance(error, RunFailed) else failure_message(error)))
            if together.main:
                print(f"{head}: failed: {failures[-1].message}", file=sys.stderr, flush=True)
    return GridOutcome(results, failures)


# How long the first process's scoring of a run may keep the others waiting: unbounded in effect
# (a large model on a whole test split takes hours); a process that ends is seen at once anyway.
SCORING_WAIT_SECONDS = 30 * 24 * 3600.0

_STOPPED = "stopped: another process of the grid ended before finishing (its error is above, or it was killed)"


class GridStopped(InputError):
    """The grid cannot go on in step (a process is gone): not a failed run to record, but the end."""


class RunFailed(Exception):
    """A run failed, as the processes of a launcher agree: ``message`` is the first failing
    process's (already said where it came from)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Together:
    """The processes running a grid: ``rank`` of ``world``, each run's training checked in
    ``watched`` (a time limit, as ``instructerc train`` has), the first process's scoring awaited
    in ``waiting`` (none). Groups of their own: a process whose run failed must not meet the
    others' training collectives (its barrier would be paired with one of them). One process: no
    groups."""

    rank: int = 0
    world: int = 1
    watched: Any = None
    waiting: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def joined(cls) -> Together:
        """This process's place among the grid's processes (every process must call it at the same point)."""
        from instructerc.distributed import SAME_FAILURE_SECONDS, interruptible_rendezvous, process_group
        from instructerc.inference.sharding import Shard, with_status_group

        dist = process_group()
        if dist is None or dist.get_world_size() == 1:
            return cls()
        from accelerate import PartialState

        shard = Shard(dist.get_rank(), dist.get_world_size(), state=PartialState())
        with interruptible_rendezvous():
            watched = with_status_group(shard, SAME_FAILURE_SECONDS).group
            waiting = with_status_group(shard, SCORING_WAIT_SECONDS).group
        return cls(shard.rank, shard.world, watched, waiting)

    def gathered(self, mine: Any, group: Any) -> list[Any] | None:
        """What each process sent, by rank; None: a process is gone, or did not answer in the group's time."""
        if self.world == 1:
            return [mine]
        import torch.distributed as dist

        everyone: list[Any] = [None] * self.world
        try:
            dist.all_gather_object(everyone, mine, group=group)
        except RuntimeError:  # the backend's "connection closed by peer", or its time limit
            return None
        return everyone


def run_together(config: ExperimentConfig, root: Path, spec: RunSpec, progress: bool, together: Together) -> RunResult:
    """One run in every process: trained by all, then scored by the first while the others wait
    (each would write the same files). The processes agree on a failure (:class:`RunFailed`) and
    go on to the next run together. A process that failed alone while the others are still in the
    run's training stops the grid with its error (they cannot be told to leave their training
    collectives; its end tells them), and they stop the grid with one line."""
    from instructerc.distributed import peer_gone

    trace, mine = "", None
    finished = train_config = directory = None
    try:
        finished, train_config, directory = _train_part(config, root, spec, progress, together.main)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # noqa: BLE001 - agreed on below, then reported by the grid
        if peer_gone(error):
            _stop_alone(config, root, spec, together, None, "")
        trace, mine = _own_trace(error), failure_message(error, trace=False)
    said = together.gathered(mine, together.watched)
    if said is None:
        _stop_alone(config, root, spec, together, mine, trace)
    failed = [(rank, message) for rank, message in enumerate(said) if message is not None]
    if failed:
        if failed[0][0] == together.rank:  # a bug's traceback, once
            print(trace, end="", file=sys.stderr, flush=True)
        raise RunFailed(failed[0][1])
    if finished is not None:
        return finished
    return _scored_by_first(config, spec, train_config, directory, progress, together)


def _stop_alone(config: ExperimentConfig, root: Path, spec: RunSpec, together: Together, mine: str | None, trace: str) -> NoReturn:
    """The agreement on a run found a process gone (or, for a process that failed, the others
    still training): the grid stops here, with this process's own error if it has one."""
    directory = run_directory(config, root, spec)
    _say_how_to_continue(spec, directory)
    if mine is None:
        raise GridStopped(_STOPPED, path=directory)
    print(trace, end="", file=sys.stderr, flush=True)
    raise GridStopped(
        f"run {spec.name} failed in process {together.rank} of {together.world} alone, while the others were still training it, "
        f"so the grid stopped: {mine}",
        path=directory,
    )


def _scored_by_first(
    config: ExperimentConfig, spec: RunSpec, train_config: Any, directory: Path, progress: bool, together: Together
) -> RunResult:
    """The trained run scored by the first process, its result (or failure) sent to the others."""
    from instructerc.distributed import interruptible_rendezvous

    if together.main:
        try:
            sent: tuple[str | None, RunResult | None] = (None, _score_part(config, spec, train_config, directory, progress))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001 - the others learn it below
            sent = (failure_message(error), None)
        answers = together.gathered(sent, together.waiting)
    else:
        # Ctrl-C and SIGTERM end a waiting process at once (it writes nothing here): it waits in
        # the backend's C++ code, where Python's handlers never run.
        with interruptible_rendezvous():
            answers = together.gathered((None, None), together.waiting)
    if answers is None:
        _say_how_to_continue(spec, directory)
        raise GridStopped(_STOPPED, path=directory)
    message, result = answers[0]
    if message is not None:
        raise RunFailed(message)
    return result


def _say_how_to_continue(spec: RunSpec, directory: Path) -> None:
    """A grid stopped during a run: which run, what it keeps, and that the same command goes on
    from there (``instructerc train`` says as much of a run it stops)."""
    from instructerc.distributed import later_process_of_a_run
    from instructerc.training.checkpoint import latest_checkpoint
    from instructerc.training.run_directory import RunPaths

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


def failure_message(error: Exception, trace: bool = True) -> str:
    """One line for a failed run. An error that is not the user's (a bug, a device error) also
    has its traceback printed (unless not ``trace``: see :func:`_own_trace`), since the grid goes
    on and nothing else would show where it came from."""
    if isinstance(error, InputError):
        return str(error)
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}"
    if trace:
        print(_own_trace(error), end="", file=sys.stderr)
    return f"{type(error).__name__}: {error}"


def _own_trace(error: Exception) -> str:
    """The traceback :func:`failure_message` prints for ``error`` ("" for the user's errors)."""
    if isinstance(error, (InputError, OSError)):
        return ""
    return "".join(traceback.format_exception(error))
