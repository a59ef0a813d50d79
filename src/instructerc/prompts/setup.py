"""Everything that determines a prompt, saved beside a model so inference rebuilds it exactly."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from instructerc.data.dialogue import Dialogue
from instructerc.errors import InputError
from instructerc.files import atomic_write
from instructerc.labels.label_set import LabelSet
from instructerc.prompts.budget import PromptTooLong, encode_example
from instructerc.prompts.encoding import EncodedExample, SegmentTokenizer
from instructerc.prompts.example import Example, Task
from instructerc.prompts.tasks import SPEAKER_VARIANTS, ExampleBuilder
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
        source: the ``prompting.json`` it was loaded from (``None``: built in Python), so a prompt
            that cannot fit names the file whose ``max_length`` to change. Not saved, not compared.
    """

    template: TemplateConfig
    label_set: LabelSet
    max_length: int
    retrieval: RetrievalConfig
    speaker_variant: str = "paper"
    speaker_slots: int = 9
    source: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_parts(self)
        # Checked here, not where prompts are budgeted: a max_length of 0 would otherwise surface
        # as "more than max_length=-2", after the answer's reserve, with the model already loaded.
        if self.max_length < 1:
            raise InputError(f"max_length must be a positive number of tokens, not {self.max_length}", field="max_length")
        if self.speaker_slots < 0:
            raise InputError(f"speaker_slots must be >= 0, not {self.speaker_slots}", field="speaker_slots")
        if self.speaker_variant not in SPEAKER_VARIANTS:
            known = ", ".join(SPEAKER_VARIANTS)
            raise InputError(f"unknown speaker_variant '{self.speaker_variant}' (known: {known})", field="speaker_variant")

    @property
    def uses_demonstrations(self) -> bool:
        return self.template.demonstration

    def builder(self, demonstrations: dict[tuple[str, str, int], Demonstration] | None = None) -> ExampleBuilder:
        template = build_template(self.template, self.label_set, line_budget=self.max_length)
        return ExampleBuilder(template, demonstrations or {}, self.speaker_slots, self.speaker_variant)

    def encode(
        self, examples: Sequence[Example] | Iterator[Example], tokenizer: SegmentTokenizer, with_target: bool = True, reserve: int = 0
    ) -> list[EncodedExample]:
        """Tokenize and budget; ``reserve`` keeps room for an answer that is not in the example."""
        return [self._encode_one(e, tokenizer, with_target, reserve) for e in examples]

    def encode_each(
        self, examples: Sequence[Example], tokenizer: SegmentTokenizer, with_target: bool = True, reserve: int = 0
    ) -> list[EncodedExample | PromptTooLong]:
        """As :meth:`encode`, but a prompt that cannot fit is returned as its error, not raised:
        a caller that cuts what does not fit then sees every such prompt in one pass, where the
        first error alone would make it re-encode everything once per cut utterance."""
        out: list[EncodedExample | PromptTooLong] = []
        for example in examples:
            try:
                out.append(self._encode_one(example, tokenizer, with_target, reserve))
            except PromptTooLong as error:
                out.append(error)
        return out

    def _encode_one(self, example: Example, tokenizer: SegmentTokenizer, with_target: bool, reserve: int) -> EncodedExample:
        stride = self.template.history_stride
        return encode_example(example, tokenizer, self.max_length, stride, with_target, reserve=reserve, setting=self.source)

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
    def from_dict(cls, data: Mapping[str, Any]) -> "PromptSetup":
        """The setup :meth:`to_dict` wrote; anything else (a hand-edited or damaged file) is an
        :class:`InputError` naming the field."""
        from instructerc.config import from_mapping

        if not isinstance(data, Mapping):
            raise InputError(f"expected an object of keys, got {type(data).__name__}")
        missing = [key for key in ("template", "label_set", "max_length", "retrieval") if key not in data]
        if missing:
            raise InputError(f"missing required key(s) {missing}")
        return cls(
            template=from_mapping(TemplateConfig, data["template"], "template"),
            label_set=_label_set(data["label_set"]),
            max_length=_integer(data["max_length"], "max_length"),
            retrieval=from_mapping(RetrievalConfig, data["retrieval"], "retrieval"),
            speaker_variant=_string(data.get("speaker_variant", "paper"), "speaker_variant"),
            speaker_slots=_integer(data.get("speaker_slots", 9), "speaker_slots"),
        )

    def save(self, directory: Path) -> None:
        """Writes the setup beside a model, its encoder folder and cache folder by absolute path
        (as the manifest records the backbone): inference may run from any working directory."""
        import os

        from instructerc.retrieval.encoder import recorded_encoder

        cache_dir = self.retrieval.cache_dir
        retrieval = replace(
            self.retrieval,
            encoder=recorded_encoder(self.retrieval.encoder),
            cache_dir=None if not cache_dir else os.path.abspath(Path(cache_dir).expanduser()),
        )
        with atomic_write(directory / PROMPTING_FILE) as handle:
            json.dump(replace(self, retrieval=retrieval).to_dict(), handle, indent=2)

    @classmethod
    def load(cls, directory: Path) -> "PromptSetup":
        """The setup saved in a model directory, or an :class:`InputError` naming the file (and field)."""
        file = Path(directory) / PROMPTING_FILE
        if not file.is_file():
            raise InputError("missing: every model directory has one (instructerc train writes it)", path=file)
        try:
            data = json.loads(file.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError:
            raise InputError("not UTF-8 text", path=file) from None
        except json.JSONDecodeError as error:
            raise InputError(f"not valid JSON: {error.msg} (column {error.colno})", path=file, line=error.lineno) from None
        except OSError as error:
            raise InputError(f"cannot be read: {error.strerror or error}", path=file) from None
        try:
            return replace(cls.from_dict(data), source=file)
        except InputError as error:
            raise InputError(error.message, path=file, field=error.field) from None


def _check_parts(setup: PromptSetup) -> None:
    """Refuse parts of the wrong type by field, as a TypeError: built in Python, a template given
    by name or a label set as a list was kept, and failed later with an AttributeError from
    inside prompt building; a ``max_length`` of ``"512"`` failed on a bare ``'<' not supported``."""
    for name, kind in (("template", TemplateConfig), ("label_set", LabelSet), ("retrieval", RetrievalConfig)):
        value = getattr(setup, name)
        if not isinstance(value, kind):
            raise TypeError(f"PromptSetup.{name} must be a {kind.__name__}, not {type(value).__name__} {value!r:.60}")
    for name in ("max_length", "speaker_slots"):
        value = getattr(setup, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"PromptSetup.{name} must be a whole number, not {type(value).__name__} {value!r:.60}")
    if not isinstance(setup.speaker_variant, str):
        raise TypeError(f"PromptSetup.speaker_variant must be a string, not {type(setup.speaker_variant).__name__}")


def _integer(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"expected an integer, got {value!r}", field=field)
    return value


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"expected a string, got {value!r}", field=field)
    return value


def _label_set(data: Any) -> LabelSet:
    """A saved label set, checked: its own checks (duplicates, empty words) become InputErrors."""
    fields = ("name", "labels", "verbalizers")
    if not isinstance(data, Mapping) or any(key not in data for key in fields):
        raise InputError(f"expected an object with {', '.join(fields)}", field="label_set")
    for key in ("labels", "verbalizers"):
        # A string would pass tuple() as a tuple of its characters.
        if not isinstance(data[key], list) or not all(isinstance(word, str) for word in data[key]):
            raise InputError(f"expected a list of strings, got {data[key]!r}", field=f"label_set.{key}")
    try:
        return LabelSet(_string(data["name"], "label_set.name"), tuple(data["labels"]), tuple(data["verbalizers"]))
    except ValueError as error:
        if isinstance(error, InputError):
            raise
        raise InputError(str(error), field="label_set") from None


def erc_examples(
    setup: PromptSetup, dialogues: Sequence[Dialogue], demonstrations: dict | None = None, training: bool = False
) -> list[Example]:
    return list(setup.builder(demonstrations).examples(Task.ERC, dialogues, training=training))
