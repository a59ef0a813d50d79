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
    if spec == ORIGINAL:
        return LabelSpace(spec, None)
    head, _, mapping = spec.partition(":")
    if head != "uime":
        raise InputError(f"unknown label space '{spec}' (expected original, uime or uime:MAPPING)", field="labels")
    name = mapping or "instructerc"
    if name not in MAPPINGS:
        raise InputError(f"unknown unified mapping '{name}' (known: {', '.join(MAPPINGS)})", field="labels")
    return LabelSpace(spec, get_mapping(name))


def dataset_label_set(name: str) -> LabelSet:
    """A benchmark's own label set (``iemocap``, ``meld``, ``emorynlp``)."""
    try:
        return BENCHMARK_LABEL_SETS[name]
    except KeyError:
        raise InputError(f"unknown label set '{name}' (known: {', '.join(label_set_names())})", field="labels") from None


def label_set_names() -> list[str]:
    return list(BENCHMARK_LABEL_SETS) + [m.label_set.name for m in MAPPINGS.values()]
