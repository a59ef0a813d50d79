"""Checks every piece of user text passes, in JSONL files and in service requests alike.

JSON that Python's parser accepts can still break what comes after it: a lone surrogate
(``"\\ud800"``) passes ``json.loads`` but cannot be encoded, so it fails inside the tokenizer or
when the output is written; a NUL character is no text; a number of 5,000 digits is refused by
``int()`` with a bare ValueError; a line of 100,000 ``[`` exhausts the parser's recursion. Here
each becomes a :class:`TextProblem` naming the field, before anything else reads the value.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64
"""The deepest nesting of arrays and objects accepted (a user-format line needs 3)."""
MAX_NUMBER_CHARS = 100
"""The longest number accepted, in characters (a float has at most 17 significant digits)."""

_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")
# A JSON string: ``"``, runs of plain characters and escapes (a backslash and the character after
# it), ``"``. Written as an unrolled loop, which the regex engine runs faster than an alternation.
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"')
# Brackets as signed bytes, +1 opening and -1 closing, every other byte deleted: the running sum
# of the bytes is the nesting depth, computed in C (a Python loop over the brackets of a megabyte
# of small arrays took about as long as parsing it).
_OPENS, _CLOSES = b"[{", b"]}"
_SIGNS = bytes.maketrans(_OPENS + _CLOSES, b"\x01" * len(_OPENS) + b"\xff" * len(_CLOSES))
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(_OPENS + _CLOSES)))
_CLOSE_THEN_OPEN = b"\xff\x01"


class TextProblem(ValueError):
    """Input that is not acceptable text; ``field`` is where it is (``None``: the whole text)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BadValue:
    """Stands in for a JSON value the parser accepts and this toolkit refuses, so the check of the
    value it belongs to can name its field (the parser's hooks do not know where they are)."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason


class BadNumber(BadValue):
    """A JSON number that is too long or not finite."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a key given twice holds a :class:`BadValue`: the parser would keep the last
    value and silently drop the other (a second ``text`` or ``utterances``)."""
    record = dict(pairs)
    if len(record) == len(pairs):
        return record
    record = {}
    for key, value in pairs:
        record[key] = BadValue(key, f"the key '{printable(key)}' appears twice in one object") if key in record else value
    return record


def _integer(text: str) -> int | BadNumber:
    if len(text) > MAX_NUMBER_CHARS:
        return BadNumber(text, f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    return int(text)


def _float(text: str) -> float | BadNumber:
    if len(text) > MAX_NUMBER_CHARS:
        return BadNumber(text, f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    return value if math.isfinite(value) else BadNumber(text, f"the number {text} is out of range")


def _constant(text: str) -> BadNumber:
    return BadNumber(text, f"{text} is not a JSON number")


def load_json(text: str) -> Any:
    """``json.loads`` with bounded nesting; too long or non-finite numbers and keys given twice
    become :class:`BadValue` (refused by :func:`check_value`). Raises :class:`TextProblem` when
    ``text`` is not JSON."""
    check_depth(text)
    try:
        return json.loads(text, parse_int=_integer, parse_float=_float, parse_constant=_constant, object_pairs_hook=_object)
    except json.JSONDecodeError as error:
        raise TextProblem(_not_json(error)) from None
    except RecursionError:  # bounded above; kept so no input can reach the parser's limit raw
        raise TextProblem(f"not valid JSON: nested deeper than {MAX_DEPTH} levels") from None


# How the escape of a control character that JSON refuses raw inside a string is written.
_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b", "\f": "\\f"}


def _not_json(error: json.JSONDecodeError) -> str:
    """The message for a line that is not JSON. A raw control character is named, with its
    escape: the parser's own words ("Invalid control character at at column 9", "Expecting
    value") neither read well nor say which character it is (a tab pasted in a text editor, or a
    NUL byte, which no escape makes text)."""
    character = error.doc[error.pos] if error.pos < len(error.doc) else ""
    if character == "\x00":
        return f"not valid JSON: a NUL character at column {error.colno}, which no text holds (a binary file, or one saved as UTF-16?)"
    if error.msg.startswith("Invalid control character"):
        escape = _ESCAPES.get(character, f"\\u{ord(character):04x}")
        where = f"at column {error.colno}"
        return f"not valid JSON: the control character U+{ord(character):04X} {where} is raw inside a string (write it {escape})"
    return f"not valid JSON ({error.msg} at column {error.colno})"


def check_depth(text: str) -> None:
    """A :class:`TextProblem` when arrays and objects nest deeper than :data:`MAX_DEPTH`.

    Brackets inside strings do not count; outside them, a bracket counts wherever it is, so a
    text that is not JSON is refused for its nesting when the parser would recurse through it."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    # UTF-8 (lone surrogates passed through) keeps every bracket as its byte; no other character
    # encodes to a bracket's byte, so deleting all other bytes leaves the brackets alone.
    signs = _STRING.sub("", text).encode("utf-8", "surrogatepass").translate(_SIGNS, _NOT_BRACKETS)
    if max(accumulate(memoryview(_without_valleys(signs)).cast("b")), default=0) > MAX_DEPTH:
        raise TextProblem(f"not valid JSON: nested deeper than {MAX_DEPTH} levels")


def _without_valleys(signs: bytes) -> bytes:
    """``signs`` with closing-then-opening pairs removed while that shrinks it by half or more.
    Such a pair takes the depth down one and back up to where it was, so it holds no deepest
    point: removing it keeps the deepest level, and reduces a list of small arrays or objects (``[[1],
    [2], ...]``) to its outline. Stopping when a pass shrinks it less bounds the passes."""
    while True:
        shorter = signs.replace(_CLOSE_THEN_OPEN, b"")
        if len(shorter) * 2 >= len(signs):  # an empty one returns too
            return shorter
        signs = shorter


def check_value(value: Any, where: str = "") -> None:
    """A :class:`TextProblem` naming the first field (``utterances[2].text``) that holds a lone
    surrogate or a NUL character, in a key or a string, or a :class:`BadValue`."""
    if isinstance(value, str):
        check_string(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                check_string(key, f"{where}.{printable(key)}" if where else printable(key))
            check_value(item, f"{where}.{printable(str(key))}" if where else printable(str(key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_value(item, f"{where}[{index}]")
    elif isinstance(value, BadValue):
        raise TextProblem(value.reason, where or None)


def check_string(text: str, where: str = "") -> None:
    bad = _BAD_CHARACTER.search(text)
    if bad is None:
        return
    character = bad.group()
    what = "a NUL character" if character == "\x00" else f"a lone surrogate (U+{ord(character):04X}), which is no text"
    raise TextProblem(f"{what} at character {bad.start() + 1}", where or None)


def printable(text: str) -> str:
    """``text`` with lone surrogates and NUL escaped, so an error message naming it can be printed."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
