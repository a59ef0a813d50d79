"""The nesting check of every JSONL line and request body (``check_depth``), rewritten to run in C:
it must refuse and accept exactly what the plain per-bracket loop it replaced did, on valid JSON
and on text that is not JSON alike (the error a user sees depends on which check speaks first)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from instructerc.cli.main import main
from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.jsonl import read_jsonl, write_jsonl
from instructerc.data.validation import MAX_DEPTH, TextProblem, check_depth, load_json
from instructerc.errors import InputError

# The implementation check_depth replaced, kept verbatim as the reference: a string is removed
# where the regex finds one scanning from the left (an unterminated one is not), then every
# bracket left moves the depth by one.
_REFERENCE_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"')
_REFERENCE_BRACKET = re.compile(r"[\[\]{}]")


def reference_too_deep(text: str) -> bool:
    depth = 0
    for bracket in _REFERENCE_BRACKET.findall(_REFERENCE_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def too_deep(text: str) -> bool:
    try:
        check_depth(text)
    except TextProblem as problem:
        assert problem.message == f"not valid JSON: nested deeper than {MAX_DEPTH} levels"
        assert problem.field is None
        return True
    return False


def assert_same(text: str) -> None:
    assert too_deep(text) == reference_too_deep(text), repr(text[:200])


# Characters that matter to the check (brackets, quotes, backslashes, a line break, which the
# string regex's "." does not match) and some that must not: non-ASCII letters whose UTF-8 bytes
# are near a bracket's, a lone surrogate, an emoji, NUL.
_ALPHABET = list('[]{}[]{}[[{{"""\\\\ ,:a1\n\t') + ["\u015b", "\u017b", "\u5b5d", "\ud800", "\udc00", "\U0001f600", "\x00", "\x7f"]


def _random_text(rng: random.Random) -> str:
    length = rng.choice([rng.randrange(0, 80), rng.randrange(60, 400)])
    return "".join(rng.choice(_ALPHABET) for _ in range(length))


def _near_limit(rng: random.Random) -> str:
    """Opening brackets around the limit, noise in between, some closing brackets after."""
    opens = MAX_DEPTH + rng.randrange(-3, 4)
    parts = []
    for _ in range(opens):
        parts.append(rng.choice("[{"))
        if rng.random() < 0.2:
            parts.append(_random_text(rng)[: rng.randrange(0, 12)])
        if rng.random() < 0.1:
            parts.append(rng.choice(["]", "}", "][", "}{", "[]", '"[["', '"\\"[', '"\\\\"', "\\", '"']))
    parts.append("]" * rng.randrange(0, opens + 2))
    return "".join(parts)


def test_random_texts_match_the_reference():
    rng = random.Random(21)
    for _ in range(3000):
        assert_same(_random_text(rng))
        assert_same(_near_limit(rng))


def _nested(rng: random.Random, depth: int) -> Any:
    """A JSON value exactly ``depth`` levels deep, with strings full of brackets and escapes."""
    if depth == 0:
        return rng.choice([1, -2.5, None, True, "x", '[{"]}\\', "\u00e9[\ud83d\ude00]", '\\\\\\"[[', ""])
    siblings = [_nested(rng, rng.randrange(0, min(depth, 3))) for _ in range(rng.randrange(0, 3))]
    inner = _nested(rng, depth - 1)
    if rng.random() < 0.5:
        items = siblings + [inner]
        rng.shuffle(items)
        return items
    keys = [rng.choice(["k[", 'k"{', "k\\", "\u017b", "]]"]) + str(k) for k in range(len(siblings) + 1)]
    return dict(zip(keys, siblings + [inner]))


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 5])
def test_valid_json_is_refused_exactly_past_the_limit(depth: int):
    rng = random.Random(depth)
    for _ in range(40):
        text = json.dumps(_nested(rng, depth), ensure_ascii=rng.random() < 0.5)
        assert_same(text)
        assert too_deep(text) == (depth > MAX_DEPTH), text[:200]


