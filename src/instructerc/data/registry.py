"""Every way of reading dialogues, by name, and the one function the rest of the toolkit calls."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from instructerc.data.dialogue import Dialogue, Utterance, canonical_split
from instructerc.data.loader import Loader
from instructerc.data.published import warnings_held
from instructerc.errors import InputError
from instructerc.files import refuse_broken_link
from instructerc.labels.benchmarks import BENCHMARK_LABEL_SETS
from instructerc.labels.label_set import LabelSet
from instructerc.labels.registry import did_you_mean, named_label_set, resolve_label_space
from instructerc.labels.unified import UnifiedMapping, mapping_of


def _loaders() -> dict[str, Loader]:
    from instructerc.data import cosmic, emorynlp, iemocap, jsonl, meld, uime

    return {loader.name: loader for loader in (meld.LOADER, emorynlp.LOADER, iemocap.LOADER, *cosmic.LOADERS, jsonl.LOADER, uime.LOADER)}


def available_sources() -> dict[str, str]:
    """Registered name -> one-line description."""
    return {name: loader.description for name, loader in _loaders().items()}


def get_loader(name: str) -> Loader:
    loaders = _loaders()
    if name not in loaders:
        raise InputError(f"unknown dataset '{name}'{did_you_mean(name, list(loaders))} (known: {', '.join(loaders)})", field="dataset")
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
        if not isinstance(self.name, str):
            raise TypeError(f"a data source's name must be a string (meld, jsonl, ...), not {type(self.name).__name__}")
        if self.path is not None and not isinstance(self.path, Path):
            if not isinstance(self.path, str):
                raise TypeError(f"a data source's path must be a str or Path, not {type(self.path).__name__}")
            if not self.path.strip():
                # Path("") is the working directory: an unset variable would name it without a word.
                raise InputError("an empty path", field="path")
            object.__setattr__(self, "path", Path(self.path))
        if self.name == "uime" and self.labels == "original":
            object.__setattr__(self, "labels", "uime")
        resolve_label_space(self.labels)
        get_loader(self.name)
        _check_label_set_applies(self)
        if self.label_set is not None and not isinstance(self.label_set, str):
            # Read once, here: a generator would give its labels to the first reader only.
            object.__setattr__(self, "label_set", _label_list(self.label_set))

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


def _label_list(labels: Sequence[str]) -> tuple[str, ...]:
    """A user's own list of labels, checked to form a label set here, where the error can name
    the field, not when the data is first read (a bare ValueError from deep inside a run)."""
    try:
        return LabelSet.from_names("user", labels).labels
    except ValueError as error:
        raise InputError(f"the labels do not form a label set: {error}", field="label_set") from None


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
                f'(it covers {", ".join(mapping.forward)}; a JSONL dialogue names its own with "dataset", else it takes '
                "its file's name)",
                path=path,
                field="dataset",
            )
        utterances = tuple(
            u if u.emotion is None else _unify_utterance(u, k, dialogue, mapping, path) for k, u in enumerate(dialogue.utterances)
        )
        unified.append(dialogue.with_utterances(utterances))
    return unified


def _unify_utterance(utterance: Utterance, index: int, dialogue: Dialogue, mapping: UnifiedMapping, path: Path | None) -> Utterance:
    """The utterance with its emotion unified; its dataset's canonical label kept as ``original_emotion``."""
    labels = BENCHMARK_LABEL_SETS[dialogue.dataset]
    original = labels.canonical(utterance.emotion or "")
    if original is None:
        # A file exported with --labels uime keeps the original: its unified labels are read as they are.
        already = (
            "; the file is already unified (it keeps original_emotion): read it without --labels"
            if "original_emotion" in utterance.extra
            else ""
        )
        raise InputError(
            f"dialogue '{dialogue.id}', utterance {index}: emotion '{utterance.emotion}' is not a {dialogue.dataset} label "
            f"(expected one of: {', '.join(labels.labels)}){already}",
            path=path,
            field="emotion",
        )
    return replace(
        utterance, emotion=mapping.to_unified(dialogue.dataset, original), extra={**utterance.extra, "original_emotion": original}
    )


def with_original_gold(dialogues: list[Dialogue], mapping: UnifiedMapping) -> list[Dialogue]:
    """Dialogues whose gold is already in ``mapping``'s unified labels (JSONL read with
    ``--label-set uime``), each utterance of a benchmark the mapping covers given its dataset's
    own label as ``original_emotion``, as :func:`unify` gives it: a unified model is scored on
    that dataset's classes, and without the original the unified gold could not be. A unified
    gold the dataset has no class for gets none, so scoring names it with the classes accepted."""
    out = []
    for dialogue in dialogues:
        if not mapping.covers(dialogue.dataset):
            out.append(dialogue)
            continue
        utterances = tuple(_with_original(u, dialogue.dataset, mapping) for u in dialogue.utterances)
        out.append(dialogue.with_utterances(utterances))
    return out


def _with_original(utterance: Utterance, dataset: str, mapping: UnifiedMapping) -> Utterance:
    if utterance.emotion is None or "original_emotion" in utterance.extra:
        return utterance
    original = mapping.to_original(dataset, utterance.emotion)
    return utterance if original is None else replace(utterance, extra={**utterance.extra, "original_emotion": original})


def _reading_label_set(source: DataSource) -> LabelSet | None:
    """The label set the loader checks gold emotions against. JSONL unified without a label set
    of its own has none: :func:`unify` checks each dialogue's gold against the dataset it names,
    where one label set inferred over a file of MELD and EmoryNLP dialogues would clash
    (``neutral`` beside ``Neutral``) and refuse a file the mapping reads."""
    if source.mapping is not None and source.label_set is None and not _defines_labels(source.name):
        return None
    return source_label_set(source)


def load_dialogues(source: DataSource, split: str) -> list[Dialogue]:
    """The dialogues of one split, with emotions checked against and expressed in the source's labels."""
    if not isinstance(source, DataSource):
        raise TypeError(f"source must be a DataSource (DataSource('meld', path=...)), not {type(source).__name__}")
    split = canonical_split(split)
    loader = get_loader(source.name)
    labels = _reading_label_set(source)
    with warnings_held():  # uime reads three benchmarks: a later one's error is the only line
        dialogues = loader.read(source.root(), split, labels)
    mapping = source.mapping
    if mapping is not None:
        return unify(dialogues, mapping, source.root())
    gold_mapping = mapping_of(labels) if labels is not None else None
    return with_original_gold(dialogues, gold_mapping) if gold_mapping is not None else dialogues
