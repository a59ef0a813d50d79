"""The unified label space (UIME): one set of emotions for IEMOCAP, MELD and EmoryNLP.

InstructERC grounds the unified space in Willcox's Feeling Wheel (1982), whose six core
feelings are Mad, Scared, Joyful, Powerful, Peaceful and Sad; neutral is added. Two mappings
ship:

``instructerc``
    Exactly the mapping of the paper's released code (``data_process_mixed.py``): 9 labels.
    IEMOCAP happy->joyful, angry->mad, frustrated->fear; MELD surprise->powerful,
    sadness->sad, joy->joyful, anger->mad; EmoryNLP Scared->fear; every other label keeps
    its name (lower-cased).

``feeling-wheel``
    Ours, following the wheel wherever the paper's mapping places an emotion elsewhere:
    frustration is a feeling of the Mad family on the wheel, not of Scared, so IEMOCAP's
    frustrated becomes ``frustrated`` (family Mad) instead of ``fear``; the wheel's own word
    for the Scared family is used (``scared``, for MELD fear and EmoryNLP Scared); surprise
    is not on the wheel, and forcing it onto Powerful (confident, proud, respected) mixes two
    unrelated feelings, so MELD surprise stays ``surprise``. Disgust is not on the wheel either
    and stays ``disgust``. Where one dataset separates two feelings of one family (IEMOCAP's
    happy and excited, angry and frustrated) both are kept, named by the wheel's words
    (``excited`` is a Joyful feeling on the wheel), so every dataset's classes map one to one
    and a unified model can be scored on each dataset's own classes. 11 labels.

Both mappings are one-to-one per dataset; :meth:`UnifiedMapping.to_original` inverts them, and
a unified label outside a dataset's classes maps back to ``None`` (scored as an error).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

from instructerc.labels.benchmarks import BENCHMARK_LABEL_SETS
from instructerc.labels.label_set import LabelSet


@dataclass(frozen=True)
class UnifiedMapping:
    """A named map from each benchmark's labels onto one unified label set, and back.

    Attributes:
        name: the mapping's name (``instructerc``, ``feeling-wheel``).
        label_set: the unified labels, in label-statement order.
        forward: dataset name -> original canonical label -> unified label.
        families: unified label -> its Feeling Wheel core family (``None``: not on the wheel).
    """

    name: str
    label_set: LabelSet
    forward: Mapping[str, Mapping[str, str]]
    families: Mapping[str, str | None]

    def __post_init__(self) -> None:
        for dataset, table in self.forward.items():
            originals = BENCHMARK_LABEL_SETS[dataset].labels
            if set(table) != set(originals):
                raise ValueError(f"mapping {self.name}: {dataset} must map exactly {originals}")
            targets = list(table.values())
            if len(set(targets)) != len(targets):
                raise ValueError(f"mapping {self.name}: {dataset} is not one-to-one, it could not be scored on its own classes")
            unknown = set(targets) - set(self.label_set.labels)
            if unknown:
                raise ValueError(f"mapping {self.name}: {sorted(unknown)} are not unified labels")
        if set(self.families) != set(self.label_set.labels):
            raise ValueError(f"mapping {self.name}: every unified label needs a family entry")

    def table(self, dataset: str) -> Mapping[str, str]:
        """``dataset``'s original label -> unified label; a dataset the mapping does not cover
        is a KeyError that says which it covers (names are exact: ``meld``, not ``MELD``)."""
        try:
            return self.forward[dataset]
        except (KeyError, TypeError):
            raise KeyError(f"mapping {self.name} does not cover dataset {dataset!r} (it covers {', '.join(self.forward)})") from None

    def to_unified(self, dataset: str, label: str) -> str:
        table = self.table(dataset)
        try:
            return table[label]
        except (KeyError, TypeError):
            raise KeyError(f"{label!r} is not a {dataset} label ({', '.join(table)})") from None

    def to_original(self, dataset: str, unified: str) -> str | None:
        """The dataset's own label for a unified one, or None where the dataset has no such class."""
        for original, target in self.table(dataset).items():
            if target == unified:
                return original
        return None

    def best_original(self, dataset: str, scores: Mapping[str, float]) -> str:
        """The dataset's own label whose unified label scores highest: the answer restricted to
        the classes the dataset has. Ties go to the first in the unified label order, as the
        predicted label's do, so a prediction that is one of the dataset's classes maps back to
        itself (bf16 scores tie exactly often enough to matter: 92 of 2,710 uime dev utterances)."""
        table = self.table(dataset)
        _check_scores(scores, list(table.values()), self.name)
        order = {label: k for k, label in enumerate(self.label_set.labels)}
        return max(table, key=lambda original: (scores.get(table[original], float("-inf")), -order.get(table[original], len(order))))

    def covers(self, dataset: str) -> bool:
        return dataset in self.forward


