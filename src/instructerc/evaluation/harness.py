"""Running a model over dialogues in bounded chunks, writing its predictions, scoring them."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence, TypeVar

from instructerc.data.dialogue import Dialogue
from instructerc.data.jsonl import dialogue_record, write_record
from instructerc.errors import InputError
from instructerc.evaluation.metrics import OUTSIDE
from instructerc.evaluation.results import SystemResult
from instructerc.evaluation.scoring import mapping_of, original_gold, score_by_dataset
from instructerc.labels.benchmarks import BENCHMARK_LABEL_SETS
from instructerc.labels.label_set import LabelSet
from instructerc.labels.prediction import Prediction
from instructerc.labels.unified import UnifiedMapping

CHUNK = 64
T = TypeVar("T")


def check_chunk_size(size: int) -> None:
    if size < 1:
        raise InputError("the chunk size must be at least 1", field="chunk-size")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of at most ``size``, read lazily."""
    check_chunk_size(size)
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def prediction_fields(prediction: Prediction, mode: str) -> dict[str, Any]:
    """The keys a prediction adds to an utterance of the user format."""
    fields: dict[str, Any] = {"predicted_emotion": prediction.label}
    if mode == "score":
        fields["emotion_scores"] = dict(prediction.scores)
    else:
        fields["generated"] = prediction.generated
    if prediction.truncated:
        fields["truncated"] = True
    return fields


def progress_bar(total: int | None, enabled: bool, unit: str = "utt") -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=not enabled, dynamic_ncols=True)


def predict_all(
    predictor: Any, dialogues: Sequence[Dialogue], mode: str, paper_parsing: bool, chunk: int = CHUNK, progress: bool = True
) -> list[list[Prediction]]:
    """Predictions for every utterance, ``chunk`` dialogues at a time, with a progress bar."""
    predictions: list[list[Prediction]] = []
    with progress_bar(sum(len(d) for d in dialogues), progress) as bar:
        for batch in chunks(dialogues, chunk):
            predictions.extend(predictor.predict(batch, mode=mode, paper_parsing=paper_parsing, progress=bar))
    return predictions


def warn_unscored(dialogues: Sequence[Dialogue], path: Path | None = None) -> None:
    """One line on stderr when some utterances have no gold ``emotion``: they are predicted but
    not scored, and the figures describe the others only. An ``original_emotion`` alone is named,
    as a user may take it for the gold."""
    utterances = [u for d in dialogues for u in d.utterances]
    unscored = [u for u in utterances if u.emotion is None]
    if not unscored or len(unscored) == len(utterances):  # none at all is refused by check_scorable
        return
    where = f"{path}: " if path is not None else ""
    original = sum("original_emotion" in u.extra for u in unscored)
    note = f"; {original} of them give only 'original_emotion', which is not read as the gold" if original else ""
    print(
        f"instructerc: warning: {where}{len(unscored)} of {len(utterances)} utterances have no gold 'emotion' and are not scored{note}",
        file=sys.stderr,
    )


def check_scorable(dialogues: Sequence[Dialogue], label_set: LabelSet, path: Path | None = None) -> None:
    """An :class:`InputError` unless every gold emotion is a class a model of ``label_set`` is
    scored on; it names every unknown label at once, the labels accepted, and what reads them
    (``path``: the data, named by the error)."""
    mapping = mapping_of(label_set)
    labelled = unified_gold = False
    unknown: dict[str, set[str]] = {}  # dataset -> gold labels outside its classes
    accepted: dict[str, tuple[str, ...]] = {}
    for dialogue in dialogues:
        unified = mapping is not None and mapping.covers(dialogue.dataset)
        classes = BENCHMARK_LABEL_SETS[dialogue.dataset].labels if unified else label_set.labels
        for utterance in dialogue.utterances:
            if utterance.emotion is None:
                continue
            labelled = True
            gold = original_gold(utterance) if unified else utterance.emotion
            if gold not in classes:
                unknown.setdefault(dialogue.dataset, set()).add(str(gold))
                accepted[dialogue.dataset] = classes
                unified_gold = unified_gold or "original_emotion" in utterance.extra
    if unknown:
        parts = [
            f"{', '.join(repr(g) for g in sorted(golds))} in '{dataset}' (accepted: {', '.join(accepted[dataset])})"
            for dataset, golds in unknown.items()
        ]
        raise InputError(
            f"gold emotions that are not classes this model (label set {label_set.name}) is scored on: {'; '.join(parts)}; "
            + _scorable_hint(mapping, list(unknown), unified_gold),
            path=path,
            field="emotion",
        )
    if not labelled:
        raise InputError("the dialogues have no gold emotions to score against", path=path, field="emotion")