@pytest.mark.parametrize(
    "text",
    [
        "[" * MAX_DEPTH + "]" * MAX_DEPTH,
        "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
        "[" * 100_000,  # a line cut off, or an attack on the parser's recursion
        "{" * 50_000 + "[" * 50_000,
        "]" * 100 + "[" * (MAX_DEPTH + 50),  # depth counts from where the text starts
        ("[" * MAX_DEPTH + "]" * MAX_DEPTH) * 500,  # at the limit many times over
        "[" + "[]," * 10_000 + "[" * (MAX_DEPTH - 1) + "]" * MAX_DEPTH,
        "[" + "[]," * 10_000 + "[" * MAX_DEPTH + "]" * (MAX_DEPTH + 1),
        "[" * MAX_DEPTH + "][" * 1000 + "[",
        '"' + "[" * 100 + '"',  # brackets only inside a string: nothing is left
        '["' + "[{" * 1000 + '"]',
        '"\\"' + "[" * 100 + '"',  # an escaped quote does not end the string
        '"\\\\"' + "[" * 100,  # an escaped backslash does
        '"unterminated' + "[" * 100,  # no string: the brackets count
        '"a\\\n"' + "[" * 100,  # a backslash before a raw line break escapes nothing
        '"a\n"' + "[" * 100,
        "[" * 70 + '"\ud800' + "]" * 70 + '"',
        "[" * 70 + "\u017b\u015b\u5b5d" * 10 + "]" * 70,
        "\\" + '"' + "[" * 70 + '"',
        "[" * 60 + '"x' + "[" * 10 + '"' + "]" * 60,
    ],
)
def test_adversarial_texts_match_the_reference(text: str):
    assert_same(text)


def test_a_line_at_the_limit_parses_and_one_past_it_is_refused_before_the_parser():
    at_limit = "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH
    assert load_json(at_limit) is not None
    for past in ("[" * (MAX_DEPTH + 1) + "1" + "]" * (MAX_DEPTH + 1), "[" * 200_000):
        with pytest.raises(TextProblem, match=f"nested deeper than {MAX_DEPTH} levels"):
            load_json(past)


def test_a_large_body_of_small_arrays_is_accepted_and_parsed():
    body = '{"dialogues": [], "extra": [' + ",".join(['[[1, "]["], {"a": [2]}]'] * 20_000) + "]}"
    assert len(load_json(body)["extra"]) == 20_000


def test_a_line_with_a_very_long_number_and_trailing_text_gets_its_error_not_a_traceback(tmp_path: Path):
    # The hint for text after a line's JSON value parsed the line again with int(), which refuses
    # over 4,300 digits with a bare ValueError.
    file = tmp_path / "d.jsonl"
    record = '{"id": "a", "n": ' + "1" * 5000 + ', "utterances": [{"speaker": "A", "text": "hi"}]}'
    for after, hint in ((" x", "more follows the line's JSON value"), ("{}", "two dialogues on one line?")):
        file.write_text(record + after + "\n", encoding="utf-8")
        with pytest.raises(InputError, match="not valid JSON") as caught:
            read_jsonl(file, "test")
        assert hint in caught.value.message and caught.value.line == 1


def test_cli_reports_the_long_number_line_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    file = tmp_path / "d.jsonl"
    file.write_text('{"n": ' + "9" * 5000 + "} x\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["data", "export", "--dataset", "jsonl", "--data", str(file), "--split", "test", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("instructerc: error: ") and "d.jsonl:1" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("dialogue_extra", "utterance_extra", "field"),
    [
        ({"id": "other"}, {}, "dialogues[0].extra.id"),
        ({"dataset": "meld"}, {}, "dialogues[0].extra.dataset"),
        ({}, {"text": "the raw cell"}, "dialogues[0].utterances[1].extra.text"),
        ({}, {"speaker": "x"}, "dialogues[0].utterances[1].extra.speaker"),
        ({}, {"emotion": "anger"}, "dialogues[0].utterances[1].extra.emotion"),
    ],
)
def test_an_extra_key_that_would_replace_a_field_is_refused_and_nothing_is_written(
    tmp_path: Path, dialogue_extra: dict[str, Any], utterance_extra: dict[str, Any], field: str
):
    # A row of the source copied whole into extra was written in place of the canonical field:
    # another id, the untrimmed text, a second speaker, in silence.
    utterances = (Utterance("Ann", "Hi"), Utterance("Bob", "Hello", "joy", extra=utterance_extra))
    dialogue = Dialogue(id="d1", dataset="mine", split="test", utterances=utterances, extra=dialogue_extra)
    out = tmp_path / "out.jsonl"
    out.write_text("earlier output\n", encoding="utf-8")
    with pytest.raises(InputError, match="would be written in place of") as caught:
        write_jsonl([dialogue], out)
    assert caught.value.field == field
    assert out.read_text(encoding="utf-8") == "earlier output\n"


def test_extra_keys_that_are_no_field_are_still_written_back(tmp_path: Path):
    utterance = Utterance("Ann", "Hi", "joy", extra={"sentiment": "positive", "Text": "kept"})
    dialogue = Dialogue(id="d1", dataset="mine", split="test", utterances=(utterance,), extra={"season": "8"})
    out = tmp_path / "out.jsonl"
    write_jsonl([dialogue], out)
    [back] = read_jsonl(out, "test")
    assert back.extra == {"season": "8"} and back.utterances[0].extra == {"sentiment": "positive", "Text": "kept"}