def _check_scores(scores: Any, needed: list[str], mapping: str) -> None:
    """Refuse scores that cannot rank ``needed`` (the unified labels of a dataset's classes). A
    label left out ranks last, but scores holding none of them (keyed by the dataset's own labels,
    or empty) answered the first class in unified order without a word; a NaN compares false with
    everything and made the answer depend on the order of the classes."""
    if not isinstance(scores, Mapping):
        raise TypeError(f"scores must be a mapping of unified label -> probability, not {type(scores).__name__}")
    present = [label for label in needed if label in scores]
    if not present:
        raise ValueError(
            f"scores hold none of the {mapping} labels {needed} (they are keyed by unified label, as Prediction.scores), "
            f"got {sorted(map(str, scores))[:10]}"
        )
    for label in present:
        value = scores[label]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
            raise ValueError(f"the score of {label!r} must be a number, got {value!r}")


def _renamed(renames: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """Per benchmark, each label (in the benchmark's order) -> its unified label: its ``renames``
    entry, else its own name lower-cased, the rule both mappings follow (docstring above)."""
    return {
        dataset: {label: renames.get(dataset, {}).get(label, label.lower()) for label in labels.labels}
        for dataset, labels in BENCHMARK_LABEL_SETS.items()
    }


# The renames both mappings make: to the wheel's words for the feelings the datasets name otherwise.
_WHEEL_WORDS: dict[str, dict[str, str]] = {
    "iemocap": {"happy": "joyful", "angry": "mad"},
    "meld": {"sadness": "sad", "joy": "joyful", "anger": "mad"},
}

_INSTRUCTERC_LABELS = ("joyful", "sad", "neutral", "mad", "excited", "fear", "disgust", "peaceful", "powerful")

INSTRUCTERC = UnifiedMapping(
    name="instructerc",
    label_set=LabelSet("uime", _INSTRUCTERC_LABELS, _INSTRUCTERC_LABELS),
    forward=_renamed(
        {
            "iemocap": {**_WHEEL_WORDS["iemocap"], "frustrated": "fear"},
            "meld": {**_WHEEL_WORDS["meld"], "surprise": "powerful"},
            "emorynlp": {"Scared": "fear"},
        }
    ),
    families={
        "joyful": "Joyful",
        "sad": "Sad",
        "neutral": None,
        "mad": "Mad",
        "excited": "Joyful",
        "fear": "Scared",
        "disgust": None,
        "peaceful": "Peaceful",
        "powerful": "Powerful",
    },
)

_WHEEL_LABELS = ("neutral", "joyful", "excited", "peaceful", "powerful", "sad", "mad", "frustrated", "scared", "disgust", "surprise")

FEELING_WHEEL = UnifiedMapping(
    name="feeling-wheel",
    label_set=LabelSet("uime:feeling-wheel", _WHEEL_LABELS, _WHEEL_LABELS),
    forward=_renamed({"iemocap": _WHEEL_WORDS["iemocap"], "meld": {**_WHEEL_WORDS["meld"], "fear": "scared"}}),
    families={
        "neutral": None,
        "joyful": "Joyful",
        "excited": "Joyful",
        "peaceful": "Peaceful",
        "powerful": "Powerful",
        "sad": "Sad",
        "mad": "Mad",
        "frustrated": "Mad",
        "scared": "Scared",
        "disgust": None,
        "surprise": None,
    },
)

MAPPINGS: dict[str, UnifiedMapping] = {m.name: m for m in (INSTRUCTERC, FEELING_WHEEL)}


def get_mapping(name: str) -> UnifiedMapping:
    try:
        return MAPPINGS[name]
    except KeyError:
        raise KeyError(f"unknown unified mapping '{name}' (known: {', '.join(MAPPINGS)})") from None


def mapping_of(label_set: LabelSet) -> UnifiedMapping | None:
    """The unified mapping whose label set this is, if any."""
    for mapping in MAPPINGS.values():
        if mapping.label_set.name == label_set.name and mapping.label_set.labels == label_set.labels:
            return mapping
    return None


def unified_forms(dataset: str, original: str) -> list[str]:
    """Every label ``original`` (a canonical label of the benchmark ``dataset``) may be written as
    in a file: itself, its verbalizer, and its unified label under each registered mapping."""
    labels = BENCHMARK_LABEL_SETS[dataset]
    forms = [original, labels.verbalize(original)]
    forms += [m.to_unified(dataset, original) for m in MAPPINGS.values() if m.covers(dataset)]
    return forms
