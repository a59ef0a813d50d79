"""Classification metrics over string labels, with invalid outputs kept visible.

Weighted F1 is scikit-learn's ``f1_score(average="weighted")`` over every class of the label
set, the convention of the ERC literature. A prediction that is not a class of the label set
(an invalid generation, or a unified label the dataset does not have) is wrong for accuracy
and for its gold class's recall; it has its own column in the confusion matrix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

INVALID = "<invalid>"
OUTSIDE = "<outside>"


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Metrics":
        per_class = {k: ClassScores(**v) for k, v in data["per_class"].items()}
        return cls(**{**data, "per_class": per_class})


def compute_metrics(gold: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str]) -> Metrics:
    """Metrics of ``predicted`` against ``gold`` over the classes ``labels``.

    ``None`` predictions are invalid; any string outside ``labels`` is an error shown in its own
    confusion column.
    """
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    if not gold:
        raise ValueError("nothing to score")
    labels = list(labels)
    unknown_gold = sorted(set(gold) - set(labels))
    if unknown_gold:
        raise ValueError(f"gold labels {unknown_gold} are not classes of the label set")
    shown = [INVALID if p is None else p for p in predicted]
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
        invalid_rate=100 * sum(p == INVALID for p in shown) / len(gold),
        outside_rate=100 * sum(p not in labels and p != INVALID for p in shown) / len(gold),
        count=len(gold),
        per_class={
            label: ClassScores(100 * float(p), 100 * float(r), 100 * float(f), int(s))
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        labels=labels,
        columns=columns,
        confusion=confusion,
    )
