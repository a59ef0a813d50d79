"""Classification metrics over string labels, with invalid outputs kept visible.

Weighted F1 is scikit-learn's ``f1_score(average="weighted")`` over every class of the label
set, the convention of the ERC literature. A prediction that is not a class of the label set
(an invalid generation, or a unified label the dataset does not have) is wrong for accuracy
and for its gold class's recall; it has its own column in the confusion matrix.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

from instructerc.errors import InputError
from instructerc.labels.label_set import INVALID_MARK, OUTSIDE_MARK, LabelSet

INVALID = INVALID_MARK
OUTSIDE = OUTSIDE_MARK


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Metrics:
    """Scores of one set of predictions against gold labels.

    Attributes:
        weighted_f1, macro_f1, accuracy: in percent (0-100), as the literature reports them.
        invalid_rate: share of predictions (percent) that are no label at all (free generation
            that is not exactly a label).
        outside_rate: share of predictions (percent) that are labels of the model's (unified)
            label set which this dataset does not have; wrong, but valid outputs.
        count: how many utterances were scored.
        per_class: label -> precision/recall/F1 (percent) and support.
        labels: the label set's classes (confusion rows).
        columns: confusion columns: the classes, then any non-class predictions seen.
        confusion: counts, ``confusion[gold][predicted]`` in ``labels`` x ``columns`` order.
        weighted_f1_interval: where the weighted F1 could lie with another draw of dialogues:
            ``low`` and ``high`` ends of a percentile bootstrap over ``dialogues`` resampled
            ``resamples`` times, at ``level`` (0.95); ``None`` where not computed (dev selection).
    """

    weighted_f1: float
    macro_f1: float
    accuracy: float
    invalid_rate: float
    count: int
    per_class: dict[str, ClassScores]
    labels: list[str]
    columns: list[str]
    confusion: list[list[int]]
    outside_rate: float = 0.0
    weighted_f1_interval: dict[str, float | int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], field: str = "metrics") -> "Metrics":
        """Metrics read back from a metrics.json; ``field`` names where, for the error a damaged
        file gets (its numbers are aggregated and compared, so a wrong type must not pass)."""
        check_metrics_dict(data, field)
        per_class = {k: ClassScores(**v) for k, v in data["per_class"].items()}
        return cls(**{**data, "per_class": per_class})


_SCORES = ("weighted_f1", "macro_f1", "accuracy", "invalid_rate")
_CLASS_SCORES = ("precision", "recall", "f1")


def check_metrics_dict(data: Any, field: str) -> None:
    """An :class:`InputError` naming the field unless ``data`` has the shape :meth:`Metrics.to_dict` writes."""
    _expect(isinstance(data, Mapping), field, "an object of metrics", data)
    for key in _SCORES + (("outside_rate",) if "outside_rate" in data else ()):
        _expect(_is_number(data.get(key)), f"{field}.{key}", "a finite number", data.get(key))
    _expect(_is_count(data.get("count")), f"{field}.count", "a whole number of utterances", data.get("count"))
    labels, columns = data.get("labels"), data.get("columns")
    _expect(_is_names(labels) and len(set(labels)) == len(labels) > 0, f"{field}.labels", "a list of distinct class names", labels)
    _expect(_is_names(columns) and columns[: len(labels)] == labels, f"{field}.columns", "the classes, then other predictions", columns)
    per_class = data.get("per_class")
    _expect(isinstance(per_class, Mapping), f"{field}.per_class", "an object of scores per class", per_class)
    others = [key for key in per_class if key not in labels]
    _expect(not others, f"{field}.per_class", "scores of the classes only", others)
    for label in labels:
        where, scores = f"{field}.per_class.{label}", per_class.get(label)
        _expect(isinstance(scores, Mapping), where, "this class's scores", scores)
        for key in _CLASS_SCORES:
            _expect(_is_number(scores.get(key)), f"{where}.{key}", "a finite number", scores.get(key))
        _expect(_is_count(scores.get("support")), f"{where}.support", "a whole number", scores.get("support"))
    _check_interval(data.get("weighted_f1_interval"), f"{field}.weighted_f1_interval")
    confusion = data.get("confusion")
    shaped = isinstance(confusion, list) and len(confusion) == len(labels)
    shaped = shaped and all(isinstance(row, list) and len(row) == len(columns) and all(map(_is_count, row)) for row in confusion)
    _expect(shaped, f"{field}.confusion", "counts, one row per class and one column per column", confusion)


def _check_interval(interval: Any, field: str) -> None:
    """An interval as :meth:`~instructerc.evaluation.uncertainty.Interval.to_dict` writes it, or none."""
    if interval is None:
        return
    _expect(isinstance(interval, Mapping), field, "an object with low, high, level, resamples, dialogues", interval)
    for key in ("low", "high", "level"):
        _expect(_is_number(interval.get(key)), f"{field}.{key}", "a finite number", interval.get(key))
    for key in ("resamples", "dialogues"):
        _expect(_is_count(interval.get(key)), f"{field}.{key}", "a whole number", interval.get(key))


def _expect(condition: bool, field: str, wanted: str, value: Any) -> None:
    if not condition:
        shown = repr(value)
        raise InputError(f"expected {wanted}, got {shown if len(shown) <= 80 else shown[:77] + '...'}", field=field)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _strings(values: Any, name: str, allow_none: bool) -> list[Any]:
    """``values`` as a list of plain strings (numpy's too), or a TypeError naming ``name``: a
    string is refused whole, since read as a sequence it would be scored letter by letter,
    and a numpy array could not be tested for emptiness."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of labels, not {type(values).__name__}")
    out: list[Any] = []
    for k, value in enumerate(values):
        if value is None and allow_none:
            out.append(None)
        elif isinstance(value, str):
            out.append(str(value))
        else:
            allowed = "a label (a string) or None (invalid)" if allow_none else "a label (a string)"
            raise TypeError(f"{name}[{k}] must be {allowed}, not {value!r}")
    return out


