"""Finding a label set by name: a benchmark's own labels or a unified label space."""

from __future__ import annotations

import difflib
import unicodedata
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
        hint = did_you_mean(spec, [ORIGINAL, "uime", *(f"uime:{name}" for name in MAPPINGS)])
        raise InputError(f"unknown label space '{spec}'{hint} (expected original, uime or uime:MAPPING)", field="labels")
    name = mapping or "instructerc"
    if name not in MAPPINGS:
        hint = did_you_mean(name, list(MAPPINGS))
        raise InputError(f"unknown unified mapping '{name}'{hint} (known: {', '.join(MAPPINGS)})", field="labels")
    return LabelSpace(spec, get_mapping(name))


def named_label_set(name: str) -> LabelSet:
    """A label set by name: a benchmark's own (``iemocap``, ``meld``, ``emorynlp``) or a unified
    one (``uime``, ``uime:feeling-wheel``). Names are exact: a user's ``MELD`` is refused, not guessed."""
    for label_set in known_label_sets():
        if label_set.name == name:
            return label_set
    names = label_set_names()
    raise InputError(f"unknown label set '{name}'{did_you_mean(name, names)} (known: {', '.join(names)})", field="label_set")


def did_you_mean(name: object, known: list[str]) -> str:
    """`` (did you mean 'meld'?)`` for a name that is a known one in other case or width, or
    close to one (``MELD``, ``emory-nlp``); else "". Names stay exact: this only says which to type."""
    if not isinstance(name, str):
        return ""
    folded = unicodedata.normalize("NFKC", name).strip().casefold()
    same = [k for k in known if k.casefold() == folded]
    close = same or difflib.get_close_matches(folded, known, n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def known_label_sets() -> list[LabelSet]:
    """Every label set with a name: the benchmarks' own, then the unified ones."""
    return list(BENCHMARK_LABEL_SETS.values()) + [mapping.label_set for mapping in MAPPINGS.values()]


def label_set_names() -> list[str]:
    return [label_set.name for label_set in known_label_sets()]
