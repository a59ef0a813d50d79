"""Everything that determines a prompt, saved beside a model so inference rebuilds it exactly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from instructerc.data.dialogue import Dialogue
from instructerc.files import atomic_write
from instructerc.labels.label_set import LabelSet
from instructerc.prompts.budget import encode_example
from instructerc.prompts.encoding import EncodedExample, SegmentTokenizer
from instructerc.prompts.example import Example, Task
from instructerc.prompts.tasks import ExampleBuilder
from instructerc.prompts.templates import Demonstration, TemplateConfig, build_template
from instructerc.retrieval.index import RetrievalConfig

PROMPTING_FILE = "prompting.json"


@dataclass(frozen=True)
class PromptSetup:
    """The template, label set and limits a model was trained with.

    Attributes:
        template: the template and its switched parts.
        label_set: the labels the model answers in.
        max_length: the token budget of a prompt and its answer.
        retrieval: how demonstrations are found (only used when the template shows them).
        speaker_variant, speaker_slots: the speaker-identification task's form.
    """

    template: TemplateConfig
    label_set: LabelSet
    max_length: int
    retrieval: RetrievalConfig
    speaker_variant: str = "paper"
    speaker_slots: int = 9

    @property
    def uses_demonstrations(self) -> bool:
        return self.template.demonstration

    def builder(self, demonstrations: dict[tuple[str, str, int], Demonstration] | None = None) -> ExampleBuilder:
        return ExampleBuilder(build_template(self.template, self.label_set), demonstrations or {}, self.speaker_slots, self.speaker_variant)

    def encode(
        self, examples: Sequence[Example] | Iterator[Example], tokenizer: SegmentTokenizer, with_target: bool = True, reserve: int = 0
    ) -> list[EncodedExample]:
        """Tokenize and budget; ``reserve`` keeps room for an answer that is not in the example."""
        return [encode_example(e, tokenizer, self.max_length - reserve, self.template.history_stride, with_target) for e in examples]

    def to_dict(self) -> dict[str, Any]:
        from instructerc.config import to_mapping

        return {
            "template": self.template.to_dict(),
            "label_set": self.label_set.to_dict(),
            "max_length": self.max_length,
            "retrieval": to_mapping(self.retrieval),
            "speaker_variant": self.speaker_variant,
            "speaker_slots": self.speaker_slots,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PromptSetup":
        from instructerc.config import from_mapping

        return cls(
            template=TemplateConfig.from_dict(data["template"]),
            label_set=LabelSet.from_dict(data["label_set"]),
            max_length=int(data["max_length"]),
            retrieval=from_mapping(RetrievalConfig, data["retrieval"]),
            speaker_variant=data.get("speaker_variant", "paper"),
            speaker_slots=int(data.get("speaker_slots", 9)),
        )

    def save(self, directory: Path) -> None:
        with atomic_write(directory / PROMPTING_FILE) as handle:
            json.dump(self.to_dict(), handle, indent=2)

    @classmethod
    def load(cls, directory: Path) -> "PromptSetup":
        return cls.from_dict(json.loads((directory / PROMPTING_FILE).read_text(encoding="utf-8")))


def erc_examples(
    setup: PromptSetup, dialogues: Sequence[Dialogue], demonstrations: dict | None = None, training: bool = False
) -> list[Example]:
    return list(setup.builder(demonstrations).examples(Task.ERC, dialogues, training=training))
