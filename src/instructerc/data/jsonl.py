"""The user format: one dialogue per line.

``{"id": "d1", "utterances": [{"speaker": "Ann", "text": "Hi!", "emotion": "joy"}, ...]}``

``emotion`` is optional; ``dataset`` (the source, for unified scoring; a benchmark's name in any case) is optional; any other key,
on the dialogue or on an utterance, is kept and written back unchanged.

Speakers and emotions are read in one form (:func:`instructerc.data.text.canonical_speaker`,
:func:`~instructerc.data.text.canonical_label`: NFC, no white space or invisible characters at
the ends, no text-direction controls anywhere), so names and labels that look the same are the same; they are written back so, as the
model read them. Texts are read as sent, trimmed.
"""

from __future__ import annotations

import codecs
import json
import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping

from instructerc.data.dialogue import SPLITS, Dialogue, Origin, Utterance, canonical_split
from instructerc.data.loader import (
    Loader,
    as_path,
    canonical_emotion,
    check_encoding,
    find_in,
    nonempty_speaker,
    nonempty_text,
    not_utf8,
    require_file,
)
from instructerc.data.text import breaks_line, canonical_label, canonical_speaker
from instructerc.data.validation import TextProblem, check_value, load_json, printable
from instructerc.errors import InputError
from instructerc.files import atomic_write
from instructerc.labels.benchmarks import BENCHMARK_LABEL_SETS
from instructerc.labels.label_set import LabelSet
from instructerc.labels.unified import unified_forms

_DIALOGUE_KEYS = ("id", "dataset", "utterances")
# The dataset of a dialogue whose record names none, where no file or folder name should stand
# in for it (``predict``: a user's ``meld.jsonl`` is not MELD unless its dialogues say so). A
# record cannot give it (a named dataset is a non-empty string) and it is not written back.
UNNAMED_DATASET = ""
_UTTERANCE_KEYS = ("speaker", "text", "emotion")
PREDICTION_KEYS = ("predicted_emotion", "emotion_scores", "generated", "truncated", "predicted_original_emotion")
"""The keys a prediction may add to an utterance; a prediction replaces all of them."""


def parse_dialogue(record: Any, *, path: Path, line: int, split: str, label_set: LabelSet | None, default_dataset: str) -> Dialogue:
    """One JSONL record as a :class:`Dialogue`, or an :class:`InputError` naming line and field."""
    if isinstance(record, list):
        # A whole file written as one JSON array of dialogues is the usual near miss.
        raise InputError(
            "a line must be a JSON object, not a list (JSONL holds one dialogue object per line, not a JSON array)", path=path, line=line
        )
    if not isinstance(record, dict):
        raise InputError(f"a line must be a JSON object, not {json_kind(record)}", path=path, line=line)
    try:
        check_value(record)
    except TextProblem as problem:
        raise InputError(problem.message, path=path, line=line, field=problem.field) from None
    if "utterances" not in record:
        raise InputError(missing_key("utterances", record, _FLAT_HINT), path=path, line=line, field="utterances")
    raw_utterances = record["utterances"]
    if not isinstance(raw_utterances, list) or not raw_utterances:
        raise InputError("'utterances' must be a non-empty list", path=path, line=line, field="utterances")
    dialogue_id = record.get("id", f"line-{line}")
    if not isinstance(dialogue_id, (str, int)) or isinstance(dialogue_id, bool):
        # Integers are ids too (they come back as strings): the message must not send users away from them.
        raise InputError(
            f"'id' must be a string or an integer, not {json_kind(dialogue_id)} (leave 'id' out for 'line-{line}')",
            path=path,
            line=line,
            field="id",
        )
    dataset = record.get("dataset", default_dataset)
    if "dataset" in record:
        # A name of invisible characters only (a zero-width space) is as empty as "": it would
        # group dialogues under a dataset no report can show.
        if not isinstance(dataset, str) or not canonical_label(dataset):
            raise InputError("'dataset' must be a non-empty string", path=path, line=line, field="dataset")
        dataset = benchmark_spelling(dataset)
    utterances = tuple(
        _checked_original(
            _parse_utterance(raw, path=path, line=line, where=f"utterances[{index}]", label_set=label_set),
            dataset,
            path=path,
            line=line,
            field=f"utterances[{index}].original_emotion",
        )
        for index, raw in enumerate(raw_utterances)
    )
    extra = {k: v for k, v in record.items() if k not in _DIALOGUE_KEYS}
    return Dialogue(id=str(dialogue_id), dataset=dataset, split=split, utterances=utterances, extra=extra)


