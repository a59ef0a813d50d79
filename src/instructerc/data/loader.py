"""What a loader is, and the checks every loader shares."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.text import breaks_line, shows_nothing
from instructerc.data.validation import TextProblem, check_string
from instructerc.errors import InputError
from instructerc.files import HEAD_BYTES, foreign_encoding, refuse_broken_link
from instructerc.labels.label_set import LabelSet

ReadFn = Callable[[Path, str, "LabelSet | None"], "list[Dialogue]"]


@dataclass(frozen=True)
class Loader:
    """A registered way of reading dialogues.

    Attributes:
        name: the registered name (``meld``, ``cosmic-iemocap``, ``jsonl``, ...).
        description: one line for ``instructerc data list``.
        read: ``read(path, split, label_set)``: the dialogues of one split; ``path`` is what the
            user gave (a data root, a dataset folder or a file).
        label_set: the labels the source uses; ``None`` where the data defines them (JSONL).
    """

    name: str
    description: str
    read: ReadFn
    label_set: LabelSet | None


def as_path(value: Any, argument: str) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``, as a Python caller passes a file name) as a Path;
    anything else a TypeError naming ``argument``, and an empty string an :class:`InputError`
    (``Path("")`` is the working directory: an unset variable would name it without a word)."""
    if isinstance(value, str) and not value.strip():
        raise InputError("an empty path", field=argument)
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a path (a str or pathlib.Path), not {type(value).__name__}")
    return Path(value)


def require_file(path: Path) -> Path:
    refuse_broken_link(path)
    if path.is_dir():
        raise InputError("is a folder; a file is needed here", path=path)
    if path.exists() and not path.is_file():
        # A pipe or device (/dev/stdin, <(...)) exists; readers may go through a file twice.
        raise InputError("is not a regular file (a pipe or a device): save it to a file first", path=path)
    if not path.is_file():
        raise InputError("file not found", path=path)
    return path


def check_encoding(path: Path) -> None:
    """An :class:`InputError` when the file's first bytes show it is not UTF-8 text at all: UTF-16
    or UTF-32 (with a byte-order mark or, for ASCII content, its NUL bytes: without a mark these
    decode as "valid" UTF-8 full of NULs, and the JSON parser then blames column 2) or gzip."""
    try:
        with path.open("rb") as handle:
            head = handle.read(max(HEAD_BYTES, _ARCHIVE_HEAD_BYTES))
    except OSError as error:
        raise InputError(f"cannot read: {error.strerror or error}", path=path) from None
    problem = foreign_encoding(head[:HEAD_BYTES]) or _archive(head)
    if problem is not None:
        raise InputError(problem, path=path)


# A spreadsheet saved as .xlsx (a zip) or a file compressed and kept under its .jsonl or .csv name
# decodes as "UTF-8" up to its first binary byte, and was then blamed on that byte ("not UTF-8
# text (byte 0xe4): save the file as UTF-8"), which no re-save fixes. (gzip: foreign_encoding.)
_ARCHIVES = (
    (rb"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook, a .zip), not text: save or unzip it as a UTF-8 text file first"),
    # bzip2's block size digit and block magic too: "BZh" alone may start a text file.
    (rb"BZh[1-9]1AY&SY", "bzip2-compressed, not text: decompress it first (bunzip2)"),
    (rb"\xfd7zXZ\x00", "xz-compressed, not text: decompress it first (unxz)"),
    (rb"\x28\xb5\x2f\xfd", "zstd-compressed, not text: decompress it first (unzstd)"),
    (rb"7z\xbc\xaf\x27\x1c", "a 7-Zip archive, not text: extract the file it holds first"),
)
_ARCHIVE_HEAD_BYTES = 10


def _archive(head: bytes) -> str | None:
    """What archive or compressed file ``head`` starts, if any."""
    return next((problem for magic, problem in _ARCHIVES if re.match(magic, head)), None)


def find_in(path: Path, candidates: list[Path], what: str) -> Path:
    """The first existing candidate, else an error saying what was looked for where."""
    if path.is_file():
        # One split's CSV given as --data: looking inside it as a folder would name paths below a file.
        raise InputError(f"is a file, not a folder holding the {what}: give the folder (each split is its own file there)", path=path)
    for candidate in candidates:
        # A symlink loop or a link to nothing in a candidate's place is not "not found": the name is
        # there, and the error must say what is wrong with it.
        refuse_broken_link(candidate)
        if candidate.exists():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise InputError(f"{what} not found (looked for {looked})", path=path)


def canonical_emotion(label_set: LabelSet, raw: str, *, path: Path, line: int | None, field: str) -> str:
    label = label_set.canonical(raw)
    if label is None:
        raise InputError(
            f"unknown emotion '{raw}' for label set {label_set.name} (expected one of: {', '.join(label_set.labels)})",
            path=path,
            line=line,
            field=field,
        )
    return label


