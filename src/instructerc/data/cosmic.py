"""The COSMIC pickles of IEMOCAP, MELD and EmoryNLP (declare-lab/conv-emotion), read safely.

Each pickle is a list of fields; they are named here once, so no code indexes them by position.
A pickle is untrusted input: every value is type-checked before it is used or named in a message
(see :func:`instructerc.data.safe_pickle.describe`), its text passes the checks of the CSV and JSONL
readers, and the split lists must partition the dialogues: no id twice, none in two splits, none
left out of every split.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, Iterable

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.loader import Loader, canonical_emotion, checked_text, find_in, nonempty_speaker, nonempty_text
from instructerc.data.published import warn_if_partial
from instructerc.data.safe_pickle import describe, load_data_pickle
from instructerc.data.text import canonical_speaker, repair_cp1252_mojibake
from instructerc.errors import InputError
from instructerc.labels.label_set import LabelSet
from instructerc.labels.registry import named_label_set

FIELDS: dict[str, tuple[str, ...]] = {
    "iemocap": ("speakers", "labels", "sentences", "train", "test", "dev"),
    "meld": ("speakers", "labels", "sentiment", "sentences", "train", "test", "dev"),
    "emorynlp": ("speakers", "labels", "sentences", "train", "test", "dev"),
}
SPLIT_FIELDS: tuple[str, ...] = ("train", "dev", "test")
# The type of each pickle's dialogue ids (MELD keeps the CSV's integer Dialogue_ID, shifted).
ID_TYPES: dict[str, type] = {"iemocap": str, "meld": int, "emorynlp": str}
_TYPE_NAMES = {str: "a string", int: "an integer"}
# How each pickle names speakers: IEMOCAP by gender letter, MELD and EmoryNLP by one-hot position.
# Checked so that one benchmark's pickle given as another's is refused: IEMOCAP's and EmoryNLP's
# have the same fields and id type, and IEMOCAP's 6 class ids fit EmoryNLP's 7.
NAMED_SPEAKERS: dict[str, bool] = {"iemocap": True, "meld": False, "emorynlp": False}
# MELD's pickle shifts the CSV Dialogue_ID of dev and test by these offsets.
MELD_ID_OFFSETS = {"train": 0, "dev": 1039, "test": 1153}
_SHOWN_IDS = 5  # how many offending ids an error lists


def pickle_path(path: Path, dataset: str) -> Path:
    if path.is_file():
        return path
    name = f"{dataset}.pkl"
    return find_in(path, [path / name, path / "cosmic" / name], f"COSMIC {dataset} pickle")


def read_fields(file: Path, dataset: str) -> dict[str, Any]:
    """The pickle's fields by name, after checking the layout and the split lists (:func:`check_layout`)."""
    data = load_data_pickle(file)
    names = FIELDS[dataset]
    if not isinstance(data, (list, tuple)) or len(data) != len(names):
        raise InputError(f"not a COSMIC {dataset} pickle: expected a list of {len(names)} fields ({', '.join(names)})", path=file)
    fields = dict(zip(names, data))
    check_layout(fields, file=file, dataset=dataset)
    return fields


def check_layout(fields: dict[str, Any], *, file: Path, dataset: str) -> None:
    """Per-dialogue fields are dicts; the split lists hold ids of the dataset's type, each once, each in
    one split, and every dialogue of every per-dialogue field is in exactly one split (one left out
    would be dropped without a word)."""
    per_dialogue = [name for name in FIELDS[dataset] if name not in SPLIT_FIELDS]
    for name in per_dialogue:
        if type(fields[name]) is not dict:
            raise InputError(f"must be a dict of dialogue id -> list, got {describe(fields[name])}", path=file, field=name)
    splits = {split: _split_ids(fields[split], split, file=file, dataset=dataset) for split in SPLIT_FIELDS}
    _check_disjoint(splits, file=file)
    for name in per_dialogue:
        _check_all_listed(fields[name], splits, file=file, field=name)