# A file of one utterance per line (a CSV turned to JSON) is the usual shape of a user's own data.
_FLAT_HINT = "a line is one dialogue whose turns are in 'utterances', a list of {speaker, text} objects"


def missing_key(key: str, record: dict[str, Any], hint: str = "") -> str:
    """The message for a key ``record`` lacks: the keys it has instead (a user's own field names,
    ``Speaker`` or ``utterance``, show what to rename), and the one that differs only in case."""
    keys = [printable(k)[:40] for k in record][:8]  # a key may be as long as a line: the message stays short
    has = f"it has {', '.join(repr(k) for k in keys)}" if keys else "the object is empty"
    other_case = [k for k in keys if k.casefold() == key.casefold()]
    rename = f"; rename '{other_case[0]}' to '{key}' (keys are case-sensitive)" if other_case else ""
    return f"missing '{key}' ({has}{rename})" + (f"; {hint}" if hint and not rename else "")


def json_kind(value: Any) -> str:
    """What a JSON value is, as its writer would name it; never the value itself, which may be huge."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"the number {value}" if isinstance(value, float) and len(repr(value)) <= 30 else "a number"
    if isinstance(value, str):
        # Text of invisible characters only is as empty as "" where a name or label is read.
        return "a string" if canonical_label(value) else "an empty string"
    return "a list" if isinstance(value, list) else "an object"


def benchmark_spelling(dataset: str) -> str:
    """A benchmark's name as the toolkit spells it (``MELD``, `` meld`` -> ``meld``), so that its
    scoring and ``predicted_original_emotion`` apply however the user wrote it; other names as given."""
    # NFKC and the trim speakers and emotions get: a name pasted with a zero-width space or a BOM,
    # or typed in full-width letters (``ＭＥＬＤ``), shows as the benchmark's name and is meant so.
    folded = canonical_label(unicodedata.normalize("NFKC", dataset)).casefold()
    return folded if folded in BENCHMARK_LABEL_SETS else dataset


def _parse_utterance(raw: Any, *, path: Path, line: int, where: str, label_set: LabelSet | None) -> Utterance:
    if not isinstance(raw, dict):
        raise InputError("an utterance must be an object", path=path, line=line, field=where)
    for key in ("speaker", "text"):
        if key not in raw:
            raise InputError(missing_key(key, raw), path=path, line=line, field=f"{where}.{key}")
        if not isinstance(raw[key], str):
            raise InputError(_not_a_string(key, raw[key]), path=path, line=line, field=f"{where}.{key}")
    speaker = nonempty_speaker(canonical_speaker(raw["speaker"]), path=path, line=line, field=f"{where}.speaker")
    text = nonempty_text(raw["text"], path=path, line=line, field=f"{where}.text")
    emotion = raw.get("emotion")
    if emotion is not None:
        if not isinstance(emotion, str):
            raise InputError(_not_a_string("emotion", emotion), path=path, line=line, field=f"{where}.emotion")
        emotion = canonical_label(emotion)
        if not emotion:
            raise InputError(
                "empty emotion (leave 'emotion' out for an unlabelled utterance)", path=path, line=line, field=f"{where}.emotion"
            )
        if breaks_line(emotion):
            # A label is one word or phrase of the prompt's label statement and of every table; a
            # line break or tab inside one is a broken cell (a CSV field run on), never an emotion.
            raise InputError(
                "an emotion holds a control character (a line break or tab): a label is one line of text",
                path=path,
                line=line,
                field=f"{where}.emotion",
            )
        if label_set is not None:
            emotion = canonical_emotion(label_set, emotion, path=path, line=line, field=f"{where}.emotion")
    extra = {k: v for k, v in raw.items() if k not in _UTTERANCE_KEYS}
    return Utterance(speaker=speaker, text=text, emotion=emotion, extra=extra)


def _not_a_string(key: str, value: Any) -> str:
    """Says what the value is instead: a speaker written as a number (``1``, a spreadsheet's
    speaker column) is meant as a name, and quoting it is the fix."""
    quoted = f' (write it in quotes: "{value}")' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    return f"'{key}' must be a string, not {json_kind(value)}{quoted}"


def _checked_original(utterance: Utterance, dataset: str, *, path: Path, line: int, field: str) -> Utterance:
    """The utterance with its ``original_emotion`` (a benchmark's own gold, as ``data export
    --labels uime`` writes it) in that benchmark's canonical spelling. A benchmark's dialogue is
    scored on it in place of ``emotion``, so it must be one of the benchmark's labels and say the
    same as ``emotion``: a file whose ``emotion`` was corrected by hand would otherwise be scored
    on the stale original without a word. Other dialogues keep it as any other key."""
    if "original_emotion" not in utterance.extra:
        return utterance
    raw = utterance.extra["original_emotion"]
    if not isinstance(raw, str) or not canonical_label(raw):
        raise InputError(f"'original_emotion' must be a non-empty string, not {json_kind(raw)}", path=path, line=line, field=field)
    if dataset not in BENCHMARK_LABEL_SETS:
        return utterance
    original = canonical_emotion(BENCHMARK_LABEL_SETS[dataset], canonical_label(raw), path=path, line=line, field=field)
    forms = unified_forms(dataset, original)
    if utterance.emotion is not None and utterance.emotion.casefold() not in {form.casefold() for form in forms}:
        raise InputError(
            f"'original_emotion' {original} disagrees with 'emotion' {utterance.emotion} ({dataset}'s {original} is written "
            f"{' or '.join(dict.fromkeys(forms))}): correct one of them, or leave original_emotion out",
            path=path,
            line=line,
            field=field,
        )
    return replace(utterance, extra={**utterance.extra, "original_emotion": original})


def iter_jsonl(
    path: Path, split: str = "test", label_set: LabelSet | None = None, default_dataset: str | None = None
) -> Iterator[tuple[int, Dialogue]]:
    """(line number, dialogue) for every non-blank line, read lazily: a file of any size works.
    A dialogue whose record names no dataset gets ``default_dataset``, by default the file's name."""
    path = as_path(path, "path")
    require_file(path)
    check_encoding(path)
    dataset = path.stem if default_dataset is None else default_dataset
    with path.open("rb") as handle:
        try:
            first = True
            for line_number, line in enumerate(_lines(handle), start=1):
                if not line.strip():
                    continue
                try:
                    record = load_json(line)
                except TextProblem as problem:
                    raise InputError(problem.message + _layout_hint(line, path, first), path=path, line=line_number) from None
                first = False
                dialogue = parse_dialogue(record, path=path, line=line_number, split=split, label_set=label_set, default_dataset=dataset)
                yield line_number, replace(dialogue, origin=Origin(str(path), line_number))
        except UnicodeDecodeError:
            raise not_utf8(path) from None


