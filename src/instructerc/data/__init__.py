"""Dialogues: the data model, the loaders of the benchmarks and of user files."""

from instructerc.data.dialogue import SPLITS, Dialogue, Utterance, canonical_split
from instructerc.data.registry import DataSource, available_sources, load_dialogues

__all__ = [
    "SPLITS",
    "DataSource",
    "Dialogue",
    "Utterance",
    "available_sources",
    "canonical_split",
    "load_dialogues",
]
