"""The token budget: what is cut, in which order, and what is never cut.

A dummy tokenizer makes lengths predictable: one token per whitespace-separated word, so an
utterance line ``\\t A:"u3 w w w"`` is exactly 4 tokens.
"""

from __future__ import annotations

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.budget import encode_example
from instructerc.prompts.encoding import SegmentTokenizer
from instructerc.prompts.example import Example, Part
from instructerc.prompts.tasks import ExampleBuilder
from instructerc.prompts.templates import Demonstration, TemplateConfig, build_template

BOS, EOS = 0, 1


class WordTokenizer:
    """One id per whitespace-separated word (ids handed out on first sight); optional BOS/EOS."""

    def __init__(self, bos: bool = False, eos_suffix: bool = False) -> None:
        self.vocab: dict[str, int] = {}
        self.words: dict[int, str] = {}
        self.bos = bos
        self.eos_suffix = eos_suffix
        self.eos_token_id = EOS

    def __call__(self, text: str, add_special_tokens: bool = True, split_special_tokens: bool = False) -> dict[str, list[int]]:
        ids = [self.vocab.setdefault(word, len(self.vocab) + 2) for word in text.split()]
        self.words.update({i: w for w, i in self.vocab.items()})
        if add_special_tokens:
            ids = ([BOS] if self.bos else []) + ids + ([EOS] if self.eos_suffix else [])
        return {"input_ids": ids}

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.words[i] for i in ids)


N = 11  # utterances; the question is about the last one, so 10 history lines
DIALOGUE = Dialogue(
    id="long-dialogue",
    dataset="meld",
    split="train",
    utterances=tuple(Utterance("AB"[i % 2], f"u{i} w w w", "neutral") for i in range(N - 1))
    + (Utterance("A", "current words stay", "joy"),),
)
DEMO = Demonstration("d0 d1 d2 d3 d4 d5 d6 d7", "anger")  # 8 tokens


def example(stride: int = 1, demonstration: bool = True, name: str = "instructerc") -> Example:
    template = build_template(TemplateConfig(name=name, history_stride=stride), MELD)
    demos = {("meld", "long-dialogue", N - 1): DEMO} if demonstration else {}
    return ExampleBuilder(template, demos).erc(DIALOGUE, N - 1)


def history_kept(encoded) -> list[int]:
    """Which utterances' history lines survived (parsed back from the ``u{i}`` word)."""
    lines = [s.segment.text for s in encoded.segments if s.segment.part is Part.HISTORY]
    return [int(line.split('"u')[1].split()[0]) for line in lines]


def parts_text(encoded, part: Part) -> list[str]:
    return [s.segment.text for s in encoded.segments if s.segment.part is part]


@pytest.fixture
def tokenizer() -> SegmentTokenizer:
    return SegmentTokenizer(WordTokenizer())


def full_length(tokenizer: SegmentTokenizer, ex: Example) -> int:
    return sum(len(tokenizer.ids(s.text)) for s in ex.segments)


def test_dummy_lengths_are_what_the_tests_assume(tokenizer: SegmentTokenizer) -> None:
    ex = example()
    history = [s for s in ex.segments if s.part is Part.HISTORY]
    assert len(history) == N - 1 and all(len(tokenizer.ids(s.text)) == 4 for s in history)
    assert [len(tokenizer.ids(s.text)) for s in ex.segments if s.part is Part.DEMONSTRATION_TEXT] == [8]
    assert tokenizer.target_ids("joyful") == (tokenizer.ids("joyful")[0], EOS)


def test_a_prompt_that_fits_is_untouched(tokenizer: SegmentTokenizer) -> None:
    ex = example()
    encoded = encode_example(ex, tokenizer, full_length(tokenizer, ex) + 2)
    assert encoded.example == ex
    assert len(encoded) == full_length(tokenizer, ex) + 2
    assert encoded.target_ids == tokenizer.target_ids("joyful")
    assert encoded.prompt_ids == tuple(i for s in ex.segments for i in tokenizer.ids(s.text))


@pytest.mark.parametrize(("over", "kept"), [(1, list(range(1, 10))), (4, list(range(1, 10))), (5, list(range(2, 10))), (36, [9])])
def test_oldest_history_is_dropped_first_and_only_as_much_as_needed(tokenizer: SegmentTokenizer, over: int, kept: list[int]) -> None:
    ex = example()
    max_length = full_length(tokenizer, ex) + 2 - over  # + 2: the target " joyful" and EOS
    encoded = encode_example(ex, tokenizer, max_length)
    assert len(encoded) <= max_length
    assert history_kept(encoded) == kept
    assert parts_text(encoded, Part.DEMONSTRATION_TEXT) == [DEMO.text]  # history goes first


