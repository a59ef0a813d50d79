"""Cutting an utterance longer than the prompt budget, so that it still gets a label.

The budget (:mod:`instructerc.prompts.budget`) drops history and the demonstration first; an
utterance still too long on its own is cut here. Its start and its end are kept, joined by an
ellipsis: a long turn's opening and its last words carry most of what it is answering and how
it ends. The cut is made on the dialogue, not on one prompt, so every prompt of the dialogue
shows the same shortened text and prompts keep sharing their prefixes.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Sequence

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.text import CUT_MARK, cut_after, cut_before
from instructerc.prompts.budget import PromptTooLong
from instructerc.prompts.encoding import EncodedExample, SegmentTokenizer
from instructerc.prompts.example import Example, Part

Item = tuple[Dialogue, int]
# Each round removes what the last prompt was over by (plus a margin, since cut text tokenizes
# a little differently); more rounds than this means the text is not what is too long.
_MAX_ROUNDS = 8
# What a text cut as far as it goes keeps of its start and end, in tokens: enough to read.
_SHORTEST_TOKENS = 8
# The parts the budget gives up before an utterance is cut.
_DROPPED_FIRST = frozenset({Part.HISTORY, Part.DEMONSTRATION, Part.DEMONSTRATION_TEXT})


def with_distinct_keys(items: Sequence[Item]) -> list[Item]:
    """The items, each different dialogue under its own (dataset, id). Prompts, shared prefixes
    and demonstrations are keyed by it, so two different dialogues under one id (a user's file
    that reuses ids) would otherwise be read as one. A clash is renamed ``ID#2``, ``ID#3``...;
    a dialogue given twice with the same content keeps its key."""
    first: dict[tuple[str, str], Dialogue] = {}
    renamed: dict[int, Dialogue] = {}
    out = []
    for dialogue, index in items:
        known = first.setdefault((dialogue.dataset, dialogue.id), dialogue)
        if known is not dialogue and known != dialogue:
            if id(dialogue) not in renamed:
                renamed[id(dialogue)] = _under_free_id(dialogue, first)
            dialogue = renamed[id(dialogue)]
        out.append((dialogue, index))
    return out


def _under_free_id(dialogue: Dialogue, taken: dict[tuple[str, str], Dialogue]) -> Dialogue:
    moved = replace(dialogue, id=numbered(dialogue.id, lambda name: (dialogue.dataset, name) in taken))
    taken[(moved.dataset, moved.id)] = moved
    return moved


def unlabelled(items: Sequence[Item]) -> list[Item]:
    """The items with their dialogues' gold emotions removed: a prediction never reads them, so
    a gold label of any label set (or of none) cannot break it."""
    stripped: dict[tuple[str, str], Dialogue] = {}
    out = []
    for dialogue, index in items:
        key = (dialogue.dataset, dialogue.id)
        if key not in stripped:
            stripped[key] = dialogue.without_emotions()
        out.append((stripped[key], index))
    return out


def shorten(text: str, tokenizer: SegmentTokenizer, drop_tokens: int) -> str | None:
    """``text`` with at least about ``drop_tokens`` tokens taken out of its middle (cut between
    characters as a reader sees them, so no accent, emoji or flag is split); ``None`` when too
    little would be left."""
    ids = tokenizer.ids(text)
    chars_per_token = len(text) / max(1, len(ids))
    keep_tokens = len(ids) - drop_tokens - len(tokenizer.ids(CUT_MARK)) - 2
    keep = min(len(text) - 1, math.floor(keep_tokens * chars_per_token * 0.9))
    if keep < 2:
        return None
    head_end, tail_start = (keep + 1) // 2, len(text) - keep // 2
    # Moving the cuts outwards only drops more. Where that would leave nothing (a letter under a
    # pile of accents, a budget smaller than one emoji) a label is worth more than an intact
    # character: there the cut is by code points.
    if cut_before(text, head_end) + len(text) - cut_after(text, tail_start) >= 2:
        head_end, tail_start = cut_before(text, head_end), cut_after(text, tail_start)
    return text[:head_end].rstrip() + CUT_MARK + text[tail_start:].lstrip()


def shortest(text: str, tokenizer: SegmentTokenizer) -> str | None:
    """``text`` cut down to its first and last few tokens; ``None`` when that is not shorter."""
    cut = shorten(text, tokenizer, len(tokenizer.ids(text)) - len(tokenizer.ids(CUT_MARK)) - 2 - _SHORTEST_TOKENS)
    return cut if cut is not None and len(tokenizer.ids(cut)) < len(tokenizer.ids(text)) else None


def encode_fitting(
    items: Sequence[Item], encode: Callable[[Sequence[Item]], list[EncodedExample | PromptTooLong]], tokenizer: SegmentTokenizer
) -> tuple[list[EncodedExample], list[str | None]]:
    """``encode(items)``, cutting every utterance whose prompt cannot fit; also, per item, the
    text its own utterance was cut to (``None``: not cut). ``encode`` gives each item's prompt,
    or the budget's error for one that cannot fit; a prompt that cannot fit even after cutting
    (the fixed wording is over the budget) raises that error.

    An utterance is cut by its own prompt only (history goes before it is cut), so its cut text
    is the same whichever other items are encoded with it; prompts read the earlier utterances
    of a dialogue as given, so a caller that labels a dialogue a turn at a time passes the
    earlier ones as they were cut (the service does). Every prompt that does not fit is cut in
    the same round, so a dialogue of many long utterances costs a few encodings, not one each."""
    given = list(items)
    items, precut = _precut(given)
    rounds: dict[tuple[str, str, int], int] = {}
    while True:
        encoded = encode(items)
        errors = [e for e in encoded if isinstance(e, PromptTooLong)]
        if not errors and precut:
            # A text that fits as cut to _LONGEST_TOKENIZED characters may fit whole: it is given
            # back, and cut only as far as the budget needs (a model of a very long context).
            restored, precut = _without_needless_precuts(items, precut), {}
            if restored != items:
                items = restored
                continue
        if not errors:
            fitted = [e for e in encoded if not isinstance(e, PromptTooLong)]
            return fitted, [_cut_text(d.utterances[i], g.utterances[i]) for (d, i), (g, _) in zip(items, given)]
        changed: set[tuple[str, str, int]] = set()
        for error in errors:
            example = error.example
            key = (example.dataset, example.dialogue_id, example.index)
            # An utterance this round already changed (cut, or its speaker's name cut) has a
            # stale error: the next round measures it again.
            if key not in changed:
                items = _cut(items, error, tokenizer, rounds, changed)


def _cut_text(fitted: Utterance, given: Utterance) -> str | None:
    """The text an utterance was read as, when it or its speaker's name was cut."""
    return fitted.text if (fitted.text, fitted.speaker) != (given.text, given.speaker) else None