def _check_disjoint(splits: dict[str, list[Any]], *, file: Path) -> None:
    for index, first in enumerate(SPLIT_FIELDS):
        earlier = set(splits[first])
        for second in SPLIT_FIELDS[index + 1 :]:
            both = [key for key in splits[second] if key in earlier]
            if both:
                message = f"{len(both)} dialogue id(s) in both the {first} and the {second} ids: {_some(both)}"
                raise InputError(message, path=file, field=second)


def _check_all_listed(dialogues: dict[Any, Any], splits: dict[str, list[Any]], *, file: Path, field: str) -> None:
    """Every dialogue of a per-dialogue field is in a split, and every split's dialogue is in the field."""
    listed = {key for ids in splits.values() for key in ids}
    unlisted = [key for key in dialogues if key not in listed]
    if unlisted:
        raise InputError(f"{len(unlisted)} dialogue(s) in none of the train, dev and test ids: {_some(unlisted)}", path=file, field=field)
    for split, ids in splits.items():
        missing = [key for key in ids if key not in dialogues]
        if missing:
            raise InputError(f"{len(missing)} dialogue(s) of the {split} ids are missing here: {_some(missing)}", path=file, field=field)


def _some(keys: Iterable[Any]) -> str:
    keys = list(keys)
    shown = ", ".join(describe(key) for key in keys[:_SHOWN_IDS])
    return shown + (f" and {len(keys) - _SHOWN_IDS} more" if len(keys) > _SHOWN_IDS else "")


def _split_ids(raw: Any, split: str, *, file: Path, dataset: str) -> list[Any]:
    """The ids of one split, each of the dataset's id type, none twice."""
    if type(raw) not in (list, tuple):
        raise InputError(f"must be a list of dialogue ids, got {describe(raw)}", path=file, field=split)
    for position, key in enumerate(raw):
        _check_id(key, split, file=file, field=f"{split}[{position}]", dataset=dataset)
    twice = [key for key, count in Counter(raw).items() if count > 1]
    if twice:
        raise InputError(f"{len(twice)} dialogue id(s) listed more than once: {_some(twice)}", path=file, field=split)
    return list(raw)


def _check_id(key: Any, split: str, *, file: Path, field: str, dataset: str) -> None:
    expected = ID_TYPES[dataset]
    if type(key) is not expected:  # `type(...) is`: a bool is no MELD id, though an int subclass
        raise InputError(f"a {dataset} dialogue id must be {_TYPE_NAMES[expected]}, got {describe(key)}", path=file, field=field)
    if isinstance(key, str):
        checked_text(key, path=file, field=field)
        if not key.strip():
            raise InputError("empty dialogue id", path=file, field=field)
    if dataset == "meld":
        _check_meld_id(key, split, file=file, field=field)


def _check_meld_id(key: int, split: str, *, file: Path, field: str) -> None:
    """A MELD id lies in its split's range: below it, the CSV Dialogue_ID it maps back to would be
    negative (or another split's); above it, another split's."""
    low = MELD_ID_OFFSETS[split]
    high = min((offset for offset in MELD_ID_OFFSETS.values() if offset > low), default=None)
    if key < low or (high is not None and key >= high):
        span = f"{low} to {high - 1}" if high is not None else f"{low} or more"
        raise InputError(
            f"MELD {split} id {describe(key)} is outside the {split} range ({span}; the pickle shifts {split} Dialogue_IDs by {low})",
            path=file,
            field=field,
        )


def _column(fields: dict[str, Any], name: str, key: Any, *, file: Path, where: str) -> list[Any]:
    """One dialogue's list of ``name`` (a string is refused: each of its characters would become an utterance)."""
    value = fields[name][key]
    if type(value) not in (list, tuple):
        raise InputError(f"must be a list (one item per utterance), got {describe(value)}", path=file, field=f"{where}.{name}")
    return list(value)


def _emotion(raw: Any, ids: LabelSet, label_set: LabelSet, *, file: Path, field: str) -> str:
    """The canonical label (of ``label_set``) of the class id ``raw``, which indexes ``ids``."""
    if type(raw) is not int or not 0 <= raw < len(ids.labels):  # `type(...) is`: True is no class id
        raise InputError(f"label must be a class id from 0 to {len(ids.labels) - 1}, got {describe(raw)}", path=file, field=field)
    return canonical_emotion(label_set, ids.labels[raw], path=file, line=None, field=field)


