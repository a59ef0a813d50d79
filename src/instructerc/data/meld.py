"""MELD, from the official CSVs (``{train,dev,test}_sent_emo.csv``), with real speaker names.

Copies from before declare-lab/MELD#28 (November 2020) carry cp1252 characters decoded as C1
controls (``\\x92`` for ``’``) and non-breaking spaces; they are repaired as in that fix, so every
copy reads as the current one (and as the repaired COSMIC pickle).
"""

from __future__ import annotations

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
from instructerc.labels.benchmarks import MELD
from instructerc.labels.label_set import LabelSet

_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
_EXTRA_COLUMNS = {"Sentiment": "sentiment", "Season": "season", "Episode": "episode", "StartTime": "start_time", "EndTime": "end_time"}


def csv_path(path: Path, split: str) -> Path:
    name = f"{split}_sent_emo.csv"
    return find_in(path, [path / name, path / "meld" / name], f"MELD {split} CSV")


def read_meld_csv(path: Path, split: str, label_set: LabelSet | None = MELD) -> list[Dialogue]:
    file = csv_path(path, split)
    label_set = label_set or MELD
    collector = TurnCollector("meld", split, file)
    for line, row in read_csv_rows(file, _COLUMNS):
        utterance = Utterance(
            speaker=nonempty_speaker(canonical_speaker(repair_cp1252_mojibake(row["Speaker"])), path=file, line=line, field="Speaker"),
            text=nonempty_text(repair_cp1252_mojibake(row["Utterance"]), path=file, line=line, field="Utterance"),
            emotion=canonical_emotion(label_set, row["Emotion"], path=file, line=line, field="Emotion"),
            extra={key: row[column] for column, key in _EXTRA_COLUMNS.items() if column in row},
        )
        collector.add(numbered_key(row["Dialogue_ID"], path=file, line=line, field="Dialogue_ID"), row, line, utterance)
    dialogues = collector.dialogues()
    warn_if_partial("meld", split, dialogues, file)
    return dialogues


LOADER = Loader(name="meld", description="MELD official CSVs (real speaker names)", read=read_meld_csv, label_set=MELD)