# -- text too long to tokenize whole -------------------------------------------------------------
# No text or name longer than this is tokenized whole: a 50 MB utterance took a minute and 7 GB
# of memory to tokenize, twice, to keep a few hundred tokens of it. Cut to this many characters
# first (start and end kept, as every cut), it is then cut as far as the budget needs. A prompt
# that keeps all of the first cut gets the whole text back, so no model is given less than fits.
_LONGEST_TOKENIZED = 1 << 20

Key = tuple[str, str]


def _precut(items: list[Item]) -> tuple[list[Item], dict[Key, tuple[Dialogue, Dialogue]]]:
    """The items with the texts of the utterances they ask about, and the names of their
    speakers, cut to :data:`_LONGEST_TOKENIZED` characters where longer (a name in every line of
    its speaker); and per dialogue so cut, (as given, as cut)."""
    asked: dict[Key, tuple[Dialogue, set[int]]] = {}
    for dialogue, index in items:
        asked.setdefault((dialogue.dataset, dialogue.id), (dialogue, set()))[1].add(index)
    precut = {}
    for key, (dialogue, indices) in asked.items():
        long_names = {u.speaker for i, u in enumerate(dialogue.utterances) if i in indices and len(u.speaker) > _LONGEST_TOKENIZED}
        if not long_names and all(len(dialogue.utterances[i].text) <= _LONGEST_TOKENIZED for i in indices):
            continue
        names: dict[str, str] = {}
        for name in sorted(long_names, key=dialogue.speakers.index):
            others = [s for s in dialogue.speakers if s not in long_names] + list(names.values())
            names[name] = apart(_head_and_tail(name), others)
        utterances = tuple(
            replace(
                u,
                speaker=names.get(u.speaker, u.speaker),
                text=_head_and_tail(u.text) if i in indices and len(u.text) > _LONGEST_TOKENIZED else u.text,
            )
            for i, u in enumerate(dialogue.utterances)
        )
        precut[key] = (dialogue, dialogue.with_utterances(utterances))
    return _with_dialogues(items, {key: cut for key, (_, cut) in precut.items()}), precut


def _head_and_tail(text: str) -> str:
    """``text`` cut to its first and last ``_LONGEST_TOKENIZED / 2`` characters."""
    half = _LONGEST_TOKENIZED // 2
    head_end, tail_start = cut_before(text, half), cut_after(text, len(text) - half)
    if head_end + len(text) - tail_start < 2:  # a pile of accents on one letter: cut by code points
        head_end, tail_start = half, len(text) - half
    return text[:head_end].rstrip() + CUT_MARK + text[tail_start:].lstrip()


