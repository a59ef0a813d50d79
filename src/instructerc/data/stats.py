"""Counting dialogues, utterances and labels per split."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from instructerc.data.dialogue import Dialogue


@dataclass(frozen=True)
class SplitStats:
    split: str
    dialogues: int
    utterances: int
    labels: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, split: str, dialogues: list[Dialogue]) -> "SplitStats":
        counts = Counter(u.emotion for d in dialogues for u in d.utterances if u.emotion is not None)
        return cls(split=split, dialogues=len(dialogues), utterances=sum(len(d) for d in dialogues), labels=dict(counts))


def format_table(rows: list[SplitStats], label_order: tuple[str, ...] | None) -> str:
    """A plain-text table: one row per split, one column per label (in label-set order)."""
    seen = {label for row in rows for label in row.labels}
    labels = [label for label in (label_order or ()) if label in seen] + sorted(seen - set(label_order or ()))
    header = ["split", "dialogues", "utterances", *labels]
    body = [[row.split, str(row.dialogues), str(row.utterances), *(str(row.labels.get(label, 0)) for label in labels)] for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    render = lambda line: "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))  # noqa: E731
    return "\n".join([render(header), *(render(line) for line in body)])
