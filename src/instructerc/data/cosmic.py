"""The COSMIC pickles of IEMOCAP, MELD and EmoryNLP (declare-lab/conv-emotion), read safely.

Each pickle is a list of fields; they are named here once, so no code indexes them by position.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.loader import Loader, canonical_emotion, find_in
from instructerc.data.safe_pickle import load_data_pickle
from instructerc.data.text import repair_cp1252_mojibake
from instructerc.errors import InputError
from instructerc.labels.label_set import LabelSet
from instructerc.labels.registry import named_label_set

FIELDS: dict[str, tuple[str, ...]] = {
    "iemocap": ("speakers", "labels", "sentences", "train", "test", "dev"),
    "meld": ("speakers", "labels", "sentiment", "sentences", "train", "test", "dev"),
    "emorynlp": ("speakers", "labels", "sentences", "train", "test", "dev"),
}
# MELD's pickle shifts the CSV Dialogue_ID of dev and test by these offsets.
MELD_ID_OFFSETS = {"train": 0, "dev": 1039, "test": 1153}


def pickle_path(path: Path, dataset: str) -> Path:
    if path.is_file():
        return path
    name = f"{dataset}.pkl"
    return find_in(path, [path / name, path / "cosmic" / name], f"COSMIC {dataset} pickle")


def read_fields(file: Path, dataset: str) -> dict[str, Any]:
    data = load_data_pickle(file)
    names = FIELDS[dataset]
    if not isinstance(data, (list, tuple)) or len(data) != len(names):
        raise InputError(f"not a COSMIC {dataset} pickle: expected a list of {len(names)} fields ({', '.join(names)})", path=file)
    return dict(zip(names, data))


def _speaker(raw: Any, *, file: Path, field: str) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (list, tuple)) and raw.count(1) == 1:
        return f"Speaker_{list(raw).index(1)}"
    raise InputError(f"speaker must be a name or a one-hot list, got {raw!r}", path=file, field=field)


def read_cosmic(path: Path, split: str, label_set: LabelSet | None = None, *, dataset: str) -> list[Dialogue]:
    file = pickle_path(path, dataset)
    fields = read_fields(file, dataset)
    ids = named_label_set(dataset)  # the pickle's integer labels index its benchmark's own labels
    label_set = label_set or ids
    dialogues = []
    for key in fields[split]:
        where = f"{dataset}[{key!r}]"
        try:
            speakers, labels, sentences = fields["speakers"][key], fields["labels"][key], fields["sentences"][key]
        except (KeyError, TypeError):
            raise InputError(f"dialogue {key!r} of the {split} ids has no speakers, labels or sentences", path=file) from None
        if not len(speakers) == len(labels) == len(sentences):
            raise InputError(f"dialogue {key!r}: speakers, labels and sentences differ in length", path=file)
        utterances = []
        for position, (speaker, label, sentence) in enumerate(zip(speakers, labels, sentences)):
            if not isinstance(label, int) or not 0 <= label < len(ids):
                raise InputError(f"label {label!r} is not a class id", path=file, field=f"{where}.labels[{position}]")
            text = repair_cp1252_mojibake(str(sentence)).strip()
            if not text:
                raise InputError("empty utterance text", path=file, field=f"{where}.sentences[{position}]")
            emotion = canonical_emotion(label_set, ids.labels[label], path=file, line=0, field=f"{where}.labels[{position}]")
            utterances.append(
                Utterance(speaker=_speaker(speaker, file=file, field=f"{where}.speakers[{position}]"), text=text, emotion=emotion)
            )
        dialogue_id = str(key - MELD_ID_OFFSETS[split]) if dataset == "meld" else str(key)
        dialogues.append(Dialogue(id=dialogue_id, dataset=dataset, split=split, utterances=tuple(utterances), extra={"cosmic_id": key}))
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
