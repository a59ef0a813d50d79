"""IEMOCAP: the COSMIC pickle, or the raw release as USC distributes it.

The raw layout is ``Session{1..5}/dialog/transcriptions/<dialogue>.txt`` (lines
``<turn> [<start>-<end>]: <text>``) and ``Session{1..5}/dialog/EmoEvaluation/<dialogue>.txt``
(lines ``[<start> - <end>]\\t<turn>\\t<code>\\t[V, A, D]``). The literature's 6-class convention is
kept: happy and excited stay apart, and turns whose consensus label is none of the six
(``xxx``, ``oth``, ``fea``, ``sur``, ``dis``) are dropped, as in the COSMIC pickle. Session 5 is test;
dev is the 12 dialogues of sessions 1-4 that the COSMIC pickle uses for validation, so both
sources give the same splits.

What is read, and what is refused (an error naming file:line):

- A transcription line that starts with a turn name of its dialogue (``<dialogue>_``) is a turn: it
  must parse, and its name must give the speaker (``<dialogue>_M...`` or ``<dialogue>_F...``). Other
  lines are not turns and are skipped: the release has some (``M: Yeah.``).
- A turn the EmoEvaluation file does not evaluate is dropped, like the six-class convention's
  codes: the release transcribes turns nobody labelled (``<dialogue>_MXX0``, overlapping laughter
  and the like).
- In the EmoEvaluation file every line that starts with ``[`` must parse, name a turn of its
  dialogue and carry a known code; a file with no such line is refused (it would drop its
  whole dialogue).
- Text is UTF-8 without NUL in every line that is used: a turn that is kept and an evaluation line
  (``[...``). Lines never used (evaluators' notes, lines that are not turns, dropped turns) are not
  checked, so a stray byte in a note cannot block the release (the loader decoded with
  ``errors="replace"`` before, and the raw release was not at hand to check it is all UTF-8).
"""

from __future__ import annotations

import re
from pathlib import Path

from instructerc.data.cosmic import read_cosmic
from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.loader import Loader, checked_text, nonempty_text, require_file
from instructerc.data.published import warn_if_partial
from instructerc.data.safe_pickle import describe
from instructerc.errors import InputError
from instructerc.labels.benchmarks import IEMOCAP
from instructerc.labels.label_set import LabelSet

CODES = {"hap": "happy", "sad": "sad", "neu": "neutral", "ang": "angry", "exc": "excited", "fru": "frustrated"}
DROPPED_CODES = frozenset({"xxx", "oth", "fea", "sur", "dis"})  # none of the six: dropped by design
COSMIC_DEV_DIALOGUES = frozenset(
    {
        "Ses01M_impro01",
        "Ses01M_script03_1",
        "Ses02F_impro02",
        "Ses02F_impro07",
        "Ses02M_script01_2",
        "Ses03F_impro01",
        "Ses03M_impro02",
        "Ses03M_impro08a",
        "Ses03M_script02_2",
        "Ses03M_script03_2",
        "Ses04F_impro07",
        "Ses04F_script02_1",
    }
)
_TRANSCRIPT_LINE = re.compile(r"^(?P<turn>Ses\S+) \[[\d.]+-[\d.]+\]:\s?(?P<text>.*)$")
_EVALUATION_LINE = re.compile(r"^\[[\d.]+ - [\d.]+\]\t(?P<turn>\S+)\t(?P<code>\S+)\t\[")
_TRANSCRIPT_FORM = "<turn> [<start>-<end>]: <text>"
_EVALUATION_FORM = "[<start> - <end>]<TAB><turn><TAB><code><TAB>[V, A, D]"
# What errors="surrogateescape" makes of each byte that is not UTF-8 (a valid file decodes to no
# surrogate: UTF-8 cannot encode one), so a bad byte is found in the line that is read.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def is_raw_release(path: Path) -> bool:
    return path.is_dir() and any(path.glob("Session[1-5]/dialog/transcriptions"))


def split_of(dialogue_id: str) -> str:
    if dialogue_id.startswith("Ses05"):
        return "test"
    return "dev" if dialogue_id in COSMIC_DEV_DIALOGUES else "train"


def read_lines(path: Path) -> list[str]:
    """The lines of a file of the release; bytes that are not UTF-8 stay escaped until :func:`checked`
    refuses them in a line that is read (a folder, a broken link or an unreadable file: an error)."""
    if path.is_symlink() and not path.exists():  # require_file would say "file not found" of a name `ls` shows
        raise InputError("a symbolic link to nothing (its target is missing)", path=path)
    require_file(path)
    try:
        # utf-8-sig: a byte-order mark (a file saved by an editor that adds one) would otherwise
        # open the first line, which then no longer starts with a turn name and is skipped as a
        # line that is no turn: the dialogue's first turn lost without a word.
        return path.read_text(encoding="utf-8-sig", errors="surrogateescape").splitlines()
    except OSError as error:
        raise InputError(f"cannot read: {error.strerror}", path=path) from None


def checked(line: str, *, path: Path, number: int) -> str:
    """``line`` if it is text as the CSV and JSONL readers require it: UTF-8, no NUL."""
    bad = _ESCAPED_BYTE.search(line)
    if bad is not None:
        where = f"byte {ord(bad.group()) - 0xDC00:#04x} at character {bad.start() + 1}"
        raise InputError(f"not UTF-8 text ({where}): save the file as UTF-8", path=path, line=number)
    return checked_text(line, path=path, line=number)


def speaker_of(turn: str, dialogue: str, *, path: Path, number: int) -> str:
    """``M`` or ``F``, from a turn name ``<dialogue>_M000`` (a name of another dialogue is refused)."""
    prefix = f"{dialogue}_"
    if not turn.startswith(prefix) or turn[len(prefix) : len(prefix) + 1] not in ("M", "F"):
        raise InputError(
            f"turn {describe(turn)} is not a turn name of {dialogue}: expected {prefix} then the speaker, M or F ({prefix}F000)",
            path=path,
            line=number,
        )
    return turn[len(prefix)]