@pytest.mark.parametrize(
    ("stride", "kept"), [(1, list(range(2, 10))), (3, list(range(3, 10))), (4, list(range(4, 10))), (7, list(range(7, 10)))]
)
def test_history_stride_drops_in_multiples(tokenizer: SegmentTokenizer, stride: int, kept: list[int]) -> None:
    ex = example(stride)
    max_length = full_length(tokenizer, ex) + 2 - 5  # 5 tokens too many: two lines would do
    encoded = encode_example(ex, tokenizer, max_length, history_stride=stride)
    assert len(encoded) <= max_length
    assert history_kept(encoded) == kept
    assert (N - 1 - len(kept)) % stride == 0


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
@pytest.mark.parametrize("template", ["instructerc", "dialogue-prefix"])
def test_budget_rule_over_every_max_length(tokenizer: SegmentTokenizer, stride: int, template: str) -> None:
    """For every budget down to the impossible: fits, newest history kept, in multiples of the
    stride, the least dropped, the demonstration touched only once the history is gone."""
    ex = example(stride, name=template)
    full = full_length(tokenizer, ex) + 2
    fixed = [s.text for s in ex.segments if s.part in (Part.CURRENT, Part.QUESTION, Part.INSTRUCTION, Part.FIXED)]
    essential = sum(len(tokenizer.ids(text)) for text in fixed) + 2
    for max_length in range(full, 0, -1):
        try:
            encoded = encode_example(ex, tokenizer, max_length, history_stride=stride)
        except InputError:
            assert max_length == essential - 1  # impossible exactly when the essentials do not fit
            break
        assert len(encoded) <= max_length
        kept = history_kept(encoded)
        dropped = N - 1 - len(kept)
        assert kept == list(range(dropped, N - 1))
        assert dropped % stride == 0 or dropped == N - 1
        demo = parts_text(encoded, Part.DEMONSTRATION_TEXT)
        if demo != [DEMO.text]:
            assert kept == []  # the demonstration is touched only once the history is gone
        elif dropped:
            # the least that fits: the previous stride step would not have fitted
            restored = dropped - ((dropped - 1) // stride) * stride
            assert len(encoded) + 4 * restored > max_length
        assert [
            s.segment.text for s in encoded.segments if s.segment.part in (Part.CURRENT, Part.QUESTION, Part.INSTRUCTION, Part.FIXED)
        ] == fixed
        assert encoded.target_ids == tokenizer.target_ids("joyful")
    else:
        pytest.fail("no budget was impossible")


def test_demonstration_text_is_shortened_from_its_end_after_all_history(tokenizer: SegmentTokenizer) -> None:
    ex = example()
    max_length = full_length(tokenizer, ex) + 2 - 4 * (N - 1) - 3
    encoded = encode_example(ex, tokenizer, max_length)
    assert len(encoded) == max_length
    assert history_kept(encoded) == []
    assert parts_text(encoded, Part.DEMONSTRATION_TEXT) == ["d0 d1 d2 d3 d4"]
    assert parts_text(encoded, Part.DEMONSTRATION) == [
        'Here is a demonstration: the utterance <"',
        '"> has the emotional label <angry>. ',
    ]
    assert 'the utterance <"d0 d1 d2 d3 d4"> has the emotional label <angry>.' in encoded.example.prompt
    # the ids are the shortened text's ids, not a re-tokenization
    demo_ids = [s.ids for s in encoded.segments if s.segment.part is Part.DEMONSTRATION_TEXT]
    assert demo_ids == [tokenizer.ids(DEMO.text)[:5]]


def test_a_demonstration_cut_to_nothing_is_dropped_whole(tokenizer: SegmentTokenizer) -> None:
    ex = example()
    without_history = full_length(tokenizer, ex) + 2 - 4 * (N - 1)
    encoded = encode_example(ex, tokenizer, without_history - 8)  # exactly the demonstration text
    assert parts_text(encoded, Part.DEMONSTRATION_TEXT) == [] and parts_text(encoded, Part.DEMONSTRATION) == []
    assert "demonstration" not in encoded.example.prompt


def test_what_is_never_cut_survives_the_tightest_budget(tokenizer: SegmentTokenizer) -> None:
    ex = example()
    essential = [s for s in ex.segments if s.part not in (Part.HISTORY, Part.DEMONSTRATION, Part.DEMONSTRATION_TEXT)]
    tightest = sum(len(tokenizer.ids(s.text)) for s in essential) + 2
    encoded = encode_example(ex, tokenizer, tightest)
    assert len(encoded) == tightest
    assert tuple(s.segment for s in encoded.segments) == tuple(essential)
    assert encoded.example.prompt == (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### "
        '\t A:"current words stay" ### '
        'Please select the emotional label of < A:"current words stay"> from <neutral, surprise, fear, sad, joyful, disgust, angry>:'
    )
    with pytest.raises(InputError) as error:
        encode_example(ex, tokenizer, tightest - 1)
    assert "long-dialogue" in str(error.value)
    assert f"utterance {N - 1}" in str(error.value)
    assert f"max_length={tightest - 1}" in str(error.value)


def test_without_target_the_budget_is_the_prompt_alone(tokenizer: SegmentTokenizer) -> None:
    ex = example()
    encoded = encode_example(ex, tokenizer, full_length(tokenizer, ex), with_target=False)
    assert encoded.target_ids == () and history_kept(encoded) == list(range(N - 1))
    with_target = encode_example(ex, tokenizer, full_length(tokenizer, ex))
    assert history_kept(with_target) == list(range(1, N - 1))  # the 2 target tokens cost one line


# --- special prefix tokens -------------------------------------------------------------------------


def test_prefix_ids_are_empty_without_bos() -> None:
    assert SegmentTokenizer(WordTokenizer()).prefix_ids == ()


@pytest.mark.parametrize("eos_suffix", [False, True])
def test_prefix_ids_hold_the_bos_and_count_against_the_budget(eos_suffix: bool) -> None:
    tokenizer = SegmentTokenizer(WordTokenizer(bos=True, eos_suffix=eos_suffix))
    assert tokenizer.prefix_ids == (BOS,)
    # segments are tokenized without special tokens, so no BOS inside the prompt
    assert BOS not in tokenizer.ids("some words here")
    ex = example()
    full = full_length(tokenizer, ex) + 2
    encoded = encode_example(ex, tokenizer, full + 1)
    assert encoded.prompt_ids[0] == BOS and BOS not in encoded.prompt_ids[1:]
    assert len(encoded) == full + 1 and history_kept(encoded) == list(range(N - 1))
    tight = encode_example(ex, tokenizer, full)  # the BOS costs one token: a history line goes
    assert len(tight) <= full and history_kept(tight) == list(range(1, N - 1))
