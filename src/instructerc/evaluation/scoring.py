"""Scoring a model's predictions per dataset, in each dataset's own classes."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from instructerc.data.dialogue import Dialogue
from instructerc.evaluation.metrics import OUTSIDE, Metrics, compute_metrics
from instructerc.labels.benchmarks import BENCHMARK_LABEL_SETS
from instructerc.labels.label_set import LabelSet
from instructerc.labels.prediction import Prediction
from instructerc.labels.unified import mapping_of


def original_gold(utterance) -> str | None:
    return utterance.extra.get("original_emotion", utterance.emotion)


def score_by_dataset(dialogues: Iterable[Dialogue], predictions: Iterable[Sequence[Prediction]], label_set: LabelSet) -> dict[str, Metrics]:
    """Metrics per source dataset.

    A model with a unified label set is scored on each benchmark's original classes: its
    prediction is mapped back, and a unified label the dataset lacks counts as an error
    (``<outside>``). Other models are scored in their own label set.
    """
    mapping = mapping_of(label_set)
    gold: dict[str, list[str]] = defaultdict(list)
    predicted: dict[str, list[str | None]] = defaultdict(list)
    for dialogue, dialogue_predictions in paired(dialogues, predictions):
        unified_scoring = mapping is not None and mapping.covers(dialogue.dataset)
        for utterance, prediction in zip(dialogue.utterances, dialogue_predictions):
            if utterance.emotion is None:
                continue
            if unified_scoring:
                gold[dialogue.dataset].append(original_gold(utterance))
                back = None if prediction.label is None else (mapping.to_original(dialogue.dataset, prediction.label) or OUTSIDE)
                predicted[dialogue.dataset].append(back)
            else:
                gold[dialogue.dataset].append(utterance.emotion)
                predicted[dialogue.dataset].append(prediction.label)
    results = {}
    for dataset in gold:
        try:
            results[dataset] = compute_metrics(gold[dataset], predicted[dataset], scoring_classes(label_set, dataset))
        except ValueError as error:
            raise ValueError(f"dataset '{dataset}': {error}") from None
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
