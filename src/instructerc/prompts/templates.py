"""Prompt templates: the InstructERC retrieval template and a cache-friendly variant.

A template renders the three tasks for one utterance of a dialogue. Its four parts
(instruction, history, label statement, demonstration) are switched by :class:`TemplateConfig`,
so ablations need no code change. The wording of ``instructerc`` is the paper's released code
(``data_process.py``) to the character, including its ``< Speaker:"...">`` spacing; the released
code has no retrieval, so the demonstration sentence is ours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from instructerc.data.dialogue import Dialogue
from instructerc.errors import InputError
from instructerc.labels.label_set import LabelSet
from instructerc.labels.registry import did_you_mean
from instructerc.labels.unified import mapping_of
from instructerc.prompts.example import Part, Segment
from instructerc.retrieval.demonstration import Demonstration


@dataclass(frozen=True)
class TemplateConfig:
    """How prompts are built.

    Attributes:
        name: a registered template (``instructerc``: one self-contained prompt per utterance, the
            paper's; ``dialogue-prefix``: prompts of one dialogue share the dialogue as a prefix and
            end in a short question, so the prefix's key/value cache is reused across utterances;
            ``dialogue-stream``: no question at all, the emotion follows the utterance's line, so
            the prompts of a dialogue are prefixes of each other and one pass scores them all).
        instruction: include the instruction sentence.
        history: include the dialogue history (the window of past utterances, with speakers).
        label_statement: list the allowed emotions in the question.
        demonstration: include the retrieved training utterance and its emotion.
        window: how many past utterances the ``instructerc`` history shows (paper: 12). The
            ``dialogue-prefix`` template shows the history from the dialogue start and ignores it.
        speaker_format: ``name`` shows speakers as the data names them; ``index`` as ``Speaker_0``,
            ``Speaker_1``... in order of first appearance, as the COSMIC pickles do.
        history_stride: when the budget forces history out, drop it in steps of this many
            utterances (1 drops exactly what is needed; larger steps keep consecutive prompts
            sharing one prefix, which the ``dialogue-prefix`` template relies on).
        dataset_classes: with a unified label set, a dialogue that names a benchmark the mapping
            covers (``"dataset": "emorynlp"``) is told only that benchmark's classes in the label
            statement; any other dialogue is told every label. One unified label can mean two
            things (the paper's ``powerful`` is MELD's surprise and EmoryNLP's Powerful); the
            statement tells the model which benchmark's sense applies.
        unnamed_share: with ``dataset_classes``, the share of training dialogues shown every
            label as if they named no benchmark, so that input naming none (a user's own
            conversations) stays in the training distribution. Inference never drops a name.
    """

    name: str = "instructerc"
    instruction: bool = True
    history: bool = True
    label_statement: bool = True
    demonstration: bool = True
    window: int = 12
    speaker_format: str = "name"
    history_stride: int = 1
    dataset_classes: bool = False
    unnamed_share: float = 0.0

    def __post_init__(self) -> None:
        _check_types(self)
        if self.name not in TEMPLATES:
            hint = did_you_mean(self.name, list(TEMPLATES))
            raise InputError(f"unknown template '{self.name}'{hint} (known: {', '.join(TEMPLATES)})", field="template.name")
        if self.window < 0:
            raise InputError("window must be >= 0", field="template.window")
        if self.speaker_format not in ("name", "index"):
            raise InputError("speaker_format must be 'name' or 'index'", field="template.speaker_format")
        if self.history_stride < 1:
            raise InputError("history_stride must be >= 1", field="template.history_stride")
        if not 0.0 <= self.unnamed_share <= 1.0:
            raise InputError(f"unnamed_share must be between 0 and 1, not {self.unnamed_share!r}", field="template.unnamed_share")
        if self.dataset_classes and not self.label_statement:
            raise InputError(
                "dataset_classes chooses what the label statement lists: it needs label_statement: true", field="template.dataset_classes"
            )
        if self.unnamed_share and not self.dataset_classes:
            raise InputError("unnamed_share only applies with dataset_classes: true", field="template.unnamed_share")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Left out while off, so a model that does not use them loads in versions before them.
        for key in _LATER_FIELDS:
            if data[key] == TemplateConfig.__dataclass_fields__[key].default:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TemplateConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown template keys {sorted(unknown)} (known: {sorted(known)})", field="template")
        return cls(**data)


_SWITCHES = ("instruction", "history", "label_statement", "demonstration")
_LATER_FIELDS = ("dataset_classes", "unnamed_share")


def _check_types(config: TemplateConfig) -> None:
    """Refuse a part switch that is not a bool and a count that is not a whole number, naming the
    field: built in Python (a recipe's values are typed when read), ``demonstration="no"`` was
    truthy and switched the part on, and ``window=2.5`` failed deep in prompt building once a
    dialogue outgrew the window."""
    if not isinstance(config.name, str):
        raise InputError(f"the template name must be a string, not {config.name!r}", field="template.name")
    for name in _SWITCHES + ("dataset_classes",):
        value = getattr(config, name)
        if not isinstance(value, bool):
            raise InputError(f"{name} must be True or False, got {value!r}", field=f"template.{name}")
    for name in ("window", "history_stride"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name} must be a whole number, got {value!r}", field=f"template.{name}")
    share = config.unnamed_share
    if isinstance(share, bool) or not isinstance(share, (int, float)):
        raise InputError(f"unnamed_share must be a number between 0 and 1, got {share!r}", field="template.unnamed_share")


@dataclass(frozen=True)
class Wording:
    """The sentences of a template; a new template is new wording plus a layout."""

    instruction: str = "Now you are expert of sentiment and emotional analysis. "
    history_open: str = "The following conversation noted between '### ###' involves several speakers. ### "
    history_close: str = " ### "
    line: str = '\t {speaker}:"{text}"'
    question: str = "Please select the emotional label of <{utterance}>{labels}:"
    label_options: str = " from <{options}>"
    demonstration_open: str = 'Here is a demonstration: the utterance <"'
    demonstration_close: str = '"> has the emotional label <{label}>. '
    speaker_question: str = "Please select the Speaker label of the utterance <Speaker: {text}>{options}:"
    speaker_in_context_question: str = 'Please select the speaker of the next utterance <"{text}">{options}:'
    prediction_close: str = "###"
    prediction_question: str = "Based on the above historical utterances, next utterance is spoken by <{speaker}>, please predict the emotion states of <{speaker}>{labels}:"  # noqa: E501
    prefix_labels: str = "Label the emotion of each utterance with one of <{options}>. "
    prefix_question: str = "The emotional label of the last utterance is:"


PAPER_WORDING = Wording()


class PromptTemplate:
    """Renders prompt segments for one utterance; subclasses choose the layout."""

    def __init__(
        self, config: TemplateConfig, label_set: LabelSet, wording: Wording = PAPER_WORDING, *, line_budget: int | None = None
    ) -> None:
        """``line_budget``: the most tokens a prompt may hold (its ``max_length``), or ``None``; see
        :meth:`history_lines`."""
        self.config = config
        self.label_set = label_set
        self.wording = wording
        self.line_budget = line_budget
        # The speakers of the dialogue whose prompts are being built, numbered once: a dialogue's
        # prompts are built one after another, and numbering them per line cost a long dialogue
        # its length for every line of every prompt.
        self._numbered: tuple[Dialogue, dict[str, int]] | None = None
        self.mapping = mapping_of(label_set) if config.dataset_classes else None
        if config.dataset_classes and self.mapping is None:
            raise InputError(
                f"dataset_classes needs a unified label set (uime or uime:feeling-wheel), not '{label_set.name}'",
                field="template.dataset_classes",
            )

    # -- shared pieces ---------------------------------------------------------------------------
    def speaker_name(self, dialogue: Dialogue, index: int) -> str:
        speaker = dialogue.utterances[index].speaker
        if self.config.speaker_format == "index":
            return f"Speaker_{self._speaker_numbers(dialogue)[speaker]}"
        return speaker

    def _speaker_numbers(self, dialogue: Dialogue) -> dict[str, int]:
        if self._numbered is None or self._numbered[0] is not dialogue:
            self._numbered = (dialogue, {speaker: k for k, speaker in enumerate(dialogue.speakers)})
        return self._numbered[1]

    def participants(self, dialogue: Dialogue) -> list[str]:
        if self.config.speaker_format == "index":
            return [f"Speaker_{k}" for k in range(len(dialogue.speakers))]
        return list(dialogue.speakers)

    def line(self, dialogue: Dialogue, index: int, part: Part) -> Segment:
        text = self.wording.line.format(speaker=self.speaker_name(dialogue, index), text=dialogue.utterances[index].text)
        return Segment(text, part)

    def stated_labels(self, dialogue: Dialogue, named: bool = True) -> list[str]:
        """The verbalizers the label statement lists for ``dialogue``: its benchmark's classes
        under ``dataset_classes`` when it names one (and ``named``), else every label."""
        if self.mapping is not None and named and self.mapping.covers(dialogue.dataset):
            own = set(self.mapping.table(dialogue.dataset).values())
            return [self.label_set.verbalize(label) for label in self.label_set.labels if label in own]
        return list(self.label_set.verbalizers)

    def label_options(self, dialogue: Dialogue, named: bool = True) -> str:
        if not self.config.label_statement:
            return ""
        return self.wording.label_options.format(options=", ".join(self.stated_labels(dialogue, named)))

    def instruction(self) -> list[Segment]:
        return [Segment(self.wording.instruction, Part.INSTRUCTION)] if self.config.instruction else []

    def demonstration(self, demonstration: Demonstration | None) -> list[Segment]:
        if not self.config.demonstration or demonstration is None:
            return []
        return [
            Segment(self.wording.demonstration_open, Part.DEMONSTRATION),
            Segment(demonstration.text, Part.DEMONSTRATION_TEXT),
            Segment(self.wording.demonstration_close.format(label=self.label_set.verbalize(demonstration.label)), Part.DEMONSTRATION),
        ]

    def history_lines(self, dialogue: Dialogue, start: int, stop: int) -> list[Segment]:
        """The lines of utterances ``start`` to ``stop``, less those no prompt could keep: a line
        is at least one token, so a prompt of ``line_budget`` tokens keeps at most that many, and
        the budget drops the oldest first, in steps of ``history_stride``. Only whole steps the
        budget would certainly drop are left out, so the prompt it keeps is the same; a dialogue
        of thousands of turns no longer builds and tokenizes all of them for every prompt."""
        surplus = stop - start - 1 - (self.line_budget if self.line_budget is not None else stop)
        if surplus > 0:
            start += surplus // self.config.history_stride * self.config.history_stride
        return [self.line(dialogue, i, Part.HISTORY) for i in range(start, stop)]

    def window_start(self, index: int) -> int:
        return max(0, index - self.config.window)

    # -- tasks -----------------------------------------------------------------------------------
    def erc(self, dialogue: Dialogue, index: int, demonstration: Demonstration | None, named: bool = True) -> list[Segment]:
        """``named``: whether the prompt may use the benchmark the dialogue names (see
        ``TemplateConfig.dataset_classes``); training turns it off for a share of dialogues."""
        raise NotImplementedError

    def emotion_prediction(self, dialogue: Dialogue, index: int, named: bool = True) -> list[Segment]:
        """From the history before ``index`` and who speaks next, the emotion of utterance ``index``.

        The paper's code names the next speaker by a bare number (``<0>``); the speaker is shown
        here as in the history lines (a name, or ``Speaker_0``), so the question refers to them.
        """
        w = self.wording
        segments = self.instruction()
        if self.config.history:
            segments.append(Segment(w.history_open, Part.FIXED))
            segments += self.history_lines(dialogue, self.window_start(index), index)
        question = w.prediction_question.format(speaker=self.speaker_name(dialogue, index), labels=self.label_options(dialogue, named))
        segments.append(Segment(w.prediction_close + question, Part.QUESTION))
        return segments

    def speaker(self, dialogue: Dialogue, index: int, slots: int) -> tuple[list[Segment], str]:
        """The paper's speaker identification: the utterance alone, a ``Speaker_k`` among ``slots`` ids."""
        options = ", ".join(f"Speaker_{k}" for k in range(slots))
        text = dialogue.utterances[index].text
        question = self.wording.speaker_question.format(text=text, options=f" from <{options}>")
        target = f"Speaker_{dialogue.speakers.index(dialogue.utterances[index].speaker)}"
        return self.instruction() + [Segment(question, Part.CURRENT)], target

    def speaker_in_context(self, dialogue: Dialogue, index: int) -> tuple[list[Segment], str]:
        """Variant: the history before ``index``, and the dialogue's participants as the options."""
        w = self.wording
        segments = self.instruction()
        if self.config.history:
            segments.append(Segment(w.history_open, Part.FIXED))
            segments += self.history_lines(dialogue, self.window_start(index), index)
            segments.append(Segment(w.history_close, Part.FIXED))
        options = f" from <{', '.join(self.participants(dialogue))}>"
        question = w.speaker_in_context_question.format(text=dialogue.utterances[index].text, options=options)
        return segments + [Segment(question, Part.CURRENT)], self.speaker_name(dialogue, index)


class InstructERCTemplate(PromptTemplate):
    """The paper's retrieval template: a self-contained prompt per utterance, window W."""

    def erc(self, dialogue: Dialogue, index: int, demonstration: Demonstration | None, named: bool = True) -> list[Segment]:
        w = self.wording
        segments = self.instruction()
        if self.config.history:
            segments.append(Segment(w.history_open, Part.FIXED))
            segments += self.history_lines(dialogue, self.window_start(index), index)
            segments.append(self.line(dialogue, index, Part.CURRENT))
            segments.append(Segment(w.history_close, Part.FIXED))
        segments += self.demonstration(demonstration)
        # The paper quotes the last history line, tab stripped: '< Speaker_0:"...">'.
        utterance = self.line(dialogue, index, Part.CURRENT).text.lstrip("\t")
        segments.append(Segment(w.question.format(utterance=utterance, labels=self.label_options(dialogue, named)), Part.QUESTION))
        return segments


class DialoguePrefixTemplate(PromptTemplate):
    """Cache-friendly: instruction and label statement first, then the dialogue from its start,
    then a short per-utterance question. The prompt for utterance t is a prefix of the prompt
    for t+1 up to the question, so one key/value cache serves the whole dialogue."""

    def header(self, dialogue: Dialogue, named: bool = True) -> list[Segment]:
        w = self.wording
        segments = self.instruction()
        segments.append(Segment(w.history_open.removesuffix("### "), Part.FIXED))
        if self.config.label_statement:
            segments.append(Segment(w.prefix_labels.format(options=", ".join(self.stated_labels(dialogue, named))), Part.QUESTION))
        segments.append(Segment("### ", Part.FIXED))
        return segments

    def erc(self, dialogue: Dialogue, index: int, demonstration: Demonstration | None, named: bool = True) -> list[Segment]:
        segments = self.header(dialogue, named)
        if self.config.history:
            segments += self.history_lines(dialogue, 0, index)
        segments.append(self.line(dialogue, index, Part.CURRENT))
        # Everything after the current line is this utterance's own branch: the dialogue before
        # it is shared with the next utterance's prompt.
        segments.append(Segment(self.wording.history_close, Part.FIXED))
        segments += self.demonstration(demonstration)
        segments.append(Segment(self.wording.prefix_question, Part.QUESTION))
        return segments

    def emotion_prediction(self, dialogue: Dialogue, index: int, named: bool = True) -> list[Segment]:
        """Shares the dialogue prefix too: the history before ``index``, then the question."""
        w = self.wording
        segments = self.header(dialogue, named)
        if self.config.history:
            segments += self.history_lines(dialogue, 0, index)
        question = w.history_close + w.prediction_question.format(
            speaker=self.speaker_name(dialogue, index), labels=self.label_options(dialogue, named)
        )
        return segments + [Segment(question, Part.QUESTION)]


class DialogueStreamTemplate(DialoguePrefixTemplate):
    """The cache-friendly layout without a per-utterance question: the prompt for utterance t is
    the header and the dialogue up to t's line, and the emotion is read right after that line.
    Every prompt of a dialogue is a prefix of the next, so scoring a whole dialogue is one pass
    over it, and a live conversation costs only its new line per turn. Not with a demonstration:
    it follows the utterance's line, so prompts differ before their end (same results, no reuse)."""

    def erc(self, dialogue: Dialogue, index: int, demonstration: Demonstration | None, named: bool = True) -> list[Segment]:
        segments = self.header(dialogue, named)
        if self.config.history:
            segments += self.history_lines(dialogue, 0, index)
        segments.append(self.line(dialogue, index, Part.CURRENT))
        return segments + self.demonstration(demonstration)


TEMPLATES: dict[str, Callable[..., PromptTemplate]] = {
    "instructerc": InstructERCTemplate,
    "dialogue-prefix": DialoguePrefixTemplate,
    "dialogue-stream": DialogueStreamTemplate,
}


def build_template(config: TemplateConfig, label_set: LabelSet, line_budget: int | None = None) -> PromptTemplate:
    """``line_budget``: the ``max_length`` its prompts are fitted to, if known (see :meth:`PromptTemplate.history_lines`)."""
    return TEMPLATES[config.name](config, label_set, line_budget=line_budget)


def shares_dialogue_prefix(config: TemplateConfig) -> bool:
    """Whether the prompts of a dialogue share it, up to the current utterance, as their prefix
    (so a growing conversation's key/value cache covers all but the newest turn)."""
    return config.name in ("dialogue-prefix", "dialogue-stream") and config.history


def template_names() -> list[str]:
    return list(TEMPLATES)


__all__ = ["Demonstration", "PromptTemplate", "TemplateConfig", "Wording", "build_template", "shares_dialogue_prefix", "template_names"]
