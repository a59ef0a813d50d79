"""Every way of reading dialogues, by name, and the one function the rest of the toolkit calls."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from instructerc.data.dialogue import Dialogue, Utterance, canonical_split
from instructerc.data.loader import Loader
from instructerc.errors import InputError
from instructerc.files import refuse_broken_link
from instructerc.labels.benchmarks import BENCHMARK_LABEL_SETS
from instructerc.labels.label_set import LabelSet
from instructerc.labels.registry import named_label_set, resolve_label_space
from instructerc.labels.unified import UnifiedMapping


def _loaders() -> dict[str, Loader]:
    from instructerc.data import cosmic, emorynlp, iemocap, jsonl, meld, uime

    return {loader.name: loader for loader in (meld.LOADER, emorynlp.LOADER, iemocap.LOADER, *cosmic.LOADERS, jsonl.LOADER, uime.LOADER)}


def available_sources() -> dict[str, str]:
    """Registered name -> one-line description."""
    return {name: loader.description for name, loader in _loaders().items()}


def get_loader(name: str) -> Loader:
    loaders = _loaders()
    if name not in loaders:
        raise InputError(f"unknown dataset '{name}' (known: {', '.join(loaders)})", field="dataset")
    return loaders[name]


@dataclass(frozen=True)
class DataSource:
    """Where dialogues come from and which labels they are read in.

    Attributes:
        name: a registered loader (``meld``, ``emorynlp``, ``iemocap``, ``cosmic-meld``, ``jsonl``, ``uime``, ...).
        path: a data root holding the benchmark folders (``meld/``, ``emorynlp/``, ``cosmic/``), a
            dataset folder, or a file.
        labels: ``original``, or a unified label space ``uime`` / ``uime:MAPPING`` (``uime`` data is
            always unified; ``original`` there means the paper's mapping).
        label_set: for JSONL only: the label set its emotions follow, by name (``meld``, ``uime``) or
            as a list; by default the emotions found in the train file.
    """

    name: str
    path: Path | None = None
    labels: str = "original"
    label_set: str | Sequence[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.path is not None and not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))
        if self.name == "uime" and self.labels == "original":
            object.__setattr__(self, "labels", "uime")
        resolve_label_space(self.labels)
        get_loader(self.name)
        _check_label_set_applies(self)

    @property
    def mapping(self) -> UnifiedMapping | None:
        return resolve_label_space(self.labels).mapping

    def root(self) -> Path:
        if self.path is None:
            raise InputError(
                f"no data path for '{self.name}': pass --data (the folder holding meld/, emorynlp/, cosmic/) or a file", field="path"
            )
        if not self.path.exists():
            refuse_broken_link(self.path)
            raise InputError("no such file or folder", path=self.path)
        return self.path


def _check_label_set_applies(source: DataSource) -> None:
    """``label_set`` describes data that defines its own labels (JSONL). A benchmark's labels are
    fixed: another label set given for it would be ignored, and the data read in labels the user
    did not ask for; naming the labels it has (its own, or the unified ones of ``labels``) is harmless."""
    if source.label_set is None or not _defines_labels(source.name):
        return
    fixed = {ls.name for ls in (source_label_set(source), label_set_of(source)) if ls is not None}
    if isinstance(source.label_set, str) and source.label_set in fixed:
        return
    raise InputError(
        f"--label-set is for JSONL data: {source.name}'s emotions are in its own labels ({' or '.join(sorted(fixed))}); "
        "--labels uime[:MAPPING] reads them in a unified space",
        field="label_set",
    )


def _defines_labels(name: str) -> bool:
    """Whether the loader ``name`` fixes its data's labels (every benchmark), unlike JSONL."""
    return get_loader(name).label_set is not None or name == "uime"


def source_label_set(source: DataSource) -> LabelSet | None:
    """The labels the source's files are written in (before any unification)."""
    loader = get_loader(source.name)
    if loader.label_set is not None or source.name == "uime":
        return loader.label_set
    if isinstance(source.label_set, str):
        return named_label_set(source.label_set)
    if source.label_set is not None:
        return LabelSet.from_names("user", list(source.label_set))
    from instructerc.data.jsonl import infer_label_set

    return infer_label_set(source.root())


def label_set_of(source: DataSource) -> LabelSet | None:
    """The label set a model trained on this source predicts in."""
    mapping = source.mapping
    return mapping.label_set if mapping is not None else source_label_set(source)


def unify(dialogues: list[Dialogue], mapping: UnifiedMapping, path: Path | None = None) -> list[Dialogue]:
    """Map every emotion onto the unified space; the original label stays in ``extra``. ``path``:
    where the dialogues were read from, named by the error for one the mapping cannot take."""
    unified = []
    for dialogue in dialogues:
        if not mapping.covers(dialogue.dataset):
            raise InputError(
                f"dialogue '{dialogue.id}' is from '{dialogue.dataset}', which the {mapping.name} mapping does not cover "
                f"(it covers {', '.join(mapping.forward)})",
                path=path,
                field="dataset",
            )
        utterances = tuple(u if u.emotion is None else _unify_utterance(u, dialogue, mapping, path) for u in dialogue.utterances)
        unified.append(dialogue.with_utterances(utterances))
    return unified


def _unify_utterance(utterance: Utterance, dialogue: Dialogue, mapping: UnifiedMapping, path: Path | None) -> Utterance:
    """The utterance with its emotion unified; its dataset's canonical label kept as ``original_emotion``."""
    labels = BENCHMARK_LABEL_SETS[dialogue.dataset]
    original = labels.canonical(utterance.emotion or "")
    if original is None:
        raise InputError(
            f"dialogue '{dialogue.id}': emotion '{utterance.emotion}' is not a {dialogue.dataset} label "
            f"(expected one of: {', '.join(labels.labels)})",
            path=path,
            field="emotion",
        )
    return replace(
        utterance, emotion=mapping.to_unified(dialogue.dataset, original), extra={**utterance.extra, "original_emotion": original}
    )


def load_dialogues(source: DataSource, split: str) -> list[Dialogue]:
    """The dialogues of one split, with emotions checked against and expressed in the source's labels."""
    split = canonical_split(split)
    loader = get_loader(source.name)
    dialogues = loader.read(source.root(), split, source_label_set(source))
    mapping = source.mapping
    return unify(dialogues, mapping, source.root()) if mapping is not None else dialogues
