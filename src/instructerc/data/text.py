"""Text helpers: repairing text damaged on its way into the COSMIC pickles; one form for names
and labels; where text can be cut without splitting a character."""

from __future__ import annotations

import re
import unicodedata

from instructerc.labels.label_set import SPACE_RUN

_C1_CONTROLS = re.compile("[\x80-\x9f]")


def _cp1252(match: re.Match[str]) -> str:
    try:
        return bytes([ord(match.group())]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d are unassigned in cp1252
        return ""


def repair_cp1252_mojibake(text: str) -> str:
    """Undo cp1252 bytes that were decoded as latin1 (``\\x92`` back to ``’``).

    Only C1 control characters are touched: real text never contains them, so characters
    that were decoded right (``é``, ``’``) are left alone. A non-breaking space becomes a space,
    as in the official MELD CSVs.
    """
    return _C1_CONTROLS.sub(_cp1252, text).replace("\xa0", " ")


# Characters that show as nothing: pasted in with a name or a label (a BOM from a concatenated
# file, a zero-width space from a web page), they make "Ann" and "Ann\u200b" two people.
# Only the ends are cleared: inside a name, a joiner shapes Indic and Arabic letters and emoji.
_INVISIBLE = "\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff"

# Unicode's Bidi_Control characters (direction marks, embeddings, overrides, isolates) are removed
# wherever they are, not only at the ends: they choose the order text is shown in and are never
# part of what a name or label names, so "Ann" and "A\u202enn" look alike and must be one speaker;
# and one left open (U+202E) reverses what follows it on the line, the rest of a prompt's line or
# of a report's row.
_BIDI_CONTROLS = dict.fromkeys(map(ord, "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))


# The mark between the start and end an over-long text is cut to (prompts.fitting cuts so); the
# retriever recognises a pool utterance by its cut form.
CUT_MARK = " \u2026 "


def _trimmed(text: str) -> str:
    """``text`` without white space or invisible characters at either end."""
    previous = None
    while previous != text:
        previous, text = text, text.strip().strip(_INVISIBLE)
    return text


def shows_nothing(text: str) -> bool:
    """True when no character of ``text`` is seen: white space, controls and format characters
    only (a zero-width space or a byte order mark pasted alone). Such an utterance says nothing
    to a reader, so it is refused as empty text is, not labelled."""
    return all(character.isspace() or unicodedata.category(character) in ("Cc", "Cf") for character in text)


def breaks_line(text: str) -> bool:
    """Whether ``text`` holds a control character (a line break, tab, escape): in a speaker's name
    a line feed would start a line of its own in the prompt, a turn nobody said. (Unicode's line
    and paragraph separators are characters the model reads as such, not line ends.)"""
    return any(unicodedata.category(character) == "Cc" for character in text)


def canonical_label(text: str) -> str:
    """An emotion as written, in one Unicode form (NFC), trimmed, without text-direction controls,
    each run of spaces inside it one plain space: ``colère`` typed as ``e`` and a combining
    accent is the same label as ``colère`` with ``è``, and ``very\u00a0happy`` the same as
    ``very happy``, not a second class. Text no character of which is seen (:func:`shows_nothing`,
    an invisible separator alone) is ``""``: as empty as a name of spaces."""
    # The controls go first: one between a letter and its accent would keep NFC from joining them.
    folded = SPACE_RUN.sub(" ", _trimmed(unicodedata.normalize("NFC", text.translate(_BIDI_CONTROLS))))
    return "" if shows_nothing(folded) else folded


def canonical_speaker(name: str) -> str:
    """A speaker's name as every part of the toolkit compares and shows it (:func:`canonical_label`:
    NFC, trimmed, no text-direction controls, one space between words), so names that look the same (``José`` typed on two
    keyboards, ``Ann`` pasted with a BOM or a right-to-left override) are one speaker in the
    prompt's lines, in ``Speaker_k`` ids and in a conversation's later turns."""
    return canonical_label(name)


# -- where text may be cut -------------------------------------------------------------------------
# A simplified form of Unicode's grapheme cluster rules (UAX #29): enough that a cut never keeps
# half of what a reader sees as one character, which would show something the user never wrote
# (an accent on the cut's own space, a family emoji as a couple, two flags as a third).
_ZWJ = "\u200d"
_REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
_HANGUL_LEADING = (range(0x1100, 0x1160), range(0xA960, 0xA980))
_HANGUL_FOLLOWING = (range(0x1160, 0x1200), range(0xD7B0, 0xD800))
_PREPENDED = frozenset("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2")
_VIRAMA = 9  # the canonical combining class of a virama, which joins two consonants into one


def _extends(character: str) -> bool:
    """Whether ``character`` belongs to the one before it: a combining mark, a joiner, a variation
    selector, a skin tone or a tag (the flags of Scotland or Wales)."""
    code = ord(character)
    return (
        unicodedata.category(character) in ("Mn", "Me", "Mc")
        or character in (_ZWJ, "\u200c")
        or 0xFE00 <= code <= 0xFE0F
        or 0x1F3FB <= code <= 0x1F3FF
        or 0xE0020 <= code <= 0xE007F
        or 0xE0100 <= code <= 0xE01EF
    )


def _within(character: str, ranges: tuple[range, ...]) -> bool:
    return any(ord(character) in block for block in ranges)


def _regional_run(text: str, end: int) -> int:
    """How many regional indicators (the halves of a flag) end just before ``end``."""
    start = end
    while start > 0 and ord(text[start - 1]) in _REGIONAL_INDICATORS:
        start -= 1
    return end - start


def joined_at(text: str, index: int) -> bool:
    """Whether ``text[index - 1]`` and ``text[index]`` are parts of one character as it is seen."""
    before, after = text[index - 1], text[index]
    if (before, after) == ("\r", "\n") or _extends(after) or before == _ZWJ or before in _PREPENDED:
        return True
    if unicodedata.combining(before) == _VIRAMA and unicodedata.category(after) == "Lo":
        return True  # a conjunct consonant (Devanagari क्ष)
    if _within(before, _HANGUL_LEADING) or _within(after, _HANGUL_FOLLOWING):
        return True  # a Hangul syllable written as its letters (NFD)
    return ord(after) in _REGIONAL_INDICATORS and _regional_run(text, index) % 2 == 1


def cut_before(text: str, index: int) -> int:
    """The last place at or before ``index`` where ``text`` can be cut without splitting a character."""
    while 0 < index < len(text) and joined_at(text, index):
        index -= 1
    return index


def cut_after(text: str, index: int) -> int:
    """The first place at or after ``index`` where ``text`` can be cut without splitting a character."""
    while 0 < index < len(text) and joined_at(text, index):
        index += 1
    return index
