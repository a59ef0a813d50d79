"""Scoring a model's predictions per dataset, in each dataset's own classes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from instructerc.data.dialogue import Dialogue
from instructerc.evaluation.metrics import OUTSIDE, Metrics, compute_metrics
from instructerc.evaluation.uncertainty import bootstrap_weighted_f1
from instructerc.labels.benchmarks import BENCHMARK_LABEL_SETS
from instructerc.labels.label_set import LabelSet
from instructerc.labels.prediction import Prediction
from instructerc.labels.unified import mapping_of


def original_gold(utterance) -> str | None:
    return utterance.extra.get("original_emotion", utterance.emotion)


@dataclass(frozen=True)
class ScoredRows:
    """One dataset's scored utterances, in order: gold and predicted labels as
    :func:`~instructerc.evaluation.metrics.compute_metrics` takes them, and each one's dialogue
    by its position in the input (what a bootstrap resamples; ids may repeat across files)."""

    gold: list[str] = field(default_factory=list)
    predicted: list[str | None] = field(default_factory=list)
    dialogues: list[int] = field(default_factory=list)


def scored_rows(dialogues: Iterable[Dialogue], predictions: Iterable[Sequence[Prediction]], label_set: LabelSet) -> dict[str, ScoredRows]:
    """Per source dataset, the utterances with a gold emotion and their predictions, as
    :func:`score_by_dataset` scores them: a model with a unified label set on each benchmark's
    original classes (its prediction mapped back, a unified label the dataset lacks counted as an
    error, ``<outside>``), other models in their own label set."""
    mapping = mapping_of(label_set)
    rows: dict[str, ScoredRows] = defaultdict(ScoredRows)
    for position, (dialogue, dialogue_predictions) in enumerate(paired(dialogues, predictions)):
        unified_scoring = mapping is not None and mapping.covers(dialogue.dataset)
        for utterance, prediction in zip(dialogue.utterances, dialogue_predictions):
            if utterance.emotion is None:
                continue
            scored = rows[dialogue.dataset]
            if unified_scoring:
                scored.gold.append(original_gold(utterance))
                back = None if prediction.label is None else (mapping.to_original(dialogue.dataset, prediction.label) or OUTSIDE)
                scored.predicted.append(back)
            else:
                scored.gold.append(utterance.emotion)
                scored.predicted.append(prediction.label)
            scored.dialogues.append(position)
    return dict(rows)


def score_by_dataset(
    dialogues: Iterable[Dialogue], predictions: Iterable[Sequence[Prediction]], label_set: LabelSet, intervals: bool = False
) -> dict[str, Metrics]:
    """Metrics per source dataset (see :func:`scored_rows` for what is scored in which classes).

    ``intervals``: also each weighted F1's 95% interval over resampled dialogues
    (:mod:`~instructerc.evaluation.uncertainty`), for reported scores; selection needs none.
    """
    results = {}
    for dataset, rows in scored_rows(dialogues, predictions, label_set).items():
        classes = scoring_classes(label_set, dataset)
        try:
            metrics = compute_metrics(rows.gold, rows.predicted, classes)
        except ValueError as error:
            raise ValueError(f"dataset '{dataset}': {error}") from None
        if intervals:
            interval = bootstrap_weighted_f1(rows.gold, rows.predicted, rows.dialogues, classes)
            metrics = replace(metrics, weighted_f1_interval=interval.to_dict())
        results[dataset] = metrics
    return results


def paired(dialogues: Iterable[Dialogue], predictions: Iterable[Sequence[Prediction]]) -> list[tuple[Dialogue, list[Prediction]]]:
    """Each dialogue with its predictions, one per utterance, or an error naming where they part:
    ``zip`` would stop at the shorter side and score fewer utterances without a word."""
    dialogues, predictions = list(dialogues), [list(p) for p in predictions]
    if len(dialogues) != len(predictions):
        raise ValueError(f"{len(predictions)} lists of predictions for {len(dialogues)} dialogues")
    for k, (dialogue, dialogue_predictions) in enumerate(zip(dialogues, predictions)):
        if len(dialogue_predictions) != len(dialogue.utterances):
            raise ValueError(
                f"predictions[{k}] holds {len(dialogue_predictions)} predictions for the {len(dialogue.utterances)} "
                f"utterances of dialogue '{dialogue.id}'"
            )
        for j, prediction in enumerate(dialogue_predictions):
            if not isinstance(prediction, Prediction):
                raise TypeError(f"predictions[{k}][{j}] must be a Prediction, not {type(prediction).__name__}")
    return list(zip(dialogues, predictions))


def scoring_classes(label_set: LabelSet, dataset: str) -> tuple[str, ...]:
    """The classes a model of ``label_set`` is scored on in ``dataset``: a unified model on the
    dataset's own classes where its mapping covers it, any other model on its own labels."""
    mapping = mapping_of(label_set)
    return BENCHMARK_LABEL_SETS[dataset].labels if mapping is not None and mapping.covers(dataset) else label_set.labels


def scored_classes(dialogues: Sequence[Dialogue], label_set: LabelSet) -> dict[str, tuple[str, ...]]:
    """Per dataset with gold emotions, the classes :func:`score_by_dataset` scores it on."""
    labelled = dict.fromkeys(d.dataset for d in dialogues if any(u.emotion is not None for u in d.utterances))
    return {dataset: scoring_classes(label_set, dataset) for dataset in labelled}


def selection_score(results: dict[str, Metrics]) -> float:
    """The dev score a checkpoint is selected by: weighted F1, averaged over datasets."""
    if not results:
        # What score_by_dataset returns when no utterance has a gold emotion.
        raise ValueError("nothing was scored: no utterance has a gold emotion")
    return sum(m.weighted_f1 for m in results.values()) / len(results)