def nonempty_text(raw: str, *, path: Path, line: int | None, field: str) -> str:
    text = _nonempty(raw, "empty utterance text", path=path, line=line, field=field)
    if shows_nothing(text):
        raise InputError("utterance text of invisible characters only", path=path, line=line, field=field)
    return text


def nonempty_speaker(raw: str, *, path: Path, line: int | None, field: str) -> str:
    speaker = _nonempty(raw, "empty speaker", path=path, line=line, field=field)
    if breaks_line(speaker):
        raise InputError(SPEAKER_BREAKS_LINE, path=path, line=line, field=field)
    return speaker


SPEAKER_BREAKS_LINE = "a speaker's name holds a line break or control character: a name is one line of text"


def nonempty_key(raw: str, *, path: Path, line: int | None, field: str) -> str:
    """A CSV column that names a row's dialogue: empty, it would file the row under a dialogue
    with an empty id (or one joined with others' empty parts)."""
    return _nonempty(raw, "empty value: it names the row's dialogue", path=path, line=line, field=field)


def numbered_key(raw: str, *, path: Path, line: int, field: str) -> str:
    """A benchmark CSV's dialogue column (MELD's Dialogue_ID, EmoryNLP's Season, Episode and
    Scene_ID), which the official files write as whole numbers, in one spelling: ``1``, ``01``
    and `` 1 `` are one dialogue. Taken as text, ``1.0`` or ``01`` (a spreadsheet's re-save) beside
    ``1`` split a dialogue in two without a word; anything else (``d1``) is not the benchmark's file."""
    return str(whole_number(nonempty_key(raw, path=path, line=line, field=field), path=path, line=line, field=field))


def whole_number(raw: str, *, path: Path, line: int, field: str) -> int:
    """``raw`` as a non-negative integer, written in ASCII digits only: ``int()`` alone also takes
    ``-1``, ``+1``, ``1_0`` (ten) and other scripts' digits, none of which a benchmark file holds."""
    value = raw.strip()
    if not (value.isascii() and value.isdigit()):
        raise InputError(f"{field} '{value}' is not a whole number (0, 1, 2, ...)", path=path, line=line, field=field)
    return int(value)


def _nonempty(raw: str, message: str, *, path: Path, line: int | None, field: str) -> str:
    """``raw`` stripped; ``line`` is None where the source has no lines (a pickle)."""
    value = raw.strip()
    if not value:
        raise InputError(message, path=path, line=line, field=field)
    return value


def checked_text(raw: str, *, path: Path, line: int | None = None, field: str | None = None) -> str:
    """``raw`` if it is text every reader accepts (no NUL, no lone surrogate: JSONL refuses them,
    and writing one out fails), else an :class:`InputError` naming where it is."""
    try:
        check_string(raw)
    except TextProblem as problem:
        raise InputError(problem.message, path=path, line=line, field=field) from None
    return raw


def not_utf8(path: Path) -> InputError:
    """The error for a file that is not UTF-8, naming the line of its first bad byte. Read line by
    line (a file of one huge line is read whole, as its reader did): never the whole file at once."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
        problem = foreign_encoding(head)
        if problem is not None:
            return InputError(problem, path=path)
        handle.seek(0)
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return InputError(f"not UTF-8 text (byte {raw[error.start]:#04x}): save the file as UTF-8", path=path, line=number)
    return InputError("not UTF-8 text: save the file as UTF-8", path=path)


def read_csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a UTF-8 CSV with the line each starts on, after checking the header has ``required``.
    Every row has exactly the header's fields, and every field is text (no NUL), as in JSONL."""
    require_file(path)
    check_encoding(path)
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as error:  # no read permission: the user's to fix, so one line, not a traceback
        raise InputError(f"cannot read: {error.strerror or error}", path=path) from None
    with handle:
        reader = csv.reader(handle)
        end = 0
        try:
            header = _checked_header(next(reader, []), required, path)
            end = reader.line_num
            for fields in reader:
                start, end = end + 1, reader.line_num
                if fields:  # a blank line holds no row (csv.DictReader skipped them too)
                    yield start, _csv_row(header, fields, path=path, start=start, end=end)
        except csv.Error as error:
            raise _malformed(error, path, start=end + 1, end=reader.line_num) from None
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        except OSError as error:
            raise InputError(f"cannot read: {error.strerror or error}", path=path, line=reader.line_num + 1) from None


def _malformed(error: csv.Error, path: Path, *, start: int, end: int) -> InputError:
    """The error for a row the csv module refuses, on the line the row starts on. A quote left
    open makes one field of the rest of the file until it passes the module's size limit: named
    at the line the module stopped on, thousands of lines on, with no word of a quote."""
    if "field larger than field limit" not in str(error):
        return InputError(f"malformed CSV: {error}", path=path, line=end)
    runs_on = f" and runs on to line {end}: is a quote left open?" if end > start else ""
    limit = csv.field_size_limit()
    return InputError(f"a field of this row is longer than {limit:,} characters{runs_on}", path=path, line=start)


