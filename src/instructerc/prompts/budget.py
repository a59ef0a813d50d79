"""Fitting a prompt into ``max_length`` tokens without cutting what the question needs.

Order of sacrifice: the oldest history utterances first (in steps of ``history_stride``), then
the retrieved demonstration's text from its end, then the demonstration altogether. The
utterance asked about, the label statement and the question are never cut: a prompt that
cannot fit without them is an error naming the utterance.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from instructerc.errors import InputError
from instructerc.prompts.encoding import EncodedExample, EncodedSegment, SegmentTokenizer
from instructerc.prompts.example import Example, Part, Segment


class PromptTooLong(InputError):
    """A prompt that does not fit even with no history and no demonstration: the utterance asked
    about (or the fixed wording around it) is longer than the budget. It is an error of the
    ``max_length`` setting, named with the file it was read from where that is known (a model
    directory's ``prompting.json``); the message names the dialogue (and the file and line it
    was read from) and the utterance.

    Attributes:
        example: the example that did not fit.
        excess: how many tokens over the budget it still is.
        detail: what did not fit, without the dialogue (``utterance 3 needs ...``).
    """

    def __init__(self, detail: str, *, example: Example, excess: int, setting: Path | str | None = None) -> None:
        where = f" ({example.origin})" if example.origin is not None else ""
        super().__init__(f"dialogue '{example.dialogue_id}'{where}, {detail}", path=setting, field="max_length")
        self.example = example
        self.excess = excess
        self.detail = detail

    def as_setting_error(self, data_path: Path | str | None) -> InputError:
        """This error as training and ``prompts show`` give it: the dialogue and task, the file
        and line the dialogue was read from (``data_path``, where the data was read, for one
        that knows no line, such as a benchmark's), and ``max_length`` as the setting to change
        (in the model directory's ``prompting.json`` where it was read from one)."""
        example, origin = self.example, self.example.origin
        setting = f"max_length (in {self.path})" if self.path is not None else "max_length"
        return InputError(
            f"dialogue '{example.dialogue_id}' (dataset {example.dataset}), {example.task.value} example: {self.detail}; "
            f"raise {setting} or shorten the utterance (or its speaker's name, shown with it)",
            path=origin.path if origin is not None else data_path,
            line=origin.line if origin is not None else None,
            field="max_length",
        )


def _length(segments: list[EncodedSegment]) -> int:
    return sum(len(s.ids) for s in segments)


def _drop_history(segments: list[EncodedSegment], budget: int, stride: int) -> list[EncodedSegment]:
    history = [i for i, s in enumerate(segments) if s.segment.part is Part.HISTORY]
    # A running length, not the prompt measured again per step: a dialogue of thousands of turns
    # would otherwise cost the cube of its length to budget (each prompt, each step, each line).
    length, dropped = _length(segments), 0
    while dropped < len(history):
        step = history[dropped : dropped + stride]
        length -= sum(len(segments[i].ids) for i in step)
        dropped += len(step)
        if length <= budget:
            break
    gone = set(history[:dropped])
    return [s for i, s in enumerate(segments) if i not in gone]


# The most tokens that can hold parts of one character: a byte-level tokenizer may give each of
# its (at most 4) UTF-8 bytes a token of its own.
_PARTIAL_TOKENS = 3


def _whole_characters(ids: tuple[int, ...], tokenizer: SegmentTokenizer) -> tuple[int, ...]:
    """``ids`` without the tokens at their end that hold only the first bytes of a character (a
    byte-level tokenizer splits CJK and emoji over tokens): kept, the model would read stray
    bytes, and the prompt shown for it a U+FFFD that is in no text."""
    for _ in range(_PARTIAL_TOKENS):
        if not ids or not tokenizer.decode(ids).endswith("\ufffd"):
            break
        ids = ids[:-1]
    return ids


def _shorten_demonstration(segments: list[EncodedSegment], budget: int, tokenizer: SegmentTokenizer) -> list[EncodedSegment]:
    excess = _length(segments) - budget
    for i, s in enumerate(segments):
        if excess <= 0:
            break
        if s.segment.part is Part.DEMONSTRATION_TEXT:
            ids = _whole_characters(s.ids[: max(0, len(s.ids) - excess)], tokenizer)
            keep = len(ids)
            segments[i] = EncodedSegment(Segment(tokenizer.decode(ids), Part.DEMONSTRATION_TEXT), ids)
            excess -= len(s.ids) - keep
    # A demonstration whose text is all cut would show a label for nothing: drop it whole.
    if excess > 0 or any(s.segment.part is Part.DEMONSTRATION_TEXT and not s.ids for s in segments):
        segments = [s for s in segments if s.segment.part not in (Part.DEMONSTRATION, Part.DEMONSTRATION_TEXT)]
    return segments


def encode_example(
    example: Example,
    tokenizer: SegmentTokenizer,
    max_length: int,
    history_stride: int = 1,
    with_target: bool = True,
    *,
    reserve: int = 0,
    setting: Path | str | None = None,
) -> EncodedExample:
    """Tokenize an example, fitting prompt (+ target, when training) into ``max_length`` tokens.

    ``reserve``: room kept for an answer that is not in the example (inference); ``setting``: the
    file ``max_length`` was read from, named by the error of a prompt that cannot fit."""
    target_ids = tokenizer.target_ids(example.target) if with_target and example.target is not None else ()
    # Here the target's own length is what must fit, and at inference the longest answer allowed.
    budget = max_length - reserve - len(tokenizer.prefix_ids) - len(target_ids)
    segments = [EncodedSegment(s, tokenizer.ids(s.text)) for s in example.segments]
    if _length(segments) > budget:
        segments = _drop_history(segments, budget, history_stride)
    if _length(segments) > budget:
        segments = _shorten_demonstration(segments, budget, tokenizer)
    if _length(segments) > budget:
        answer = f" ({reserve} of them kept for the answer)" if reserve else ""
        limit = f"the model's max_length={max_length}" if setting is not None else f"max_length={max_length}"
        # Counted as max_length counts: with the special prefix, the target and the answer's room.
        needed = _length(segments) + max_length - budget
        raise PromptTooLong(
            f"utterance {example.index} needs {needed} tokens even without history and demonstration{answer}, more than {limit}",
            example=example,
            excess=_length(segments) - budget,
            setting=setting,
        )
    prompt_ids = tokenizer.prefix_ids + tuple(i for s in segments for i in s.ids)
    fitted = replace(example, segments=tuple(s.segment for s in segments))
    return EncodedExample(prompt_ids=prompt_ids, target_ids=target_ids, segments=tuple(segments), example=fitted)