def invalid_column(labels: Sequence[str]) -> str:
    """The confusion column of invalid outputs: :data:`INVALID`, unless a class of the user's
    label set is spelled so; then invalid outputs would count as that class, right when its gold
    is, so they get a name no class has."""
    name = INVALID
    while name in labels:
        name = f"<{name}>"
    return name


def compute_metrics(gold: Iterable[str], predicted: Iterable[str | None], labels: Iterable[str] | LabelSet) -> Metrics:
    """Metrics of ``predicted`` against ``gold`` over the classes ``labels``.

    ``None`` predictions are invalid; any string outside ``labels`` is an error shown in its own
    confusion column. Each argument may be a list, a tuple, a numpy array or any iterable of
    strings; ``labels`` may also be a :class:`LabelSet`.
    """
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    gold = _strings(gold, "gold", allow_none=False)
    predicted = _strings(predicted, "predicted", allow_none=True)
    labels = _strings(labels.labels if isinstance(labels, LabelSet) else labels, "labels", allow_none=False)
    if len(gold) != len(predicted):
        raise ValueError(f"gold and predicted differ in length ({len(gold)} and {len(predicted)})")
    if not gold:
        raise ValueError("nothing to score")
    if not labels:
        raise ValueError("labels is empty: there are no classes to score on")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        # A class listed twice is averaged twice into macro and weighted F1.
        raise ValueError(f"labels lists {repeated} more than once")
    unknown_gold = sorted(set(gold) - set(labels))
    if unknown_gold:
        raise ValueError(f"gold labels {unknown_gold} are not classes of the label set ({', '.join(labels)})")
    invalid = invalid_column(labels)
    shown = [invalid if p is None else p for p in predicted]
    extra_columns = sorted({p for p in shown if p not in labels})
    weighted = f1_score(gold, shown, labels=labels, average="weighted", zero_division=0)
    macro = f1_score(gold, shown, labels=labels, average="macro", zero_division=0)
    precision, recall, f1, support = precision_recall_fscore_support(gold, shown, labels=labels, zero_division=0)
    columns = labels + extra_columns
    col = {c: i for i, c in enumerate(columns)}
    row = {c: i for i, c in enumerate(labels)}
    confusion = [[0] * len(columns) for _ in labels]
    for g, p in zip(gold, shown):
        confusion[row[g]][col[p]] += 1
    correct = sum(g == p for g, p in zip(gold, shown))
    return Metrics(
        weighted_f1=100 * float(weighted),
        macro_f1=100 * float(macro),
        accuracy=100 * correct / len(gold),
        invalid_rate=100 * sum(p == invalid for p in shown) / len(gold),
        outside_rate=100 * sum(p not in labels and p != invalid for p in shown) / len(gold),
        count=len(gold),
        per_class={
            label: ClassScores(100 * float(p), 100 * float(r), 100 * float(f), int(s))
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        labels=labels,
        columns=columns,
        confusion=confusion,
    )
