"""MELD, from the official CSVs (``{train,dev,test}_sent_emo.csv``), with real speaker names.

Copies from before declare-lab/MELD#28 (November 2020) carry cp1252 characters decoded as C1
controls (``\\x92`` for ``’``) and non-breaking spaces; they are repaired as in that fix, so every
copy reads as the current one (and as the repaired COSMIC pickle).
"""

from __future__ import annotations

from pathlib import Path

from instructerc.data.benchmark_csv import CsvLayout, read_benchmark_csv
from instructerc.data.dialogue import Dialogue
from instructerc.data.loader import Loader, find_in, nonempty_speaker
from instructerc.data.text import canonical_speaker
from instructerc.labels.benchmarks import MELD
from instructerc.labels.label_set import LabelSet


def csv_path(path: Path, split: str) -> Path:
    name = f"{split}_sent_emo.csv"
    return find_in(path, [path / name, path / "meld" / name], f"MELD {split} CSV")


def one_speaker(raw: str, *, path: Path, line: int) -> str:
    """MELD's Speaker field: one name, as written."""
    return nonempty_speaker(canonical_speaker(raw), path=path, line=line, field="Speaker")


LAYOUT = CsvLayout(
    dataset="meld",
    columns=("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID"),
    key_columns=("Dialogue_ID",),
    extra_columns={"Sentiment": "sentiment", "Season": "season", "Episode": "episode", "StartTime": "start_time", "EndTime": "end_time"},
    speaker=one_speaker,
)


def read_meld_csv(path: Path, split: str, label_set: LabelSet | None = MELD) -> list[Dialogue]:
    return read_benchmark_csv(csv_path(path, split), split, label_set or MELD, LAYOUT)


LOADER = Loader(name="meld", description="MELD official CSVs (real speaker names)", read=read_meld_csv, label_set=MELD)
