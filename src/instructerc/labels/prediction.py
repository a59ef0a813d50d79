"""The prediction for one utterance: a record, so scoring and storage need not import the predictor.

It sits at the labels layer (a label of a label set, with its probabilities) so evaluation,
baselines and the service store reach it without loading inference and its model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Sized, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Prediction:
    """The prediction for one utterance.

    Attributes:
        label: a canonical label of the model's label set; ``None`` when generation produced
            something that is not a label (invalid).
        scores: label -> probability (``score`` mode), in label-set order.
        generated: the raw generated text (``generate`` mode).
        truncated: the utterance was longer than the prompt budget and was cut (its start and
            end kept, :mod:`instructerc.prompts.fitting`) before it was labelled.
        cut_text: when ``truncated``, the text the model read in its place: the history of the
            dialogue's later utterances shows it so too.
    """

    label: str | None
    scores: dict[str, float] = field(default_factory=dict)
    generated: str | None = None
    truncated: bool = False
    cut_text: str | None = None


def per_dialogue(flat: Sequence[T], dialogues: Sequence[Sized]) -> list[list[T]]:
    """Per-utterance results of several dialogues, run as one flat list (dialogue after dialogue,
    utterance after utterance), back into one list per dialogue."""
    expected = sum(len(dialogue) for dialogue in dialogues)
    # A short or long list means the results and the dialogues went out of step: slicing would
    # hand one dialogue's predictions to the next without a word.
    if len(flat) != expected:
        raise ValueError(f"{len(flat)} results for {expected} utterances in {len(dialogues)} dialogues")
    out, start = [], 0
    for dialogue in dialogues:
        out.append(list(flat[start : start + len(dialogue)]))
        start += len(dialogue)
    return out
