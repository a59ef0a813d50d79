"""What an evaluation writes to ``metrics.json``: systems scored on one split, per dataset.

One schema serves ``evaluate`` (the LLM, with or without baselines beside it) and ``baseline``::

    {"format": 1, "split": "test", "data": {"dataset": "meld", "labels": "original", ...},
     "systems": {"llm": {"kind": "llm", "settings": {"mode": "score", "paper_parsing": false, ...},
                         "by_dataset": {"meld": {"weighted_f1": 61.2, "macro_f1": ..., ...}}},
                 "majority": {"kind": "baseline", ...}}}

``by_dataset`` holds :class:`~instructerc.evaluation.metrics.Metrics` (percentages); a unified-label
model has one entry per source dataset, each scored on that dataset's own classes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from instructerc.errors import InputError
from instructerc.evaluation.metrics import Metrics
from instructerc.files import atomic_write

FORMAT = 1
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"  # a model's evaluation writes its predictions beside its metrics
KINDS = ("llm", "baseline")


@dataclass(frozen=True)
class SystemResult:
    """One system's scores on one split.

    Attributes:
        kind: ``llm`` or ``baseline``.
        by_dataset: source dataset -> metrics, in that dataset's classes.
        settings: how it predicted. The LLM: ``model``, ``label_set``, ``mode``, ``paper_parsing``.
            Baselines: what they were trained on and chose (``C`` selected on ``dev``). ``from``
            names the metrics.json it was read from when it was not computed in this run.
    """

    kind: str
    by_dataset: dict[str, Metrics]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def paper_parsing(self) -> bool:
        return bool(self.settings.get("paper_parsing", False))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "settings": self.settings, "by_dataset": {d: m.to_dict() for d, m in self.by_dataset.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], field: str = "system") -> "SystemResult":
        return cls(
            kind=data["kind"],
            settings=dict(data.get("settings", {})),
            by_dataset={d: Metrics.from_dict(m, f"{field}.by_dataset.{d}") for d, m in data["by_dataset"].items()},
        )


@dataclass(frozen=True)
class EvaluationResult:
    """Systems scored on one split of one data source.

    Attributes:
        split: ``train``, ``dev`` or ``test``; every number belongs to it.
        data: where the dialogues came from: ``dataset`` (registered name), ``labels`` and ``path``.
        systems: name (``llm``, ``majority``, ``minilm-logreg``) -> result, in report order.
    """

    split: str
    data: dict[str, Any]
    systems: dict[str, SystemResult]

    @property
    def datasets(self) -> list[str]:
        """Every source dataset some system was scored on, in first-seen order."""
        return list(dict.fromkeys(d for s in self.systems.values() for d in s.by_dataset))

    @property
    def paper_parsing(self) -> bool:
        return any(s.paper_parsing for s in self.systems.values())

    def with_systems(self, systems: Mapping[str, SystemResult]) -> "EvaluationResult":
        """This result with ``systems`` added after its own (a name may not repeat)."""
        clash = sorted(set(systems) & set(self.systems))
        if clash:
            raise InputError(f"systems {clash} appear twice")
        return EvaluationResult(self.split, self.data, {**self.systems, **systems})

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "split": self.split, "data": self.data, "systems": {n: s.to_dict() for n, s in self.systems.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvaluationResult":
        systems = {n: SystemResult.from_dict(s, f"systems.{n}") for n, s in data["systems"].items()}
        return cls(split=data["split"], data=dict(data["data"]), systems=systems)

    def to_json(self) -> str:
        """The text of its metrics.json."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def save(self, directory: Path) -> Path:
        file = directory / METRICS_FILE
        with atomic_write(file) as handle:
            handle.write(self.to_json())
        return file

    @classmethod
    def load(cls, location: str | Path) -> "EvaluationResult":
        """From a metrics.json, or a folder holding one."""
        file = metrics_file(location)
        if not file.is_file():
            raise InputError(f"no {METRICS_FILE} here (expected an evaluation output folder or the file itself)", path=location)
        try:
            data = json.loads(file.read_text(encoding="utf-8-sig"))
            if not isinstance(data, dict):  # .get below would fail with Python's words, not ours
                raise ValueError(f"it holds a JSON {_JSON_KINDS.get(type(data), 'value')}, not an object")
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            return _with_absolute_paths(cls.from_dict(data), file)
        except InputError as error:
            raise InputError(f"not an instructerc metrics file: {error.message}", path=file, field=error.field) from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise InputError(f"not an instructerc metrics file ({error})", path=file) from None

    def input_path(self, where: str | Path) -> str | None:
        """``data.path``, absolute; an :class:`InputError` naming ``where`` (the folder read) and
        the field when it is relative (see :func:`_with_absolute_paths`): resolved from the
        working directory of the run reading it, it would name another input than the one scored."""
        path = self.data.get("path")
        if path is None or os.path.isabs(str(path)):
            return path
        raise InputError(
            f"records its input as {str(path)!r}, relative to the folder an older instructerc was started from, which it does "
            "not record, so which input it scored cannot be told from here: run from that folder, or evaluate into another --out",
            path=metrics_file(where),
            field="data.path",
        )


