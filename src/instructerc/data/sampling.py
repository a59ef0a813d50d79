"""Choosing dialogues and examples reproducibly: training subsets and evaluation's per-dataset subsets."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Callable, Sequence, TypeVar

from instructerc.data.dialogue import Dialogue

T = TypeVar("T")


def stable_seed(*parts: object) -> int:
    """A 32-bit seed from ``parts`` that is the same in every process (``hash()`` of a string
    changes between processes, which would change a resumed run's data)."""
    import hashlib

    digest = hashlib.sha256("\x1f".join(map(repr, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


def stratum(dialogue: Dialogue) -> tuple[str, str]:
    """A dialogue's stratum: its source dataset and its most frequent emotion."""
    counts = Counter(u.emotion for u in dialogue.utterances if u.emotion is not None)
    top = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counts else ""
    return dialogue.dataset, top


def stratified_fraction(dialogues: Sequence[Dialogue], fraction: float | Callable[[str], float], seed: int) -> list[Dialogue]:
    """A fraction of the dialogues, sampled per stratum (dataset x dominant emotion), in input order.

    ``fraction`` is one share for all, or a function from a dialogue's dataset to its share.
    Every stratum keeps its share (rounded, at least one dialogue when the stratum is non-empty
    and its share > 0), so small fractions keep every dataset and the label mix of the whole.
    """
    share_of = fraction if callable(fraction) else (lambda _dataset: fraction)
    if all(share_of(d.dataset) >= 1 for d in dialogues):
        return list(dialogues)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for position, dialogue in enumerate(dialogues):
        groups[stratum(dialogue)].append(position)
    rng = random.Random(seed)
    chosen: set[int] = set()
    for key in sorted(groups):
        members = groups[key]
        take = max(1, round(share_of(key[0]) * len(members)))
        chosen.update(rng.sample(members, take))
    return [d for position, d in enumerate(dialogues) if position in chosen]


def subset_size(count: int, share: float) -> int:
    """How many of ``count`` items a ``share`` keeps: rounded, but at least one when there are any
    and ``share`` > 0 (a small share of a few items would otherwise round to none, silently)."""
    if share >= 1 or count == 0:
        return count
    return max(1, round(share * count)) if share > 0 else 0


def seeded_subset(items: Sequence[T], share: float, seed: int) -> list[T]:
    """A seeded ``share`` of ``items`` (:func:`subset_size` of them), in their original order."""
    if share >= 1:
        return list(items)
    rng = random.Random(seed)
    keep = set(rng.sample(range(len(items)), subset_size(len(items), share)))
    return [item for position, item in enumerate(items) if position in keep]


def per_dataset_subset(dialogues: Sequence[Dialogue], per_dataset: int, seed: int) -> list[Dialogue]:
    """A seeded subset of at most ``per_dataset`` dialogues of each source dataset, in the original order.

    Per dataset, so a unified (UIME) split keeps every benchmark in the score instead of leaving
    the smallest one (IEMOCAP) to chance.
    """
    groups: dict[str, list[Dialogue]] = {}
    for dialogue in dialogues:
        groups.setdefault(dialogue.dataset, []).append(dialogue)
    kept = {id(d) for group in groups.values() for d in seeded_subset(group, min(1.0, per_dataset / len(group)), seed)}
    return [d for d in dialogues if id(d) in kept]