_TABLE_SUFFIXES = (".csv", ".tsv", ".tab")


def _layout_hint(line: str, path: Path, first: bool) -> str:
    """Why a line that is not JSON may be so, for the layouts that look right in an editor or a
    spreadsheet. ``first``: no line before it held a record."""
    if first and not line.lstrip().startswith(("{", "[")) and (path.suffix.lower() in _TABLE_SUFFIXES or _looks_tabular(line)):
        # A table of one utterance per row is the usual shape of a user's own data, and the
        # benchmarks ship as CSV: "not valid JSON at column 1" alone does not say what to do.
        return (
            "; a CSV or TSV table? This reads JSONL, one dialogue per line: "
            '{"id": "d1", "utterances": [{"speaker": "Ann", "text": "Hi!"}, ...]} '
            "(a benchmark's CSVs are read with --dataset meld or emorynlp; data export writes them as JSONL)"
        )
    if "\r" in line:
        # Lines ended by a lone CR (old Mac files) are one line here: a lone CR is JSON whitespace.
        return "; its lines end with a lone CR: save the file with LF (or CRLF) line ends"
    if line.lstrip().startswith(("{'", "[{'")):
        return "; keys and strings in single quotes: JSON needs double quotes (a Python dict printed? write it with json.dumps)"
    after = _after_json(line)
    if after:
        what = {",": "a comma left from a JSON array? ", "{": "two dialogues on one line? "}.get(after[0], "")
        return f"; more follows the line's JSON value ({what}JSONL holds one dialogue object per line and nothing else)"
    if line.strip() in ("{", "["):
        return "; one JSON value spread over several lines? JSONL needs each dialogue on one line"
    return ""


