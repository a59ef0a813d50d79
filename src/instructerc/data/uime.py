"""UIME, the unified dataset: IEMOCAP, MELD and EmoryNLP together.

Dialogues keep their source dataset; the registry maps every emotion onto the unified label
space and keeps the original label in ``Utterance.extra["original_emotion"]``.
"""

from __future__ import annotations

from pathlib import Path

from instructerc.data import emorynlp, iemocap, meld
from instructerc.data.dialogue import Dialogue
from instructerc.data.loader import Loader
from instructerc.labels.label_set import LabelSet

SOURCES = (iemocap.LOADER, meld.LOADER, emorynlp.LOADER)


def read_uime(path: Path, split: str, label_set: LabelSet | None = None) -> list[Dialogue]:
    """The three benchmarks' dialogues in their original labels (the registry unifies them)."""
    return [dialogue for loader in SOURCES for dialogue in loader.read(path, split, loader.label_set)]


LOADER = Loader(name="uime", description="IEMOCAP + MELD + EmoryNLP in one unified label space", read=read_uime, label_set=None)
