"""EmoryNLP, from the CSVs redistributed with MELD (``emorynlp_{split}_final.csv``).

A dialogue is one (Season, Episode, Scene_ID); ``Speaker`` is a Python list literal, parsed
with :func:`ast.literal_eval` (data only) and joined with ``", "`` when a line has several.
cp1252 characters carried as C1 controls (``\\x92`` for ``’``) are repaired as in MELD's CSVs (:mod:`.meld`).
"""

from __future__ import annotations

import ast
from pathlib import Path

from instructerc.data.benchmark_csv import CsvLayout, read_benchmark_csv
from instructerc.data.dialogue import Dialogue
from instructerc.data.loader import Loader, find_in, nonempty_speaker
from instructerc.data.text import canonical_speaker
from instructerc.errors import InputError
from instructerc.labels.benchmarks import EMORYNLP
from instructerc.labels.label_set import LabelSet

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


LAYOUT = CsvLayout(
    dataset="emorynlp",
    columns=("Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode"),
    key_columns=("Season", "Episode", "Scene_ID"),
    extra_columns={"Start_Time": "start_time", "End_Time": "end_time"},
    speaker=parse_speakers,
)


def read_emorynlp_csv(path: Path, split: str, label_set: LabelSet | None = EMORYNLP) -> list[Dialogue]:
    return read_benchmark_csv(csv_path(path, split), split, label_set or EMORYNLP, LAYOUT)


LOADER = Loader(
    name="emorynlp", description="EmoryNLP CSVs (dialogue = Season/Episode/Scene_ID)", read=read_emorynlp_csv, label_set=EMORYNLP
)
