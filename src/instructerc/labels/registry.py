"""Finding a label set by name: a benchmark's own labels or a unified label space."""

from __future__ import annotations

from dataclasses import dataclass

from instructerc.errors import InputError
from instructerc.labels.benchmarks import BENCHMARK_LABEL_SETS
from instructerc.labels.label_set import LabelSet
from instructerc.labels.unified import MAPPINGS, UnifiedMapping, get_mapping

ORIGINAL = "original"


@dataclass(frozen=True)
class LabelSpace:
    """Which labels a dataset is read in: its own (``original``) or a unified space (``uime[:MAPPING]``)."""

    spec: str
    mapping: UnifiedMapping | None

    @property
    def unified(self) -> bool:
        return self.mapping is not None


def resolve_label_space(spec: str) -> LabelSpace:
    """Parse ``original``, ``uime`` (the paper's mapping) or ``uime:NAME``."""
    if not isinstance(spec, str):
        raise InputError(f"a label space is a string (original, uime or uime:MAPPING), not {spec!r}", field="labels")
    if spec == ORIGINAL:
        return LabelSpace(spec, None)
    head, _, mapping = spec.partition(":")
    if head != "uime":
        raise InputError(f"unknown label space '{spec}' (expected original, uime or uime:MAPPING)", field="labels")
    name = mapping or "instructerc"
    if name not in MAPPINGS:
        raise InputError(f"unknown unified mapping '{name}' (known: {', '.join(MAPPINGS)})", field="labels")
    return LabelSpace(spec, get_mapping(name))


def named_label_set(name: str) -> LabelSet:
    """A label set by name: a benchmark's own (``iemocap``, ``meld``, ``emorynlp``) or a unified
    one (``uime``, ``uime:feeling-wheel``). Names are exact: a user's ``MELD`` is refused, not guessed."""
    for label_set in known_label_sets():
        if label_set.name == name:
            return label_set
    raise InputError(f"unknown label set '{name}' (known: {', '.join(label_set_names())})", field="label_set")


def known_label_sets() -> list[LabelSet]:
    """Every label set with a name: the benchmarks' own, then the unified ones."""
    return list(BENCHMARK_LABEL_SETS.values()) + [mapping.label_set for mapping in MAPPINGS.values()]


def label_set_names() -> list[str]:
    return [label_set.name for label_set in known_label_sets()]
