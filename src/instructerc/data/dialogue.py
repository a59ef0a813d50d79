"""The one data model every part of the toolkit reads: dialogues of utterances."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from instructerc.errors import InputError

SPLITS: tuple[str, ...] = ("train", "dev", "test")
_SPLIT_ALIASES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev", "test": "test"}


def canonical_split(name: str) -> str:
    """Map the usual spellings of a split name (``valid``, ``validation``) onto ``train|dev|test``."""
    try:
        return _SPLIT_ALIASES[name.lower()]
    except (KeyError, AttributeError):  # AttributeError: not a string (None, a number)
        raise InputError(f"unknown split '{name}' (expected one of: train, dev, test)") from None


@dataclass(frozen=True)
class Origin:
    """Where a dialogue was read from: a file and the line its record starts on."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Utterance:
    """One turn of a conversation.

    Attributes:
        speaker: who said it, as the source names them (a name, or ``Speaker_0`` where the
            source has only per-dialogue speaker positions).
        text: what was said, never empty. A prediction reads the speaker and the text trimmed,
            the speaker in one Unicode form (:func:`~instructerc.data.text.canonical_speaker`),
            as the file readers do.
        emotion: the gold emotion as a canonical label of the dialogue's label set, or ``None``
            for unlabelled data; a prediction never reads it.
        extra: any other fields of the source, passed through untouched (JSONL keys the toolkit
            does not know, the original label of a unified dataset, ...).
    """

    speaker: str
    text: str
    emotion: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dialogue:
    """A conversation: an id, where it comes from, and its utterances in order.

    Attributes:
        id: unique within its dataset and split where a corpus is read. A dialogue given to
            :meth:`~instructerc.inference.predictor.Predictor.predict` may share its id with
            another (each gets its own labels), and an ``int`` id is read as its text.
        dataset: the source dataset's name (``meld``, ``emorynlp``, ``iemocap`` or a user name);
            for the unified dataset it stays the source, so a model can be scored per dataset.
            Empty for a dialogue to predict whose record names none
            (:data:`instructerc.data.jsonl.UNNAMED_DATASET`).
        split: ``train``, ``dev`` or ``test``.
        utterances: in the order they were spoken.
        extra: other per-dialogue fields, passed through.
        origin: the file and line it was read from (JSONL), so errors found long after reading
            (a prompt too long to train on) can name them; ``None`` for dialogues built in Python.
    """

    id: str
    dataset: str
    split: str
    utterances: tuple[Utterance, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Not part of a dialogue's identity: the same dialogue read from two files is the same dialogue.
    origin: Origin | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def speakers(self) -> tuple[str, ...]:
        """The participants, in order of first appearance."""
        return tuple(dict.fromkeys(u.speaker for u in self.utterances))

    def with_utterances(self, utterances: tuple[Utterance, ...]) -> "Dialogue":
        return replace(self, utterances=tuple(utterances))

    def without_emotions(self) -> "Dialogue":
        """The same dialogue with no gold emotion on any utterance (what a prediction may see)."""
        if all(u.emotion is None for u in self.utterances):
            return self
        return self.with_utterances(tuple(replace(u, emotion=None) for u in self.utterances))