def read_evaluation(file: Path, dialogue: str) -> dict[str, str]:
    """Turn name -> consensus code, from one EmoEvaluation file: each line opening with ``[`` is a turn's."""
    codes = {}
    for number, line in enumerate(read_lines(file), start=1):
        if not line.lstrip().startswith("["):
            continue  # the header (%), blank lines, and the evaluators' own lines (C-E1:, A-E1:, ...)
        match = _EVALUATION_LINE.match(checked(line, path=file, number=number))
        if match is None:
            raise InputError(f"an evaluation line that does not parse (expected {_EVALUATION_FORM})", path=file, line=number)
        speaker_of(match["turn"], dialogue, path=file, number=number)
        code = match["code"]
        if code not in CODES and code not in DROPPED_CODES:
            known = ", ".join([*CODES, *sorted(DROPPED_CODES)])
            raise InputError(f"unknown emotion code {describe(code)} (expected one of: {known})", path=file, line=number)
        codes[match["turn"]] = code
    if not codes:  # a file in another format: its whole dialogue would vanish
        raise InputError(f"no evaluated turn (no line {_EVALUATION_FORM})", path=file)
    return codes


def _utterance(line: str, number: int, *, transcript: Path, codes: dict[str, str], label_set: LabelSet) -> Utterance | None:
    """The utterance of one transcription line, or None for a line that is no turn or a turn dropped by design."""
    dialogue, stripped = transcript.stem, line.strip()
    if not stripped.startswith(f"{dialogue}_"):
        return None  # not a turn: the release has such lines ("M: Yeah.")
    match = _TRANSCRIPT_LINE.match(stripped)
    if match is None:
        raise InputError(f"a turn of {dialogue} that does not parse (expected {_TRANSCRIPT_FORM})", path=transcript, line=number)
    turn = match["turn"]
    speaker = speaker_of(turn, dialogue, path=transcript, number=number)
    if codes.get(turn) not in CODES:
        return None  # a code outside the six, or a turn nobody evaluated (MXX0): dropped by design
    checked(line, path=transcript, number=number)
    text = nonempty_text(match["text"], path=transcript, line=number, field="text")
    return Utterance(speaker=speaker, text=text, emotion=label_set.canonical(CODES[codes[turn]]), extra={"turn": turn})


def read_raw_dialogue(transcript: Path, evaluation: Path, split: str, label_set: LabelSet) -> Dialogue:
    lines = read_lines(transcript)  # first: a folder or a broken link in its place is the first thing to say
    if not (evaluation.exists() or evaluation.is_symlink()):  # a folder or a broken link: read_lines says so
        raise InputError("no EmoEvaluation file for this transcription", path=transcript)
    codes = read_evaluation(evaluation, transcript.stem)
    numbered = enumerate(lines, start=1)
    found = (_utterance(line, number, transcript=transcript, codes=codes, label_set=label_set) for number, line in numbered)
    return Dialogue(id=transcript.stem, dataset="iemocap", split=split, utterances=tuple(u for u in found if u is not None))


# The sessions each split is drawn from (see :func:`split_of`).
SPLIT_SESSIONS = {"train": (1, 2, 3, 4), "dev": (1, 2, 3, 4), "test": (5,)}
_SESSION_NAMES = {"train": "sessions 1-4", "dev": "sessions 1-4", "test": "session 5"}


def check_sessions(root: Path, split: str) -> None:
    """Every session ``split`` is drawn from has transcriptions. The release is read by globbing
    ``Session[1-5]``: a session left out of a download or a copy would only make its split smaller
    (with Session5 gone, test is empty) and every figure on it a figure of part of IEMOCAP."""
    for number in SPLIT_SESSIONS[split]:
        folder = root / f"Session{number}" / "dialog" / "transcriptions"
        if not any(t for t in folder.glob("*.txt") if not t.name.startswith("._")):
            raise InputError(
                f"Session{number} has no transcriptions (expected {folder.relative_to(root)}/*.txt): IEMOCAP's {split} split "
                f"is drawn from {_SESSION_NAMES[split]}, and without this one it would be partial",
                path=root / f"Session{number}",
            )


def read_raw_release(root: Path, split: str, label_set: LabelSet | None = IEMOCAP) -> list[Dialogue]:
    label_set = label_set or IEMOCAP
    check_sessions(root, split)
    dialogues = []
    for transcript in sorted(root.glob("Session[1-5]/dialog/transcriptions/*.txt")):
        if transcript.name.startswith("._") or split_of(transcript.stem) != split:
            continue
        evaluation = transcript.parent.parent / "EmoEvaluation" / transcript.name
        dialogue = read_raw_dialogue(transcript, evaluation, split, label_set)
        if dialogue.utterances:  # none of its turns is of the six classes, as the COSMIC pickle leaves it out
            dialogues.append(dialogue)
    warn_if_partial("iemocap", split, dialogues, root)
    return dialogues


def read_iemocap(path: Path, split: str, label_set: LabelSet | None = IEMOCAP) -> list[Dialogue]:
    for candidate in (path, path / "IEMOCAP_full_release", path / "iemocap"):
        if is_raw_release(candidate):
            return read_raw_release(candidate, split, label_set)
    return read_cosmic(path, split, label_set, dataset="iemocap")


LOADER = Loader(
    name="iemocap",
    description="IEMOCAP: raw USC release (Session*/dialog/...) or the COSMIC pickle",
    read=read_iemocap,
    label_set=IEMOCAP,
)