def _checked_header(raw: list[str], required: tuple[str, ...], path: Path) -> list[str]:
    """The column names, each trimmed (a spreadsheet's ``Emotion `` is the Emotion column, shown
    alike in any editor), after checking none is given twice and ``required`` are all there."""
    if not raw:
        raise InputError("no header row (the file is empty or starts with a blank line)", path=path, line=1)
    header = [column.strip() for column in raw]
    _check_no_column_twice(header, path)
    for column in required:
        if column not in header:
            raise InputError(
                f"missing column '{column}' (header: {', '.join(header) or 'empty'}){_header_hint(column, header)}",
                path=path,
                line=1,
                field=column,
            )
    return header


def _header_hint(column: str, header: list[str]) -> str:
    """What to do about a missing column, for the near misses a re-saved file shows: the column
    in another case, or the whole header in one field (a spreadsheet that saved ';' or tabs)."""
    other_case = [name for name in header if name.casefold() == column.casefold()]
    if other_case:
        return f"; rename '{other_case[0]}' to '{column}' (column names are case-sensitive)"
    separators = [separator for separator in (";", "\t", "|") if len(header) == 1 and separator in header[0]]
    if separators:
        shown = "tabs" if separators[0] == "\t" else f"'{separators[0]}'"
        return f"; its fields are separated by {shown}: save it as CSV with commas"
    return ""


def _check_no_column_twice(header: list[str], path: Path) -> None:
    """A column named twice (two files' columns pasted side by side, a column copied) would be read
    from its last copy only, the other dropped without a word: the wrong Emotion column then gives
    every row an emotion from another column. Unnamed columns (trailing commas) hold nothing read."""
    seen: set[str] = set()
    for column in header:
        if column.strip() and column in seen:
            raise InputError(f"column '{column}' appears twice in the header: keep one", path=path, line=1, field=column)
        seen.add(column)


def _csv_row(header: list[str], fields: list[str], *, path: Path, start: int, end: int) -> dict[str, str]:
    if len(fields) != len(header):
        # A quote left open swallows the lines after it into one field: say where the row ended.
        spans = f" (it runs on to line {end}: is a quote left open?)" if end > start else ""
        raise InputError(f"row has {len(fields)} fields, expected {len(header)}{spans}", path=path, line=start)
    return {column: checked_text(value, path=path, line=start, field=column) for column, value in zip(header, fields)}


class TurnCollector:
    """Gathers CSV rows into dialogues, each ordered by its rows' ``Utterance_ID``."""

    def __init__(self, dataset: str, split: str, file: Path) -> None:
        self.dataset, self.split, self.file = dataset, split, file
        self._turns: dict[str, list[tuple[int, Utterance]]] = {}
        self._lines: dict[tuple[str, int], list[int]] = {}  # (dialogue, Utterance_ID) -> the lines that gave it

    def add(self, dialogue_id: str, row: dict[str, str], line: int, utterance: Utterance) -> None:
        order = whole_number(row["Utterance_ID"], path=self.file, line=line, field="Utterance_ID")
        self._lines.setdefault((dialogue_id, order), []).append(line)
        self._turns.setdefault(dialogue_id, []).append((order, utterance))

    def dialogues(self) -> list[Dialogue]:
        self._check_some_rows()
        self._check_one_row_per_turn()
        return [
            Dialogue(
                id=key, dataset=self.dataset, split=self.split, utterances=tuple(u for _, u in sorted(items, key=lambda item: item[0]))
            )
            for key, items in self._turns.items()
        ]

    def _check_one_row_per_turn(self) -> None:
        """A second row at one position (a row pasted twice, two files concatenated) would make the
        dialogue a turn longer and the order of the two a guess. Checked once every row is read, so
        a malformed row earlier in the file is the error reported first."""
        repeated = [(lines[1], lines[0], key) for key, lines in self._lines.items() if len(lines) > 1]
        if repeated:
            line, first, (dialogue_id, order) = min(repeated)
            raise InputError(
                f"Utterance_ID {order} of dialogue '{dialogue_id}' is also on line {first}", path=self.file, line=line, field="Utterance_ID"
            )

    def _check_some_rows(self) -> None:
        """A benchmark split is never empty: a file of the header alone (cut short, or saved from
        an empty selection) would give a split of no dialogue, and ``data stats`` a row of zeros,
        ``evaluate`` a score of nothing, without a word."""
        if not self._turns:
            raise InputError(f"no rows below the header: the {self.dataset} {self.split} split would be empty", path=self.file)