def _looks_tabular(line: str) -> bool:
    """A header or row of a table: separated fields, and no JSON key (a record missing its braces)."""
    return ("," in line or "\t" in line) and '":' not in line


_OUTLINE_DECODER = json.JSONDecoder(parse_int=str, parse_float=str)


def _after_json(line: str) -> str:
    """What follows a line's first JSON object or array, when it starts with one; else ""."""
    if not line.lstrip().startswith(("{", "[")):
        return ""
    try:
        # Numbers are kept as text: the default int() refuses one of over 4,300 digits with a
        # bare ValueError, which would replace the line's error with a traceback.
        _, end = _OUTLINE_DECODER.raw_decode(line.lstrip())
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return ""
    return line.lstrip()[end:].strip()


def _lines(handle: IO[bytes]) -> Iterator[str]:
    """The lines of a UTF-8 file without their LF or CRLF, split on LF alone: a lone CR is JSON
    whitespace, not a line end (text mode splits on it, breaking a valid line in two and shifting
    later line numbers). Splitting bytes before decoding is sound: no UTF-8 character holds 0x0A.
    A byte-order mark is dropped at the start of every line, not only the first: files saved with
    one and joined (``cat a.jsonl b.jsonl``) keep each file's mark at the start of its first line."""
    for raw in handle:
        yield raw.removeprefix(codecs.BOM_UTF8).removesuffix(b"\n").removesuffix(b"\r").decode("utf-8")


def jsonl_file(path: Path, split: str) -> Path:
    """``path`` itself when it is a file, else ``{split}.jsonl`` inside it."""
    path = as_path(path, "path")
    if path.is_dir():
        wanted = path / f"{split}.jsonl"
        split_file_present(path, split)  # a file of that name in other case is an error, not a missing split
        return find_in(path, [wanted], wanted.name)
    return path


def split_file_present(folder: Path, split: str) -> bool:
    """Whether ``folder`` holds ``{split}.jsonl``; a file of that name in other case is an error."""
    wanted = folder / f"{split}.jsonl"
    if wanted.exists():
        return True
    _refuse_other_case(folder, wanted.name)
    return False


def _refuse_other_case(folder: Path, name: str) -> None:
    """``dev.JSONL`` beside ``train.jsonl`` is not the dev split on a case-sensitive file system:
    read as missing, the split would be skipped in silence (no dev set, no scores for it)."""
    for entry in folder.iterdir():
        if entry.name.lower() == name:
            raise InputError(f"the file is named {entry.name}, not {name}: rename it (names are case-sensitive)", path=entry)


def read_jsonl(path: Path, split: str, label_set: LabelSet | None = None) -> list[Dialogue]:
    """The dialogues of a JSONL file, or of ``{split}.jsonl`` in a folder; ``split`` names them."""
    path, split = as_path(path, "path"), canonical_split(split)
    file = jsonl_file(path, split)
    numbered = list(iter_jsonl(file, split, label_set, default_dataset=_dataset_name(path)))
    if not numbered:
        # Read as a split of nothing, an empty file (the wrong one, or cut off) would be exported as
        # an empty file over an earlier export, or blamed later for having no gold emotions.
        raise InputError("no dialogues in the file (it is empty or holds only blank lines)", path=file)
    _refuse_repeated_ids(numbered, file)
    return [dialogue for _, dialogue in numbered]


