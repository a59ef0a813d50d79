"""EmoryNLP, from the CSVs redistributed with MELD (``emorynlp_{split}_final.csv``).

A dialogue is one (Season, Episode, Scene_ID); ``Speaker`` is a Python list literal, parsed
with :func:`ast.literal_eval` (data only) and joined with ``", "`` when a line has several.
cp1252 characters carried as C1 controls (``\\x92`` for ``’``) are repaired as in MELD's CSVs (:mod:`.meld`).
"""

from __future__ import annotations

import ast
from pathlib import Path

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.loader import (
    Loader,
    TurnCollector,
    canonical_emotion,
    find_in,
    nonempty_speaker,
    nonempty_text,
    numbered_key,
    read_csv_rows,
)
from instructerc.data.published import warn_if_partial
from instructerc.data.text import canonical_speaker, repair_cp1252_mojibake
from instructerc.errors import InputError
from instructerc.labels.benchmarks import EMORYNLP
from instructerc.labels.label_set import LabelSet

_COLUMNS = ("Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode")
_EXTRA_COLUMNS = {"Start_Time": "start_time", "End_Time": "end_time"}
_SHOWN_CHARACTERS = 80


def csv_path(path: Path, split: str) -> Path:
    name = f"emorynlp_{split}_final.csv"
    return find_in(path, [path / name, path / "emorynlp" / name], f"EmoryNLP {split} CSV")


def parse_speakers(raw: str, *, path: Path, line: int) -> str:
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):  # the last two: a literal nested too deep
        value = None
    if not isinstance(value, list) or not value or not all(isinstance(s, str) and s.strip() for s in value):
        # The field may be as long as a line: the message shows its start.
        shown = repr(raw) if len(raw) <= _SHOWN_CHARACTERS else repr(raw[:_SHOWN_CHARACTERS]) + "..."
        raise InputError(f"Speaker must be a non-empty list of names, got {shown}", path=path, line=line, field="Speaker")
    # A name is read as JSONL reads one (a file exported and read back names the same speakers), and
    # its escapes (``'Mon\\nica'``) are decoded by the literal: a line break there would start a
    # prompt line nobody said, as in any other reader's speaker.
    return ", ".join(nonempty_speaker(canonical_speaker(s), path=path, line=line, field="Speaker") for s in value)


def read_emorynlp_csv(path: Path, split: str, label_set: LabelSet | None = EMORYNLP) -> list[Dialogue]:
    file = csv_path(path, split)
    label_set = label_set or EMORYNLP
    collector = TurnCollector("emorynlp", split, file)
    for line, row in read_csv_rows(file, _COLUMNS):
        utterance = Utterance(
            speaker=parse_speakers(repair_cp1252_mojibake(row["Speaker"]), path=file, line=line),
            text=nonempty_text(repair_cp1252_mojibake(row["Utterance"]), path=file, line=line, field="Utterance"),
            emotion=canonical_emotion(label_set, row["Emotion"], path=file, line=line, field="Emotion"),
            extra={key: row[column] for column, key in _EXTRA_COLUMNS.items() if column in row},
        )
        key = "_".join(numbered_key(row[c], path=file, line=line, field=c) for c in ("Season", "Episode", "Scene_ID"))
        collector.add(key, row, line, utterance)
    dialogues = collector.dialogues()
    warn_if_partial("emorynlp", split, dialogues, file)
    return dialogues


LOADER = Loader(
    name="emorynlp", description="EmoryNLP CSVs (dialogue = Season/Episode/Scene_ID)", read=read_emorynlp_csv, label_set=EMORYNLP
)