def _text(raw: Any, *, file: Path, field: str) -> str:
    if type(raw) is not str:  # str() of a number would pass as text; of a nested list, take minutes
        raise InputError(f"utterance text must be a string, got {describe(raw)}", path=file, field=field)
    checked_text(raw, path=file, field=field)
    return nonempty_text(repair_cp1252_mojibake(raw), path=file, line=None, field=field)


def _speaker(raw: Any, *, file: Path, field: str, dataset: str) -> str:
    """A name (IEMOCAP's ``M``/``F``), or a one-hot list of 0s with a single 1 (MELD, EmoryNLP)."""
    named = type(raw) is str
    one_hot = type(raw) in (list, tuple) and all(type(item) is int and item in (0, 1) for item in raw) and raw.count(1) == 1
    if not (named or one_hot):
        raise InputError(f"speaker must be a name or a one-hot list of 0s and one 1, got {describe(raw)}", path=file, field=field)
    if named != NAMED_SPEAKERS[dataset]:
        kind = "names ('M', 'F')" if NAMED_SPEAKERS[dataset] else "one-hot lists"
        raise InputError(
            f"{dataset} pickle speakers are {kind}, got {describe(raw)}: is this another dataset's pickle?", path=file, field=field
        )
    if named:
        # In the one form every other reader gives a name, so the pickle's dialogues and their
        # JSONL export name the same speakers.
        checked_text(raw, path=file, field=field)
        return nonempty_speaker(canonical_speaker(raw), path=file, line=None, field=field)
    return f"Speaker_{list(raw).index(1)}"


def _dialogue(fields: dict[str, Any], key: Any, split: str, *, file: Path, dataset: str, label_set: LabelSet) -> Dialogue:
    ids = named_label_set(dataset)  # the pickle's integer labels index its benchmark's own labels
    where = f"{dataset}[{describe(key)}]"
    speakers, labels, sentences = (_column(fields, name, key, file=file, where=where) for name in ("speakers", "labels", "sentences"))
    if not len(speakers) == len(labels) == len(sentences):
        lengths = f"{len(speakers)}, {len(labels)} and {len(sentences)}"
        raise InputError(f"dialogue {describe(key)}: speakers, labels and sentences differ in length ({lengths})", path=file)
    utterances = tuple(
        Utterance(
            speaker=_speaker(speaker, file=file, field=f"{where}.speakers[{position}]", dataset=dataset),
            text=_text(sentence, file=file, field=f"{where}.sentences[{position}]"),
            emotion=_emotion(label, ids, label_set, file=file, field=f"{where}.labels[{position}]"),
        )
        for position, (speaker, label, sentence) in enumerate(zip(speakers, labels, sentences))
    )
    dialogue_id = str(key - MELD_ID_OFFSETS[split]) if dataset == "meld" else key
    return Dialogue(id=dialogue_id, dataset=dataset, split=split, utterances=utterances, extra={"cosmic_id": key})


def read_cosmic(path: Path, split: str, label_set: LabelSet | None = None, *, dataset: str) -> list[Dialogue]:
    file = pickle_path(path, dataset)
    fields = read_fields(file, dataset)
    label_set = label_set or named_label_set(dataset)
    if not fields[split]:
        # As a benchmark CSV of the header alone: a split of nothing would be counted, trained or
        # scored as zeros with a warning at most (a pickle built without a dev split).
        raise InputError(f"no dialogue ids: the {dataset} {split} split would be empty", path=file, field=split)
    dialogues = [_dialogue(fields, key, split, file=file, dataset=dataset, label_set=label_set) for key in fields[split]]
    warn_if_partial(dataset, split, dialogues, file)
    return dialogues


LOADERS = tuple(
    Loader(
        name=f"cosmic-{dataset}",
        description=f"COSMIC pickle of {dataset} ({dataset}.pkl)",
        read=partial(read_cosmic, dataset=dataset),
        label_set=named_label_set(dataset),
    )
    for dataset in FIELDS
)