def _with_absolute_paths(result: EvaluationResult, file: Path) -> EvaluationResult:
    """``result`` with the relative ``data.path`` (and LLM ``model``) of a folder written before
    paths were recorded absolute made absolute, where the folder it was started from can be
    worked out: an evaluation in the model's own default folder (``MODEL/eval-...``), the model
    named from that same folder (``runs/m`` for ``/w/runs/m/eval-x``: started in ``/w``).
    Elsewhere the path is kept as it was; :meth:`EvaluationResult.input_path` refuses it."""
    path = result.data.get("path")
    if not isinstance(path, str) or os.path.isabs(path):
        return result
    models = [s.settings.get("model") for s in result.systems.values() if s.kind == "llm"]
    start = _started_in(Path(os.path.abspath(file)).parent, models[0] if models else None)
    if start is None:
        return result
    systems = {name: _model_from(system, start) for name, system in result.systems.items()}
    data = {**result.data, "path": os.path.abspath(os.path.join(start, path))}
    return EvaluationResult(result.split, data, systems)


def _model_from(system: SystemResult, start: str) -> SystemResult:
    """``system`` with a relative ``model`` setting made absolute from ``start``."""
    model = system.settings.get("model")
    if system.kind != "llm" or not isinstance(model, str) or os.path.isabs(model):
        return system
    return SystemResult(system.kind, system.by_dataset, {**system.settings, "model": os.path.abspath(os.path.join(start, model))})


def _started_in(folder: Path, model: object) -> str | None:
    """The working directory of the run that wrote the evaluation ``folder`` with the model named
    ``model`` then, when the folder is that model's default one; else None."""
    if not folder.name.startswith("eval-") or not isinstance(model, str):
        return None
    if folder.name.startswith("eval-default-model-"):
        return str(folder.parent)  # the shipped model's default folder is in the working directory
    parts = Path(os.path.normpath(model)).parts
    if os.path.isabs(model) or ".." in parts:
        return None
    above = folder.parent.parts
    if parts and above[-len(parts) :] != parts:
        return None
    return str(Path(*above[: len(above) - len(parts)]))


def recorded_path(path: str | Path | None) -> str | None:
    """``data.path`` as a metrics.json records it: absolute, so a later run from another working
    directory tells the same input (however it is spelled then) from another one of the same
    relative spelling. Symlinks are kept as named; comparisons resolve them. Folders written
    before this hold the path as it was given, relative to where that run was started."""
    return None if path is None else os.path.abspath(path)


_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def metrics_file(location: str | Path) -> Path:
    """``location`` itself, or the metrics.json inside it when it is a folder."""
    location = Path(location)  # a Python caller's str too
    return location / METRICS_FILE if location.is_dir() else location


def check_comparable(base: EvaluationResult, other: EvaluationResult, where: Path | str) -> None:
    """Refuse to set ``other``'s numbers beside ``base``'s unless they score the same utterances.

    Same split, same source datasets, and per dataset the same classes, utterance count and
    gold count per class: scores of another file with as many utterances (re-annotated gold,
    another sample) would otherwise stand beside these as if on the same utterances.
    """
    if other.split != base.split:
        raise InputError(f"these scores are on the {other.split} split, not {base.split}", path=where)
    mine, theirs = _shapes(base), _shapes(other)
    if set(mine) != set(theirs):
        raise InputError(f"these scores cover datasets {sorted(theirs)}, not {sorted(mine)}", path=where)
    for dataset, shape in mine.items():
        if theirs[dataset] != shape:
            raise InputError(
                f"{dataset}: these scores are on {theirs[dataset][1]} utterances in classes {list(theirs[dataset][0])}, "
                f"not {shape[1]} in {list(shape[0])}",
                path=where,
            )
    mine, theirs = _supports(base), _supports(other)
    for dataset, support in mine.items():
        differ = [label for label in support if theirs[dataset].get(label) != support[label]]
        if differ:
            counts = ", ".join(f"{label} {theirs[dataset].get(label)} there, {support[label]} here" for label in differ)
            raise InputError(
                f"{dataset}: these scores are on other gold labels (utterances per class: {counts}): "
                "another file, or another version of it",
                path=where,
            )


def _shapes(result: EvaluationResult) -> dict[str, tuple[tuple[str, ...], int]]:
    shapes: dict[str, tuple[tuple[str, ...], int]] = {}
    for system in result.systems.values():
        for dataset, metrics in system.by_dataset.items():
            shapes.setdefault(dataset, (tuple(metrics.labels), metrics.count))
    return shapes


def _supports(result: EvaluationResult) -> dict[str, dict[str, int]]:
    """Per dataset, how many gold utterances each class has (as the first system scored it)."""
    supports: dict[str, dict[str, int]] = {}
    for system in result.systems.values():
        for dataset, metrics in system.by_dataset.items():
            supports.setdefault(dataset, {label: scores.support for label, scores in metrics.per_class.items()})
    return supports