def _scorable_hint(mapping: UnifiedMapping | None, datasets: list[str], unified_gold: bool) -> str:
    """What reads the unknown gold labels of ``datasets`` in the model's classes."""
    if mapping is None:
        if unified_gold:
            # The data was unified (--labels uime, or a file exported so) for a model of its own labels.
            return (
                "they are unified labels, and this model answers in its own: give it the data in those (a benchmark read "
                "with --labels original, or exported so)"
            )
        return "--label-set NAME reads JSONL emotions in a known label set"
    hints = []
    if any(not mapping.covers(d) for d in datasets):
        known = "|".join(n for n in BENCHMARK_LABEL_SETS if mapping.covers(n))
        hints.append(f"--label-set {known} maps a known dataset's labels onto this model's")
    if any(mapping.covers(d) for d in datasets):
        hints.append(
            "a dialogue that names its dataset is scored on that dataset's own classes: --labels uime reads its gold in them "
            "(any spelling), --label-set uime or uime:feeling-wheel as unified labels"
        )
    return "; ".join(hints)


def gold_in_model_space(
    dialogues: Sequence[Dialogue], gold_label_set: str | None, label_set: LabelSet, path: Path | None = None
) -> list[Dialogue]:
    """User dialogues whose gold emotions are a known dataset's labels (``--label-set meld``),
    put where a unified model is scored: each becomes a dialogue of that dataset with its gold
    mapped through the registered mapping (the original kept), exactly as the benchmark's own
    dialogues are. A dialogue that names another benchmark is refused (``path``: the file named):
    made MELD's, it would be scored on MELD's classes and written back as MELD's without a word.
    Anything else is returned as it is."""
    from instructerc.data.registry import unify

    mapping = mapping_of(label_set)
    if gold_label_set not in BENCHMARK_LABEL_SETS or mapping is None or not mapping.covers(gold_label_set):
        return list(dialogues)
    if any("original_emotion" in u.extra for d in dialogues for u in d.utterances):
        return list(dialogues)  # already unified (a file exported with --labels uime)
    for dialogue in dialogues:
        if dialogue.dataset in BENCHMARK_LABEL_SETS and dialogue.dataset != gold_label_set:
            raise InputError(
                f"dialogue '{dialogue.id}' names dataset '{dialogue.dataset}', but --label-set {gold_label_set} says every gold "
                f"label is {gold_label_set}'s: give --labels uime instead, which reads each dialogue's gold in the labels of "
                "the dataset it names",
                path=path,
                field="dataset",
            )
    return unify([d if d.dataset == gold_label_set else replace(d, dataset=gold_label_set) for d in dialogues], mapping)


def llm_result(
    dialogues: Sequence[Dialogue], predictions: Sequence[Sequence[Prediction]], label_set: LabelSet, settings: dict[str, Any]
) -> SystemResult:
    unified = mapping_of(label_set) is not None
    return SystemResult(
        kind="llm",
        by_dataset=score_by_dataset(dialogues, predictions, label_set, intervals=True),
        settings={**settings, "label_set": label_set.name, "unified": unified},
    )


def original_emotion(mapping: UnifiedMapping, dataset: str, prediction: Prediction, restrict: bool) -> str | None:
    """A unified prediction in the words of the dataset the dialogue names; a label outside the
    dataset's classes is :data:`OUTSIDE` (scoring counts it as an error). ``restrict`` (what
    ``predict`` shows users): with label scores, the best of the dataset's own classes instead,
    so a MELD user never reads a label MELD lacks; without scores (generate mode), ``None`` for a
    label outside them, as for an invalid generation, rather than the scorer's marker."""
    if prediction.label is None:
        return None
    if restrict and prediction.scores:
        return mapping.best_original(dataset, prediction.scores)
    return mapping.to_original(dataset, prediction.label) or (None if restrict else OUTSIDE)


def write_prediction_records(
    handle: IO[str],
    dialogues: Sequence[Dialogue],
    predictions: Sequence[Sequence[Prediction]],
    mode: str,
    label_set: LabelSet | None = None,
    restrict_to_dataset: bool = False,
) -> None:
    """``restrict_to_dataset``: see :func:`original_emotion`."""
    mapping = mapping_of(label_set) if label_set is not None else None
    for dialogue, predicted in zip(dialogues, predictions):
        fields = [prediction_fields(p, mode) for p in predicted]
        if mapping is not None and mapping.covers(dialogue.dataset):
            for field, p in zip(fields, predicted):
                field["predicted_original_emotion"] = original_emotion(mapping, dialogue.dataset, p, restrict_to_dataset)
        write_record(handle, dialogue_record(dialogue, fields))