def _refuse_repeated_ids(numbered: list[tuple[int, Dialogue]], file: Path) -> None:
    """An id given twice (a line pasted twice, two files joined) is named with both its lines:
    in a file of thousands of dialogues the id alone does not say where to look."""
    first_line: dict[tuple[str, str], int] = {}
    for line, dialogue in numbered:
        key = (dialogue.dataset, dialogue.id)
        if key in first_line:
            raise InputError(
                f"dialogue id '{dialogue.id}' appears twice (also on line {first_line[key]})", path=file, line=line, field="id"
            )
        first_line[key] = line


def _dataset_name(path: Path) -> str:
    """The name of a file's or folder's dialogues that name no dataset. It is never a benchmark's:
    a user's ``meld.jsonl`` is not MELD (a unified model would score it on MELD's classes) unless
    its dialogues say so, or ``--label-set meld`` does."""
    name = path.name if path.is_dir() else path.stem
    return f"jsonl:{name}" if name.lower() in BENCHMARK_LABEL_SETS else name


def infer_label_set(path: Path, split: str = "train") -> LabelSet | None:
    """The emotions a JSONL file uses (the train split of a folder; a folder without one, to
    evaluate a model on its dev or test, uses the splits it has), sorted; None if it has none."""
    path = as_path(path, "path")
    present = [path / f"{name}.jsonl" for name in SPLITS if (path / f"{name}.jsonl").is_file()] if path.is_dir() else []
    if path.is_dir() and not present:
        _refuse_splitless(path)
    if path.is_dir() and not (path / f"{split}.jsonl").is_file():
        files = present
    else:
        files = [jsonl_file(path, split) if path.is_dir() else path]  # names what is missing
    file = files[0]
    emotions = sorted(_spellings(files, split))
    if not emotions:
        return None
    try:
        return LabelSet.from_names(_dataset_name(path), emotions)
    except ValueError as error:
        raise InputError(
            f"its emotions do not form a label set ({error}): fix them or pass --label-set", path=file, field="emotion"
        ) from None


def _spellings(files: list[Path], split: str) -> set[str]:
    """The emotions the files use. Two spellings of one label (``Joy`` and ``joy``) are refused
    where the second is met: a label set cannot hold both, and the file alone says which line to fix."""
    first: dict[str, tuple[str, Path, int]] = {}
    for file in files:
        for line, dialogue in iter_jsonl(file, split):
            for index, utterance in enumerate(dialogue.utterances):
                if utterance.emotion is None:
                    continue
                seen, seen_file, seen_line = first.setdefault(utterance.emotion.casefold(), (utterance.emotion, file, line))
                if seen != utterance.emotion:
                    where = f"line {seen_line}" if seen_file == file else f"{seen_file}:{seen_line}"
                    raise InputError(
                        f"emotion '{utterance.emotion}' is '{seen}' ({where}) in another case: give one label one spelling, "
                        "or pass --label-set NAME (which reads any case)",
                        path=file,
                        line=line,
                        field=f"utterances[{index}].emotion",
                    )
    return {spelling for spelling, _, _ in first.values()}


def _refuse_splitless(folder: Path) -> None:
    """A folder holding no split file: named as such, not as missing ``train.jsonl`` when the
    command asked for the test split (``evaluate --split test``)."""
    for name in SPLITS:
        split_file_present(folder, name)  # a split file named in other case is the error to report
    raise InputError("holds none of train.jsonl, dev.jsonl, test.jsonl (JSONL data in a folder is one file per split)", path=folder)


