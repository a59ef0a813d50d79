"""Example builders: a dialogue becomes ERC, speaker identification and emotion prediction examples."""

from __future__ import annotations

import numbers
import zlib
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

from instructerc.data.dialogue import Dialogue
from instructerc.errors import InputError
from instructerc.prompts.example import Example, Task
from instructerc.prompts.templates import Demonstration, PromptTemplate

SPEAKER_VARIANTS = ("paper", "context")


def speaker_slots(dialogues: Sequence[Dialogue]) -> int:
    """How many speaker ids the paper's speaker task offers: the most speakers in one dialogue."""
    return max((len(d.speakers) for d in dialogues), default=1)


def check_index(dialogue: Dialogue, index: int) -> None:
    """Refuse an utterance index outside ``dialogue``: a negative one indexed from the end, but
    the history is counted from the start, so utterance -1 was asked about with no history at
    all (a prompt no model was trained on); one past the end was a bare IndexError."""
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < len(dialogue):
        raise InputError(f"utterance index {index!r} is outside dialogue '{dialogue.id}' of {len(dialogue)} utterance(s)", field="index")


@dataclass
class ExampleBuilder:
    """Builds examples of every task for a template.

    Attributes:
        template: renders the prompts.
        demonstrations: per (dataset, dialogue id, utterance index), the demonstration to show;
            empty when the template has no demonstration part.
        speaker_slots: the number of ``Speaker_k`` ids the paper's speaker task offers.
        speaker_variant: ``paper`` (the utterance alone, ``Speaker_k`` ids) or ``context`` (the
            history and the dialogue's participants as options).
    """

    template: PromptTemplate
    demonstrations: Mapping[tuple[str, str, int], Demonstration] = field(default_factory=dict)
    speaker_slots: int = 9
    speaker_variant: str = "paper"

    def __post_init__(self) -> None:
        if self.speaker_variant not in SPEAKER_VARIANTS:
            raise InputError(
                f"unknown speaker task variant '{self.speaker_variant}' (known: {', '.join(SPEAKER_VARIANTS)})", field="speaker_variant"
            )

    def named(self, dialogue: Dialogue, training: bool) -> bool:
        """Whether a prompt of ``dialogue`` may use the benchmark it names: always at inference;
        in training, all but ``template.unnamed_share`` of the dialogues, chosen by a hash of the
        dialogue's name so every epoch, process and resumed run shows a dialogue the same way."""
        share = self.template.config.unnamed_share
        if not training or not share:
            return True
        return zlib.crc32(f"{dialogue.dataset}\0{dialogue.id}".encode()) / 2**32 >= share

    def erc(self, dialogue: Dialogue, index: int, named: bool = True) -> Example:
        check_index(dialogue, index)
        utterance = dialogue.utterances[index]
        demonstration = self.demonstrations.get((dialogue.dataset, dialogue.id, index))
        segments = self.template.erc(dialogue, index, demonstration, named)
        target = None if utterance.emotion is None else self.template.label_set.verbalize(utterance.emotion)
        return Example(Task.ERC, tuple(segments), target, dialogue.dataset, dialogue.id, index, utterance.emotion, origin=dialogue.origin)

    def emotion_prediction(self, dialogue: Dialogue, index: int, named: bool = True) -> Example:
        check_index(dialogue, index)
        if index == 0:
            # Its prompt would ask to predict from "the above historical utterances" with none
            # above: no such example is ever trained (see eligible), so none is shown either.
            raise InputError(
                f"emotion prediction needs a past utterance: utterance 0 of dialogue '{dialogue.id}' is its first", field="index"
            )
        utterance = dialogue.utterances[index]
        segments = self.template.emotion_prediction(dialogue, index, named)
        target = None if utterance.emotion is None else self.template.label_set.verbalize(utterance.emotion)
        return Example(
            Task.EMOTION_PREDICTION,
            tuple(segments),
            target,
            dialogue.dataset,
            dialogue.id,
            index,
            utterance.emotion,
            origin=dialogue.origin,
        )

    def speaker(self, dialogue: Dialogue, index: int) -> Example:
        check_index(dialogue, index)
        if self.speaker_variant == "paper":
            segments, target = self.template.speaker(dialogue, index, max(self.speaker_slots, len(dialogue.speakers)))
        else:
            segments, target = self.template.speaker_in_context(dialogue, index)
        return Example(Task.SPEAKER, tuple(segments), target, dialogue.dataset, dialogue.id, index, target, origin=dialogue.origin)

    def example(self, task: Task, dialogue: Dialogue, index: int, named: bool = True) -> Example:
        if task is Task.SPEAKER:
            return self.speaker(dialogue, index)  # its prompt lists speakers, not emotions
        return {Task.ERC: self.erc, Task.EMOTION_PREDICTION: self.emotion_prediction}[task](dialogue, index, named)

    def eligible(self, task: Task, dialogue: Dialogue, index: int, training: bool) -> bool:
        """Whether utterance ``index`` yields a ``task`` example: emotion tasks need a gold
        label to train on, and emotion prediction needs at least one past utterance."""
        if task is Task.EMOTION_PREDICTION and index == 0:
            return False
        if training and task is not Task.SPEAKER:
            return dialogue.utterances[index].emotion is not None
        return True

    def examples(self, task: Task, dialogues: Sequence[Dialogue], training: bool = True) -> Iterator[Example]:
        for dialogue in dialogues:
            named = self.named(dialogue, training)
            for index in range(len(dialogue)):
                if self.eligible(task, dialogue, index, training):
                    yield self.example(task, dialogue, index, named)
