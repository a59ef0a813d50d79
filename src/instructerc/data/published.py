"""The published size of each benchmark split, and the warning for a copy that differs from it.

A benchmark file cut short (a download or copy interrupted at a row boundary) or a release with
some dialogues missing reads without any error: every row that is there is well formed. Scores on
it then silently describe part of the benchmark. Users also subset a benchmark on purpose, so a
difference is a warning on stderr, not an error.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from instructerc.data.dialogue import Dialogue

# (dialogues, utterances) per dataset and split, as the literature reports them (see README "Data").
PUBLISHED_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "iemocap": {"train": (108, 5163), "dev": (12, 647), "test": (31, 1623)},
    "meld": {"train": (1038, 9989), "dev": (114, 1109), "test": (280, 2610)},
    "emorynlp": {"train": (659, 7551), "dev": (89, 954), "test": (79, 984)},
}
_NAMES = {"iemocap": "IEMOCAP", "meld": "MELD", "emorynlp": "EmoryNLP"}

# What has been warned about in this process: a split read again (train reads it once per stage,
# evaluate once per model) would repeat the same line.
_WARNED: set[tuple[str, str, str]] = set()
# Warnings of reads still in progress (see :func:`warnings_held`), by their key in ``_WARNED``.
_PENDING: dict[tuple[str, str, str], str] = {}
_HOLDERS = [0]


def size_difference(dataset: str, split: str, dialogues: list[Dialogue]) -> str | None:
    """How the dialogues differ from the published split (``None``: they match, or no size is known)."""
    published = PUBLISHED_SIZES.get(dataset, {}).get(split)
    if published is None:
        return None
    found = (len(dialogues), sum(len(d) for d in dialogues))
    if found == published:
        return None
    return (
        f"{found[0]} dialogues / {found[1]} utterances, but the published {_NAMES[dataset]} {split} split has "
        f"{published[0]} / {published[1]}: a partial or altered copy? (scores on it are not comparable with published ones)"
    )


def warn_if_partial(dataset: str, split: str, dialogues: list[Dialogue], where: Path) -> None:
    """One line on stderr, once per file (or folder) and split, when ``dialogues`` read from
    ``where`` are not the published split's size; held until the read around it succeeds."""
    difference = size_difference(dataset, split, dialogues)
    key = (str(where), dataset, split)
    if difference is None or key in _WARNED:
        return
    _WARNED.add(key)
    _PENDING[key] = f"instructerc: warning: {where}: {difference}"
    if not _HOLDERS[0]:
        _flush()


@contextmanager
def warnings_held() -> Iterator[None]:
    """Print the warnings of the reads inside only once all of them succeeded. Bad input fails
    with one line: a warning about the train split printed before the error of a broken dev file
    would be a second. Dropped warnings are given again by the next read of their split."""
    _HOLDERS[0] += 1
    try:
        yield
    except BaseException:
        for key in _PENDING:
            _WARNED.discard(key)
        _PENDING.clear()
        raise
    finally:
        _HOLDERS[0] -= 1
    if not _HOLDERS[0]:
        _flush()


def _flush() -> None:
    from instructerc.distributed import later_process_of_a_run

    messages = list(_PENDING.values())
    _PENDING.clear()
    if later_process_of_a_run():  # every process reads the same files: the first one says it for all
        return
    for message in messages:
        print(message, file=sys.stderr)
