"""How far a weighted F1 could move with another draw of dialogues: a bootstrap over dialogues.

Utterances of one dialogue share speakers, topic and mood, so they are not independent draws:
resampling utterances would understate the spread. The bootstrap here resamples whole
dialogues (a cluster bootstrap), the unit a benchmark's splits are drawn in. Each resample's
weighted F1 is computed from the sum of its dialogues' confusion counts, with the same
conventions as :func:`instructerc.evaluation.metrics.compute_metrics` (scikit-learn's weighted F1
with ``zero_division=0``; predictions outside the classes are errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

from instructerc.evaluation.metrics import compute_metrics


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval of a score, in percent.

    Attributes:
        estimate: the score on the data as it is.
        low, high: the interval's ends.
        level: its coverage (0.95: 95%).
        resamples: how many bootstrap resamples it comes from.
        groups: how many dialogues were resampled.
    """

    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    groups: int

    def to_dict(self) -> dict[str, float | int]:
        """As a metrics.json records it beside the weighted F1 (``groups`` as ``dialogues``)."""
        return {"low": self.low, "high": self.high, "level": self.level, "resamples": self.resamples, "dialogues": self.groups}


def dialogue_confusions(
    gold: Sequence[str], predicted: Sequence[str | None], groups: Sequence[Hashable], labels: Sequence[str]
) -> np.ndarray:
    """Confusion counts per dialogue, ``[dialogue, gold class, predicted column]``; the last
    column holds every prediction that is not a class (invalid or outside the label set)."""
    if not len(gold) == len(predicted) == len(groups):
        raise ValueError(f"gold, predicted and groups differ in length ({len(gold)}, {len(predicted)}, {len(groups)})")
    compute_metrics(gold, predicted, labels)  # the same checks of the labels as the point score
    index = {label: k for k, label in enumerate(labels)}
    order = {group: k for k, group in enumerate(dict.fromkeys(groups))}
    counts = np.zeros((len(order), len(labels), len(labels) + 1), dtype=np.int64)
    for g, p, group in zip(gold, predicted, groups):
        counts[order[group], index[g], index.get(p, len(labels)) if p is not None else len(labels)] += 1
    return counts


def weighted_f1(confusion: np.ndarray) -> np.ndarray:
    """Weighted F1 in percent of one confusion ``[gold, predicted]`` or of a stack of them
    ``[..., gold, predicted]``; the last predicted column is not a class."""
    classes = confusion.shape[-2]
    true_positive = np.diagonal(confusion[..., :classes], axis1=-2, axis2=-1).astype(float)
    support = confusion.sum(axis=-1).astype(float)
    predicted = confusion[..., :classes].sum(axis=-2).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(support + predicted > 0, 2 * true_positive / (support + predicted), 0.0)
        total = support.sum(axis=-1)
        return np.where(total > 0, 100 * (f1 * support).sum(axis=-1) / total, 0.0)


def bootstrap_weighted_f1(
    gold: Sequence[str],
    predicted: Sequence[str | None],
    groups: Sequence[Hashable],
    labels: Sequence[str],
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The weighted F1 of ``predicted`` and its percentile interval over ``resamples`` draws of
    whole dialogues (``groups[i]`` names utterance ``i``'s dialogue) with replacement."""
    _check_settings(resamples, level)
    counts = dialogue_confusions(gold, predicted, groups, labels)
    draws = _draws(len(counts), resamples, seed)
    scores = weighted_f1(_resampled(counts, draws))
    return _interval(float(weighted_f1(counts.sum(axis=0))), scores, level, len(counts))


def bootstrap_difference(
    gold: Sequence[str],
    first: Sequence[str | None],
    second: Sequence[str | None],
    groups: Sequence[Hashable],
    labels: Sequence[str],
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The weighted F1 of ``first`` minus that of ``second`` on the same utterances, with a
    paired interval: both are scored on the same resampled dialogues, so what the two systems
    share (hard dialogues) cancels out."""
    _check_settings(resamples, level)
    one = dialogue_confusions(gold, first, groups, labels)
    two = dialogue_confusions(gold, second, groups, labels)
    draws = _draws(len(one), resamples, seed)
    scores = weighted_f1(_resampled(one, draws)) - weighted_f1(_resampled(two, draws))
    estimate = float(weighted_f1(one.sum(axis=0)) - weighted_f1(two.sum(axis=0)))
    return _interval(estimate, scores, level, len(one))


def _check_settings(resamples: int, level: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive whole number, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (0.95 for 95%), got {level!r}")


def _draws(groups: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, groups, size=(resamples, groups))


def _resampled(counts: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Each resample's summed confusion, ``[resample, gold, predicted]``; a dialogue drawn
    twice counts twice. Summed in chunks so memory stays small for long splits."""
    out = np.empty((len(draws),) + counts.shape[1:], dtype=np.int64)
    for start in range(0, len(draws), 256):
        out[start : start + 256] = counts[draws[start : start + 256]].sum(axis=1)
    return out


def _interval(estimate: float, scores: np.ndarray, level: float, groups: int) -> Interval:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(scores, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), level, len(scores), groups)
