"""Prompt templates and example builders: the exact text each task, part switch and option gives.

The expected prompts are written out in full: the ``instructerc`` wording is the paper's released
code (``data_process.py``) to the character, so any change to a space or a quote must show here.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.encoding import SegmentTokenizer
from instructerc.prompts.example import Part, Task
from instructerc.prompts.tasks import ExampleBuilder
from instructerc.prompts.templates import Demonstration, TemplateConfig, build_template

DIALOGUE = Dialogue(
    id="d1",
    dataset="meld",
    split="train",
    utterances=(
        Utterance("Ann", "Hi Bob!", "joy"),
        Utterance("Bob", "Oh, hello.", "surprise"),
        Utterance("Cat", "What is going on?", "neutral"),
        Utterance("Bob", "Nothing at all.", "anger"),
    ),
)
DEMONSTRATION = Demonstration(text="I won the lottery!", label="joy")
LAST = 3  # the utterance most tests ask about: Bob, "Nothing at all.", anger


def builder(demonstrations: bool = True, speaker_variant: str = "paper", speaker_slots: int = 9, **template) -> ExampleBuilder:
    demos = {("meld", "d1", i): DEMONSTRATION for i in range(len(DIALOGUE))} if demonstrations else {}
    return ExampleBuilder(build_template(TemplateConfig(**template), MELD), demos, speaker_slots, speaker_variant)


# --- ERC, instructerc template: the four parts one at a time ----------------------------------

INSTRUCTERC_ERC = {
    "all": (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all." ### '
        'Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
        'Please select the emotional label of < Bob:"Nothing at all."> from <neutral, surprise, fear, sad, joyful, disgust, angry>:'
    ),
    "instruction": (
        "The following conversation noted between '### ###' involves several speakers. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all." ### '
        'Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
        'Please select the emotional label of < Bob:"Nothing at all."> from <neutral, surprise, fear, sad, joyful, disgust, angry>:'
    ),
    "history": (
        "Now you are expert of sentiment and emotional analysis. "
        'Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
        'Please select the emotional label of < Bob:"Nothing at all."> from <neutral, surprise, fear, sad, joyful, disgust, angry>:'
    ),
    "label_statement": (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all." ### '
        'Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
        'Please select the emotional label of < Bob:"Nothing at all.">:'
    ),
    "demonstration": (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all." ### '
        'Please select the emotional label of < Bob:"Nothing at all."> from <neutral, surprise, fear, sad, joyful, disgust, angry>:'
    ),
}

DIALOGUE_PREFIX_ERC = {
    "all": (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. "
        "Label the emotion of each utterance with one of <neutral, surprise, fear, sad, joyful, disgust, angry>. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all."'
        ' ### Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
        "The emotional label of the last utterance is:"
    ),
    "instruction": (
        "The following conversation noted between '### ###' involves several speakers. "
        "Label the emotion of each utterance with one of <neutral, surprise, fear, sad, joyful, disgust, angry>. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all."'
        ' ### Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
        "The emotional label of the last utterance is:"
    ),
    "history": (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. "
        "Label the emotion of each utterance with one of <neutral, surprise, fear, sad, joyful, disgust, angry>. ### "
        '\t Bob:"Nothing at all."'
        ' ### Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
        "The emotional label of the last utterance is:"
    ),
    "label_statement": (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all."'
        ' ### Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
        "The emotional label of the last utterance is:"
    ),
    "demonstration": (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. "
        "Label the emotion of each utterance with one of <neutral, surprise, fear, sad, joyful, disgust, angry>. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all."'
        " ### The emotional label of the last utterance is:"
    ),
}

DIALOGUE_STREAM_ERC = {
    "all": (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. "
        "Label the emotion of each utterance with one of <neutral, surprise, fear, sad, joyful, disgust, angry>. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all."'
        'Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
    ),
    "instruction": (
        "The following conversation noted between '### ###' involves several speakers. "
        "Label the emotion of each utterance with one of <neutral, surprise, fear, sad, joyful, disgust, angry>. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all."'
        'Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
    ),
    "history": (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. "
        "Label the emotion of each utterance with one of <neutral, surprise, fear, sad, joyful, disgust, angry>. ### "
        '\t Bob:"Nothing at all."'
        'Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
    ),
    "label_statement": (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all."'
        'Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
    ),
    "demonstration": (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. "
        "Label the emotion of each utterance with one of <neutral, surprise, fear, sad, joyful, disgust, angry>. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all."'
    ),
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [("instructerc", INSTRUCTERC_ERC), ("dialogue-prefix", DIALOGUE_PREFIX_ERC), ("dialogue-stream", DIALOGUE_STREAM_ERC)],
)
@pytest.mark.parametrize("off", ["all", "instruction", "history", "label_statement", "demonstration"])
def test_erc_prompt_with_each_part_switched_off(template: str, expected: dict[str, str], off: str) -> None:
    switches = {} if off == "all" else {off: False}
    example = builder(name=template, **switches).erc(DIALOGUE, LAST)
    assert example.prompt == expected[off]
    assert example.task is Task.ERC
    assert example.target == "angry"  # the verbalizer, not the canonical "anger"
    assert example.label == "anger"
    assert (example.dataset, example.dialogue_id, example.index) == ("meld", "d1", LAST)


def test_the_demonstration_is_the_one_retrieved_for_that_utterance() -> None:
    demos = {("meld", "d1", 1): Demonstration("That is awful.", "sadness")}
    template = build_template(TemplateConfig(), MELD)
    shown = ExampleBuilder(template, demos).erc(DIALOGUE, 1).prompt
    assert 'Here is a demonstration: the utterance <"That is awful."> has the emotional label <sad>. ' in shown
    assert "demonstration" not in ExampleBuilder(template, demos).erc(DIALOGUE, 2).prompt


def test_the_first_utterance_has_only_itself_as_context() -> None:
    assert builder(demonstrations=False).erc(DIALOGUE, 0).prompt == (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### "
        '\t Ann:"Hi Bob!" ### '
        'Please select the emotional label of < Ann:"Hi Bob!"> from <neutral, surprise, fear, sad, joyful, disgust, angry>:'
    )


def test_unlabelled_utterances_have_no_target() -> None:
    unlabelled = DIALOGUE.with_utterances(tuple(replace(u, emotion=None) for u in DIALOGUE.utterances))
    example = builder().erc(unlabelled, LAST)
    assert example.target is None and example.label is None
    assert example.prompt == INSTRUCTERC_ERC["all"]


# --- window, speaker format --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "history"),
    [
        (0, '\t Bob:"Nothing at all."'),
        (1, '\t Cat:"What is going on?"\t Bob:"Nothing at all."'),
        (2, '\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all."'),
        (3, '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all."'),
        (12, '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"\t Bob:"Nothing at all."'),
    ],
)
def test_window_keeps_the_last_w_past_utterances(window: int, history: str) -> None:
    # As in the paper: utterances max(t - W, 0) .. t, the current one included.
    example = builder(demonstrations=False, window=window).erc(DIALOGUE, LAST)
    assert example.prompt == (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### " + history + " ### "
        'Please select the emotional label of < Bob:"Nothing at all."> from <neutral, surprise, fear, sad, joyful, disgust, angry>:'
    )
    assert [s.part for s in example.segments].count(Part.HISTORY) == min(window, LAST)


def test_dialogue_prefix_ignores_the_window() -> None:
    narrow = builder(name="dialogue-prefix", window=1).erc(DIALOGUE, LAST)
    assert narrow.prompt == DIALOGUE_PREFIX_ERC["all"]


def test_speaker_format_index_numbers_speakers_by_first_appearance() -> None:
    example = builder(speaker_format="index").erc(DIALOGUE, LAST)
    assert example.prompt == (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### "
        '\t Speaker_0:"Hi Bob!"\t Speaker_1:"Oh, hello."\t Speaker_2:"What is going on?"\t Speaker_1:"Nothing at all." ### '
        'Here is a demonstration: the utterance <"I won the lottery!"> has the emotional label <joyful>. '
        'Please select the emotional label of < Speaker_1:"Nothing at all."> from <neutral, surprise, fear, sad, joyful, disgust, angry>:'
    )


def test_bad_template_options_are_input_errors() -> None:
    for bad in ({"name": "chat"}, {"window": -1}, {"speaker_format": "initials"}, {"history_stride": 0}):
        with pytest.raises(InputError):
            TemplateConfig(**bad)
    with pytest.raises(InputError):
        TemplateConfig.from_dict({"name": "instructerc", "windows": 3})
    assert TemplateConfig.from_dict(TemplateConfig(window=5).to_dict()) == TemplateConfig(window=5)


# --- speaker identification ---------------------------------------------------------------------


def test_speaker_task_paper_variant() -> None:
    example = builder(speaker_slots=3).speaker(DIALOGUE, 2)
    assert example.prompt == (
        "Now you are expert of sentiment and emotional analysis. "
        "Please select the Speaker label of the utterance <Speaker: What is going on?> from <Speaker_0, Speaker_1, Speaker_2>:"
    )
    assert example.task is Task.SPEAKER
    assert example.target == "Speaker_2" and example.label == "Speaker_2"


def test_speaker_task_paper_variant_offers_the_slots_or_more() -> None:
    nine = builder().speaker(DIALOGUE, LAST)
    assert nine.prompt.endswith(
        "<Speaker: Nothing at all.> from <Speaker_0, Speaker_1, Speaker_2, Speaker_3, Speaker_4, Speaker_5, Speaker_6, Speaker_7, Speaker_8>:"  # noqa: E501
    )
    assert nine.target == "Speaker_1"
    # Fewer slots than the dialogue has speakers would make the gold impossible to answer.
    two = builder(speaker_slots=2).speaker(DIALOGUE, 2)
    assert two.prompt.endswith("from <Speaker_0, Speaker_1, Speaker_2>:") and two.target == "Speaker_2"


def test_speaker_task_context_variant() -> None:
    example = builder(speaker_variant="context").speaker(DIALOGUE, 2)
    assert example.prompt == (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello." ### '
        'Please select the speaker of the next utterance <"What is going on?"> from <Ann, Bob, Cat>:'
    )
    assert example.target == "Cat"


def test_speaker_task_context_variant_with_index_speakers() -> None:
    example = builder(speaker_variant="context", speaker_format="index").speaker(DIALOGUE, LAST)
    assert example.prompt == (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### "
        '\t Speaker_0:"Hi Bob!"\t Speaker_1:"Oh, hello."\t Speaker_2:"What is going on?" ### '
        'Please select the speaker of the next utterance <"Nothing at all."> from <Speaker_0, Speaker_1, Speaker_2>:'
    )
    assert example.target == "Speaker_1"


def test_unknown_speaker_variant_is_an_input_error() -> None:
    with pytest.raises(InputError):
        builder(speaker_variant="oracle")


# --- emotion prediction -------------------------------------------------------------------------


def test_emotion_prediction_instructerc() -> None:
    # The paper joins the history lines back with '\t' and appends '###' with no space.
    example = builder().emotion_prediction(DIALOGUE, LAST)
    assert example.prompt == (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### "
        '\t Ann:"Hi Bob!"\t Bob:"Oh, hello."\t Cat:"What is going on?"'
        "###Based on the above historical utterances, next utterance is spoken by <Bob>, "
        "please predict the emotion states of <Bob> from <neutral, surprise, fear, sad, joyful, disgust, angry>:"
    )
    assert example.task is Task.EMOTION_PREDICTION
    assert example.target == "angry" and example.label == "anger"
    assert "Nothing at all." not in example.prompt  # the utterance to predict is not shown


def test_emotion_prediction_dialogue_prefix() -> None:
    example = builder(name="dialogue-prefix", speaker_format="index").emotion_prediction(DIALOGUE, 1)
    assert example.prompt == (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. "
        "Label the emotion of each utterance with one of <neutral, surprise, fear, sad, joyful, disgust, angry>. ### "
        '\t Speaker_0:"Hi Bob!"'
        " ### Based on the above historical utterances, next utterance is spoken by <Speaker_1>, "
        "please predict the emotion states of <Speaker_1> from <neutral, surprise, fear, sad, joyful, disgust, angry>:"
    )
    assert example.target == "surprise"


def test_emotion_prediction_respects_the_window() -> None:
    example = builder(window=1).emotion_prediction(DIALOGUE, LAST)
    assert '\t Cat:"What is going on?"###Based on' in example.prompt
    assert "Hi Bob!" not in example.prompt and "Oh, hello." not in example.prompt


def test_eligibility_first_utterance_and_unlabelled() -> None:
    dialogue = DIALOGUE.with_utterances(
        DIALOGUE.utterances[:2] + (replace(DIALOGUE.utterances[2], emotion=None),) + DIALOGUE.utterances[3:]
    )
    b = builder()

    def indices(task: Task, training: bool) -> list[int]:
        return [e.index for e in b.examples(task, [dialogue], training=training)]

    # Utterance 0 has no history to predict from.
    assert indices(Task.EMOTION_PREDICTION, training=False) == [1, 2, 3]
    # Training skips the unlabelled utterance 2 for the emotion tasks, not for the speaker task.
    assert indices(Task.EMOTION_PREDICTION, training=True) == [1, 3]
    assert indices(Task.ERC, training=True) == [0, 1, 3]
    assert indices(Task.ERC, training=False) == [0, 1, 2, 3]
    assert indices(Task.SPEAKER, training=True) == [0, 1, 2, 3]
    assert b.example(Task.ERC, dialogue, 2).target is None


# --- shared prefixes (what makes key/value-cache reuse possible) ------------------------------


@pytest.fixture(scope="module")
def tiny_segment_tokenizer() -> SegmentTokenizer:
    from tiny import tiny_tokenizer

    return SegmentTokenizer(tiny_tokenizer())


def token_ids(tokenizer: SegmentTokenizer, segments) -> list[int]:
    return [i for s in segments for i in tokenizer.ids(s.text)]


def test_dialogue_prefix_prompts_share_the_token_prefix_up_to_the_question(tiny_segment_tokenizer: SegmentTokenizer) -> None:
    b = builder(demonstrations=False, name="dialogue-prefix")
    examples = [b.erc(DIALOGUE, t) for t in range(len(DIALOGUE))]
    for now, following in zip(examples, examples[1:]):
        assert now.segments[-1].part is Part.QUESTION and now.segments[-3].part is Part.CURRENT
        stem = token_ids(tiny_segment_tokenizer, now.segments[:-2])  # all but " ### " and the question
        after = token_ids(tiny_segment_tokenizer, following.segments)
        assert after[: len(stem)] == stem
        # and the next utterance's emotion-prediction prompt continues the same stem
        prediction = b.emotion_prediction(DIALOGUE, following.index)
        assert token_ids(tiny_segment_tokenizer, prediction.segments)[: len(stem)] == stem


def test_dialogue_prefix_with_demonstrations_shares_the_prefix_before_them(tiny_segment_tokenizer: SegmentTokenizer) -> None:
    b = builder(name="dialogue-prefix")
    examples = [b.erc(DIALOGUE, t) for t in range(len(DIALOGUE))]
    per_utterance = (Part.FIXED, Part.DEMONSTRATION, Part.DEMONSTRATION_TEXT, Part.QUESTION)
    for now, following in zip(examples, examples[1:]):
        cut = next(k for k, s in enumerate(now.segments) if s.part is Part.CURRENT) + 1
        assert all(s.part in per_utterance for s in now.segments[cut:])
        stem = token_ids(tiny_segment_tokenizer, now.segments[:cut])
        assert token_ids(tiny_segment_tokenizer, following.segments)[: len(stem)] == stem


def test_instructerc_prompts_do_not_share_a_dialogue_prefix(tiny_segment_tokenizer: SegmentTokenizer) -> None:
    # The contrast: the paper's template closes the history before the question, so prompt t
    # without its question is not a prefix of prompt t+1 (and a window shifts the start).
    b = builder(demonstrations=False)
    now, following = b.erc(DIALOGUE, 1), b.erc(DIALOGUE, 2)
    stem = token_ids(tiny_segment_tokenizer, now.segments[:-1])
    assert token_ids(tiny_segment_tokenizer, following.segments)[: len(stem)] != stem


def test_dialogue_stream_prompts_are_prefixes_of_the_next(tiny_segment_tokenizer: SegmentTokenizer) -> None:
    b = builder(demonstrations=False, name="dialogue-stream")
    examples = [b.erc(DIALOGUE, t) for t in range(len(DIALOGUE))]
    for now, following in zip(examples, examples[1:]):
        assert now.segments[-1].part is Part.CURRENT
        ids = token_ids(tiny_segment_tokenizer, now.segments)
        assert token_ids(tiny_segment_tokenizer, following.segments)[: len(ids)] == ids


def test_special_token_text_in_an_utterance_is_text_not_a_special_token() -> None:
    from tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    segments = SegmentTokenizer(tokenizer)
    special = {tokenizer.eos_token_id, tokenizer.pad_token_id}

    ids = segments.ids(f"I said {tokenizer.eos_token} and {tokenizer.pad_token} to him")

    assert not special & set(ids), "a user's text can never end or pad a prompt"
    assert tokenizer.decode(list(ids)) == "I said <eos> and <pad> to him"
    assert segments.target_ids("joy")[-1] == tokenizer.eos_token_id, "the answer's own end is still the real token"
