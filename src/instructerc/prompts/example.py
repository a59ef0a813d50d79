"""What a prompt is made of, so a budget can cut the right parts and prompts can share prefixes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from instructerc.data.dialogue import Origin


class Part(str, Enum):
    """The role of a piece of prompt text; it decides what the token budget may cut."""

    INSTRUCTION = "instruction"
    HISTORY = "history"  # one past utterance: dropped first, oldest first
    CURRENT = "current"  # the utterance being asked about: never cut
    DEMONSTRATION = "demonstration"  # wording around the retrieved example: kept
    DEMONSTRATION_TEXT = "demonstration_text"  # the retrieved utterance: shortened second
    QUESTION = "question"  # question and label statement: never cut
    FIXED = "fixed"  # separators: never cut


class Task(str, Enum):
    ERC = "erc"
    SPEAKER = "speaker"
    EMOTION_PREDICTION = "emotion_prediction"


@dataclass(frozen=True)
class Segment:
    text: str
    part: Part


@dataclass(frozen=True)
class Example:
    """One instruction-tuning example.

    Attributes:
        task: which task it teaches.
        segments: the prompt, in order; tokenized piece by piece, so identical pieces give
            identical tokens in every prompt and prompts of one dialogue share token prefixes.
        target: what the model should answer (a verbalizer or a speaker label); ``None`` when
            the gold is unknown (inference).
        dataset, dialogue_id, index: which utterance it is about.
        label: the gold canonical label for ERC / emotion prediction, the speaker otherwise.
        origin: the file and line of its dialogue, when it was read from one.
    """

    task: Task
    segments: tuple[Segment, ...]
    target: str | None
    dataset: str
    dialogue_id: str
    index: int
    label: str | None = None
    origin: Origin | None = field(default=None, compare=False)

    @property
    def prompt(self) -> str:
        return "".join(segment.text for segment in self.segments)
