"""Token ids for examples: each prompt segment tokenized on its own (and cached)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from instructerc.prompts.example import Example, Part, Segment


@dataclass(frozen=True)
class EncodedSegment:
    segment: Segment
    ids: tuple[int, ...]


@dataclass(frozen=True)
class EncodedExample:
    """An example as token ids.

    Attributes:
        prompt_ids: special prefix tokens (BOS where the tokenizer adds one) and the prompt.
        target_ids: the answer's tokens followed by EOS; empty when there is no target.
        segments: the prompt segments that survived the budget, with their ids.
        example: the example it encodes.
    """

    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    segments: tuple[EncodedSegment, ...]
    example: Example

    @property
    def input_ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.target_ids

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.target_ids)


class SegmentTokenizer:
    """Tokenizes prompt pieces independently, so a piece has the same ids in every prompt.

    Independent pieces are what lets prompts of one dialogue share exact token prefixes (and so
    a key/value cache); the same utterance line recurs in many prompts, hence the cache.
    """

    def __init__(self, tokenizer: Any, cache_size: int = 500_000) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[str, tuple[int, ...]] = {}
        self._cache_size = cache_size
        with_special = list(tokenizer("a")["input_ids"])
        plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
        # The special tokens before the text (BOS), also when the tokenizer appends some (EOS) too.
        cut = next((c for c in range(len(with_special) - len(plain) + 1) if with_special[c : c + len(plain)] == plain), 0)
        self.prefix_ids: tuple[int, ...] = tuple(with_special[:cut])
        self.eos_id: int | None = tokenizer.eos_token_id

    def ids(self, text: str) -> tuple[int, ...]:
        cached = self._cache.get(text)
        if cached is None:
            # Text is data: "<|im_end|>" typed in an utterance is those characters, not the
            # end-of-turn token (which is also the pad token), so a user cannot end or restart a
            # prompt from inside it. The prompt's own special tokens are added by id.
            cached = tuple(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[text] = cached
        return cached

    def answer_ids(self, answer: str) -> tuple[int, ...]:
        """The tokens of an answer as it follows a prompt: a space, then the word."""
        return self.ids(" " + answer)

    def target_ids(self, target: str) -> tuple[int, ...]:
        eos = () if self.eos_id is None else (self.eos_id,)
        return self.answer_ids(target) + eos

    def decode(self, ids: tuple[int, ...]) -> str:
        return self.tokenizer.decode(list(ids))


def text_of(segments: tuple[EncodedSegment, ...]) -> str:
    return "".join(s.segment.text for s in segments)


__all__ = ["EncodedExample", "EncodedSegment", "Part", "SegmentTokenizer", "text_of"]
