"""Reading a benchmark's CSV (MELD's, EmoryNLP's): one row per utterance, gathered into dialogues.

The two benchmarks differ only in their columns, in how a row names its dialogue and in how its
Speaker field is written; every other step (the checks, the cp1252 repair, the order of the turns,
the warning for a partial copy) is this one reader's, so a fix to one is a fix to both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.loader import TurnCollector, canonical_emotion, nonempty_text, numbered_key, read_csv_rows
from instructerc.data.published import warn_if_partial
from instructerc.data.text import repair_cp1252_mojibake
from instructerc.labels.label_set import LabelSet

SpeakerFn = Callable[..., str]
"""``speaker(raw, *, path, line)``: the row's Speaker field (repaired) as one speaker's name."""


@dataclass(frozen=True)
class CsvLayout:
    """How one benchmark writes its CSV.

    Attributes:
        dataset: the benchmark's name (``meld``, ``emorynlp``).
        columns: the columns every file must have.
        key_columns: the whole-number columns that together name a row's dialogue (joined by ``_``).
        extra_columns: optional column -> the ``Utterance.extra`` key it is kept under.
        speaker: reads the Speaker field (:data:`SpeakerFn`).
    """

    dataset: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    extra_columns: Mapping[str, str]
    speaker: SpeakerFn


def read_benchmark_csv(file: Path, split: str, label_set: LabelSet, layout: CsvLayout) -> list[Dialogue]:
    """The dialogues of one split's CSV, each ordered by its rows' ``Utterance_ID``."""
    collector = TurnCollector(layout.dataset, split, file)
    for line, row in read_csv_rows(file, layout.columns):
        utterance = Utterance(
            speaker=layout.speaker(repair_cp1252_mojibake(row["Speaker"]), path=file, line=line),
            text=nonempty_text(repair_cp1252_mojibake(row["Utterance"]), path=file, line=line, field="Utterance"),
            emotion=canonical_emotion(label_set, row["Emotion"], path=file, line=line, field="Emotion"),
            extra={key: row[column] for column, key in layout.extra_columns.items() if column in row},
        )
        key = "_".join(numbered_key(row[column], path=file, line=line, field=column) for column in layout.key_columns)
        collector.add(key, row, line, utterance)
    dialogues = collector.dialogues()
    warn_if_partial(layout.dataset, split, dialogues, file)
    return dialogues
