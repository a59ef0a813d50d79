"""Text as users really send it: one person or label written in two Unicode forms, characters
that show as nothing, and cuts of long text that must not split what a reader sees as one
character."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from instructerc.data.jsonl import iter_jsonl, read_jsonl
from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.example import Task
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.templates import TemplateConfig
from instructerc.retrieval.index import RetrievalConfig

NFC_JOSE = "Jos\u00e9"
NFD_JOSE = unicodedata.normalize("NFD", NFC_JOSE)


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_a_speaker_in_two_unicode_forms_or_with_invisible_padding_is_one_speaker(tmp_path: Path) -> None:
    file = write_lines(
        tmp_path / "d.jsonl",
        [
            {
                "id": "d1",
                "utterances": [
                    {"speaker": NFC_JOSE, "text": "Hola."},
                    {"speaker": NFD_JOSE, "text": "Otra vez."},
                    {"speaker": "\ufeffAnn\u200b", "text": "Hi."},
                    {"speaker": "Ann", "text": "Bye."},
                ],
            }
        ],
    )

    [(_, dialogue)] = list(iter_jsonl(file))

    assert dialogue.speakers == (NFC_JOSE, "Ann")
    # What the model reads: Speaker_k ids follow the person, not the bytes of their name.
    setup = PromptSetup(TemplateConfig(speaker_format="index", demonstration=False), MELD, 512, RetrievalConfig())
    prompt = setup.builder().example(Task.ERC, dialogue, 1).prompt
    assert 'Speaker_0:"Hola."' in prompt and 'Speaker_0:"Otra vez."' in prompt and "Speaker_1" not in prompt


def test_a_speaker_of_invisible_characters_only_is_an_empty_speaker(tmp_path: Path) -> None:
    file = write_lines(tmp_path / "d.jsonl", [{"id": "d1", "utterances": [{"speaker": "\u200b\ufeff", "text": "Hi."}]}])

    with pytest.raises(InputError) as raised:
        list(iter_jsonl(file))

    assert (raised.value.line, raised.value.field, raised.value.message) == (1, "utterances[0].speaker", "empty speaker")


def test_an_emotion_in_two_unicode_forms_is_one_class(tmp_path: Path, run_cli) -> None:
    nfc = "col\u00e8re"
    records = [
        {"id": "a", "utterances": [{"speaker": "A", "text": "Grr.", "emotion": nfc}, {"speaker": "B", "text": "Ok.", "emotion": "joie"}]},
        {"id": "b", "utterances": [{"speaker": "A", "text": "GRR.", "emotion": unicodedata.normalize("NFD", nfc)}]},
    ]
    file = write_lines(tmp_path / "fr.jsonl", records)

    result = run_cli("data", "stats", "--dataset", "jsonl", "--data", file)

    assert result.code == 0, result.err
    assert result.out.splitlines()[1].split() == ["split", "dialogues", "utterances", nfc, "joie"]
    assert [u.emotion for d in read_jsonl(file, "test") for u in d.utterances] == [nfc, "joie", nfc]


@pytest.mark.parametrize(
    "unit",
    [
        "e\u0301",  # e and a combining acute: cut apart, the accent lands on the ellipsis's space
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # a family: cut, a couple
        "\U0001f1fa\U0001f1f8",  # a flag: cut at an odd place, every later pair is another flag
        "\U0001f44d\U0001f3fd",  # a thumb and its skin tone
        "\u0915\u094d\u0937",  # a Devanagari conjunct
        "\u1100\u1161\u11a8",  # a Hangul syllable as its letters (NFD)
    ],
)
def test_a_long_utterance_is_cut_between_characters_as_they_are_seen(unit: str) -> None:
    from instructerc.data.text import CUT_MARK
    from instructerc.prompts.encoding import SegmentTokenizer
    from instructerc.prompts.fitting import shorten
    from tiny import tiny_tokenizer

    tokenizer = SegmentTokenizer(tiny_tokenizer())
    text = unit * 101
    for drop in range(len(tokenizer.ids(text)) // 4, len(tokenizer.ids(text)) * 3 // 4, 37):
        cut = shorten(text, tokenizer, drop)

        assert cut is not None
        head, tail = cut.split(CUT_MARK)
        assert head and tail
        assert head == unit * (len(head) // len(unit)) and tail == unit * (len(tail) // len(unit)), (drop, cut)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("unicode") / "model", MELD)


def test_prompts_show_prints_characters_a_terminal_hides_as_escapes(run_cli, tmp_path: Path, model_dir: Path) -> None:
    # Printed raw, the carriage return hid "Hi", the escape sequence cleared the screen, U+202E
    # showed "olleh" as "hello", and U+200B was not there at all.
    text = "Hi\r\nthere\x1b[2J \u202eolleh\u200b 😀"
    file = write_lines(tmp_path / "d.jsonl", [{"id": "d\x1b1", "utterances": [{"speaker": "Ann", "text": text}]}])

    result = run_cli("prompts", "show", "--dataset", "jsonl", "--data", file, "--split", "test", "--model", model_dir)

    assert result.code == 0, result.err
    assert 'Ann:"Hi\\u000d\nthere\\u001b[2J \\u202eolleh\\u200b 😀"' in result.out
    assert "dialogue d\\u001b1," in result.out
    assert not any(c in result.out for c in "\r\x1b\u202e\u200b")


def test_prompts_show_writes_what_the_terminal_cannot_encode_as_escapes() -> None:
    from instructerc.cli.prompt_commands import visible

    assert visible('\t محمد:"أنا\r"\n', "ascii") == '\t \\u0645\\u062d\\u0645\\u062f:"\\u0623\\u0646\\u0627\\u000d"\n'


def test_a_shortened_demonstration_keeps_whole_characters() -> None:
    from instructerc.prompts.budget import encode_example
    from instructerc.prompts.encoding import SegmentTokenizer
    from instructerc.prompts.example import Example, Part, Segment
    from tiny import tiny_tokenizer

    tokenizer = SegmentTokenizer(tiny_tokenizer())
    text = "我今天很开心" * 5  # three bytes a character, split over tokens by a byte-level tokenizer
    segments = (
        Segment('Here is a demonstration: the utterance <"', Part.DEMONSTRATION),
        Segment(text, Part.DEMONSTRATION_TEXT),
        Segment('"> has the emotional label <joyful>. ', Part.DEMONSTRATION),
        Segment("Please select the emotional label:", Part.QUESTION),
    )
    example = Example(Task.ERC, segments, None, "d", "d1", 0)
    full = sum(len(tokenizer.ids(s.text)) for s in segments)
    shown = []
    for max_length in range(full - 60, full):
        encoded = encode_example(example, tokenizer, max_length, with_target=False)
        [kept] = [s for s in encoded.segments if s.segment.part is Part.DEMONSTRATION_TEXT]

        assert len(encoded.prompt_ids) <= max_length
        # What the model reads is what the prompt shows: the start of the text, whole characters only.
        assert kept.segment.text == tokenizer.decode(kept.ids) and text.startswith(kept.segment.text), kept.segment.text
        shown.append(kept.segment.text)
    assert len(set(shown)) > 10