def _without_needless_precuts(items: list[Item], precut: dict[Key, tuple[Dialogue, Dialogue]]) -> list[Item]:
    """The items with every text and name the budget kept as :func:`_precut` cut it given back whole."""
    restored = {}
    for key, (given, cut) in precut.items():
        fitted = next(d for d, _ in items if (d.dataset, d.id) == key)
        triples = list(zip(given.utterances, cut.utterances, fitted.utterances))
        kept_names = {c.speaker for g, c, f in triples if g.speaker != c.speaker == f.speaker}
        utterances = tuple(
            replace(
                f,
                text=g.text if g.text != c.text == f.text else f.text,
                speaker=g.speaker if c.speaker in kept_names and g.speaker != c.speaker else f.speaker,
            )
            for g, c, f in triples
        )
        restored[key] = fitted.with_utterances(utterances)
    return _with_dialogues(items, restored)


def _with_dialogues(items: list[Item], dialogues: dict[Key, Dialogue]) -> list[Item]:
    return [(dialogues.get((d.dataset, d.id), d), i) for d, i in items]


def _cut(
    items: list[Item],
    error: PromptTooLong,
    tokenizer: SegmentTokenizer,
    rounds: dict[tuple[str, str, int], int],
    changed: set[tuple[str, str, int]],
) -> list[Item]:
    example = error.example
    key = (example.dataset, example.dialogue_id, example.index)
    dialogue = next((d for d, _ in items if (d.dataset, d.id) == key[:2]), None)
    if dialogue is None or rounds.get(key, 0) >= _MAX_ROUNDS:
        raise error
    utterance = dialogue.utterances[example.index]
    rounds[key] = rounds.get(key, 0) + 1
    text, name = _text_or_name_cut(utterance.text, utterance.speaker, example, error.excess, tokenizer)
    if text is not None:
        utterances = list(dialogue.utterances)
        utterances[example.index] = replace(utterance, text=text)
        changed.add(key)
    else:
        # What is over the budget is the speaker's name. It is cut in every utterance of
        # theirs, so the dialogue still tells who spoke when.
        if name is None:
            raise error
        name = apart(name, [s for s in dialogue.speakers if s != utterance.speaker])
        utterances = [replace(u, speaker=name) if u.speaker == utterance.speaker else u for u in dialogue.utterances]
        for index, other in enumerate(dialogue.utterances):  # each of them is labelled with a cut name: say so
            if other.speaker == utterance.speaker:
                rounds.setdefault((*key[:2], index), 0)
                changed.add((*key[:2], index))
    cut = dialogue.with_utterances(tuple(utterances))
    return [(cut if (d.dataset, d.id) == key[:2] else d, i) for d, i in items]


def apart(name: str, others: Sequence[str]) -> str:
    """``name`` as a cut speaker's name, told apart from the ``others`` in its dialogue: two long
    names cut to the same start and end ("Zed" and 250 or 260 z's) would make two people one,
    and the prompts would give one's lines to the other. A name already taken is numbered
    ``NAME#2``, ``NAME#3``..., as :func:`with_distinct_keys` numbers a dialogue's id."""
    taken = set(others)
    return name if name not in taken else numbered(name, taken.__contains__)


def numbered(name: str, taken: Callable[[str], bool]) -> str:
    """``NAME#2``, ``NAME#3``...: the first that is not ``taken`` (how a clash of dialogue ids or
    of cut speaker names is told apart)."""
    suffix = 2
    while taken(f"{name}#{suffix}"):
        suffix += 1
    return f"{name}#{suffix}"


def _text_or_name_cut(text: str, speaker: str, example: Example, excess: int, tokenizer: SegmentTokenizer) -> tuple[str | None, str | None]:
    """The utterance's text cut by ``excess`` tokens, else its speaker's name so cut, as
    (text, None) or (None, name); (None, None) when neither can be cut."""
    # The paper's template quotes the utterance twice (history line and question).
    shorter = shorten(text, tokenizer, math.ceil(excess / _times_shown(text, example)))
    if shorter is not None:
        return shorter, None
    name = shorten(speaker, tokenizer, math.ceil(excess / _times_shown(speaker, example)))
    if name is not None:
        return None, name
    # Neither alone can give all of it (a long text said by a long name): the name is cut as far
    # as it goes, since it must give some anyway and says less than the text; the next round
    # takes the rest from the text.
    name = shortest(speaker, tokenizer)
    return (None, name) if name is not None else (shortest(text, tokenizer), None)


def _times_shown(text: str, example: Example) -> int:
    # Only what is left once history and demonstration are gone, as the excess was measured
    # then: an identical earlier turn in the history would otherwise halve the cut.
    kept = [s for s in example.segments if s.part not in _DROPPED_FIRST]
    return max(1, sum(text in segment.text for segment in kept))