def dialogue_record(dialogue: Dialogue, utterance_fields: Iterable[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON object of a dialogue; ``utterance_fields`` adds keys per utterance (predictions),
    in place of any :data:`PREDICTION_KEYS` the input carried."""
    utterances = []
    added = list(utterance_fields) if utterance_fields is not None else [{}] * len(dialogue.utterances)
    for utterance, more in zip(dialogue.utterances, added):
        record: dict[str, Any] = {"speaker": utterance.speaker, "text": utterance.text}
        if utterance.emotion is not None:
            record["emotion"] = utterance.emotion
        record.update(utterance.extra)
        if utterance_fields is not None:
            # An earlier run's prediction (predict run again on its own output) would otherwise
            # keep the keys the new one does not write: generate mode beside stale scores, or a
            # "truncated" flag on an utterance that fits this model.
            for key in PREDICTION_KEYS:
                record.pop(key, None)
        record.update(more)
        utterances.append(record)
    named = {"dataset": dialogue.dataset} if dialogue.dataset != UNNAMED_DATASET else {}
    return {"id": dialogue.id, **named, **dialogue.extra, "utterances": utterances}


# Characters ensure_ascii=False writes raw that str.splitlines() (and other Unicode-aware line
# readers) take for line ends, breaking one record's line in two; escaped, they read back the same.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def write_record(handle: IO[str], record: dict[str, Any]) -> None:
    handle.write(json.dumps(record, ensure_ascii=False).translate(_LINE_BREAKS) + "\n")


def write_jsonl(dialogues: Iterable[Dialogue], path: Path) -> int:
    """Write dialogues in the user format, atomically; returns how many were written. Each line
    is one :func:`read_jsonl` reads back: a dialogue built in Python that would not (a number for
    a speaker, a NaN or a set in an extra field) is refused by its position and field, and
    nothing is written."""
    path = as_path(path, "path")
    if isinstance(dialogues, (str, bytes, Mapping, Dialogue)) or not isinstance(dialogues, Iterable):
        raise TypeError(f"dialogues must be a list of Dialogue objects, not {type(dialogues).__name__}")
    count = 0
    with atomic_write(path) as handle:
        for dialogue in dialogues:
            handle.write(_readable_line(dialogue, f"dialogues[{count}]") + "\n")
            count += 1
    return count


def _readable_line(dialogue: Any, where: str) -> str:
    """The JSONL line of ``dialogue``, checked as the reader checks it."""
    if not isinstance(dialogue, Dialogue):
        raise TypeError(f"{where} must be a Dialogue, not {type(dialogue).__name__}")
    if not isinstance(dialogue.extra, Mapping) or not isinstance(dialogue.utterances, (tuple, list)):
        raise TypeError(f"{where}: extra must be a mapping and utterances a tuple of Utterance objects")
    for k, utterance in enumerate(dialogue.utterances):
        if not isinstance(utterance, Utterance) or not isinstance(utterance.extra, Mapping):
            raise TypeError(f"{where}.utterances[{k}] must be an Utterance whose extra is a mapping, not {utterance!r:.80}")
    _refuse_shadowing_extra(dialogue, where)
    try:
        # A NaN or an infinity would be written as such, which no JSON reader (this one included) accepts.
        line = json.dumps(dialogue_record(dialogue), ensure_ascii=False, allow_nan=False).translate(_LINE_BREAKS)
    except (TypeError, ValueError) as error:
        raise InputError(f"dialogue '{printable(str(dialogue.id))}' cannot be written as JSON: {error}", field=where) from None
    try:
        parse_dialogue(load_json(line), path=Path(where), line=1, split="test", label_set=None, default_dataset=UNNAMED_DATASET)
    except (InputError, TextProblem) as error:
        field = getattr(error, "field", None)
        raise InputError(
            f"dialogue '{printable(str(dialogue.id))}' would not read back: {error.message}",
            field=f"{where}.{field}" if field else where,
        ) from None
    return line


def _refuse_shadowing_extra(dialogue: Dialogue, where: str) -> None:
    """An extra key named as a field of the record (``text`` in an utterance's extra, from a row
    of the source copied whole) would be written in that field's place: the file would hold the
    raw cell, or another id, in silence. The reader never builds such an extra."""
    clashes = [(where, key) for key in _DIALOGUE_KEYS if key in dialogue.extra]
    for k, utterance in enumerate(dialogue.utterances):
        clashes += [(f"{where}.utterances[{k}]", key) for key in _UTTERANCE_KEYS if key in utterance.extra]
    if clashes:
        owner, key = clashes[0]
        raise InputError(
            f"dialogue '{printable(str(dialogue.id))}': extra holds '{key}', which would be written in place of the "
            f"{'dialogue' if owner == where else 'utterance'}'s own {key}: rename or drop that key",
            field=f"{owner}.extra.{key}",
        )


LOADER = Loader(
    name="jsonl", description="user format: a .jsonl file, or a folder of {train,dev,test}.jsonl", read=read_jsonl, label_set=None
)
