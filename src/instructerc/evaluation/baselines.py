"""Baselines scored in the same harness as the LLM, so their numbers sit beside its numbers.

``majority``
    Every utterance gets the most frequent training label (ties: the first in label-set order).
``minilm-logreg``
    A discriminative baseline: each utterance is the all-MiniLM-L6-v2 embedding of its text
    concatenated with the mean embedding of the (up to) three utterances before it in its
    dialogue, zeros for a dialogue's first utterance (2 x 384 features; speakers are not used).
    scikit-learn's ``LogisticRegression`` (lbfgs, multinomial, ``class_weight=None``) is trained
    on the train split for each C of a grid; the C with the best dev weighted F1 (averaged over
    datasets, the LLM's selection rule) is kept, and only then is the requested split scored.
    The test split never takes part in the choice; a dev split that holds dialogues of the
    scored split (a copied file) is said so in ``selected_on`` and a warning.

Both see what the LLM sees: the same training split, in the same label space (a unified source
trains a unified baseline, scored back on each dataset's own classes).
"""

from __future__ import annotations

import math
import numbers
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from instructerc.data.dialogue import Dialogue
from instructerc.data.registry import DataSource, label_set_of, load_dialogues
from instructerc.errors import InputError
from instructerc.evaluation.harness import check_scorable
from instructerc.evaluation.results import EvaluationResult, SystemResult, recorded_path
from instructerc.evaluation.scoring import score_by_dataset, selection_score
from instructerc.labels.label_set import LabelSet
from instructerc.labels.prediction import Prediction, per_dialogue
from instructerc.retrieval.encoder import EMBEDDED_ENCODER, resolve_encoder

MAJORITY = "majority"
DISCRIMINATIVE = "minilm-logreg"
BASELINES = (MAJORITY, DISCRIMINATIVE)
CONTEXT = 3
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
MAX_ITER = 5000
T = TypeVar("T")
FEATURES = f"utterance embedding ++ mean embedding of the previous {CONTEXT} utterances (zeros when none)"


# -- majority class -------------------------------------------------------------------------------
def majority_label(train: Sequence[Dialogue], label_set: LabelSet) -> str:
    """The most frequent gold label of the training dialogues (ties: first in label-set order)."""
    counts = Counter(u.emotion for d in train for u in d.utterances if u.emotion is not None)
    if not counts:
        raise InputError("the train split has no gold emotions to learn a baseline from", field="emotion")
    return max(label_set.labels, key=lambda label: counts[label])


def constant_predictions(dialogues: Sequence[Dialogue], label: str) -> list[list[Prediction]]:
    return [[Prediction(label=label) for _ in d.utterances] for d in dialogues]


# -- discriminative baseline ----------------------------------------------------------------------
def load_encoder(name: str = EMBEDDED_ENCODER) -> Any:
    from instructerc.retrieval.encoder import SentenceEncoder

    return SentenceEncoder.load(name)


def utterance_embeddings(dialogues: Sequence[Dialogue], encoder: Any, cache_dir: Path | None = None, progress: bool = False) -> Any:
    """One unit-length row per utterance (dialogues in order), cached on disk by encoder and texts."""
    from instructerc.files import default_cache_dir
    from instructerc.retrieval.cache import cached_array, content_key

    texts = [u.text for d in dialogues for u in d.utterances]
    key = content_key("baseline-utterances-v1", encoder.identity, texts)
    embeddings, _ = cached_array(
        (cache_dir or default_cache_dir()) / "embeddings", key, lambda: encoder.encode(texts, 128, progress), rows=len(texts)
    )
    return embeddings


def context_features(embeddings: Any, lengths: Sequence[int], context: int = CONTEXT) -> Any:
    """``[e_i, mean(e_{i-context} .. e_{i-1})]`` per utterance, within its dialogue; zeros when none."""
    import numpy as np

    rows, width = embeddings.shape
    if rows != sum(lengths):
        raise ValueError(f"{rows} embeddings for {sum(lengths)} utterances")
    history = np.zeros((rows, width), dtype=np.float32)
    start = 0
    for length in lengths:
        for i in range(1, length):
            history[start + i] = embeddings[start + max(0, i - context) : start + i].mean(axis=0)
        start += length
    return np.concatenate([embeddings.astype(np.float32), history], axis=1)


def check_c_grid(c_grid: Sequence[float]) -> tuple[float, ...]:
    """The grid as floats, each finite and > 0 (the regularisation strength is 1 / C), each value
    once (a repeated one would be fitted twice); checked before any encoding, so a typo costs no
    embedding run."""
    if not c_grid:
        raise InputError("the C grid is empty", field="c-grid")
    for c in c_grid:
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(c) or c <= 0:
            raise InputError(f"C must be a finite number greater than 0, not {c!r}", field="c-grid")
    return tuple(dict.fromkeys(float(c) for c in c_grid))


@dataclass
class DiscriminativeBaseline:
    """A logistic regression on MiniLM context features, its C chosen on dev.

    Attributes:
        classifier: the fitted scikit-learn model (trained on train with the chosen C).
        C: the chosen inverse regularisation strength.
        dev_scores: C -> dev selection score (mean weighted F1 over datasets), for the record.
    """

    classifier: Any
    C: float
    dev_scores: dict[float, float]
    label_set: LabelSet
    encoder: Any
    cache_dir: Path | None = None
    train_utterances: int = 0
    iterations: int = 0
    c_grid: tuple[float, ...] = field(default=C_GRID)

    @classmethod
    def fit(
        cls,
        train: Sequence[Dialogue],
        dev: Sequence[Dialogue],
        label_set: LabelSet,
        encoder: Any,
        c_grid: Sequence[float] = C_GRID,
        cache_dir: Path | None = None,
        progress: bool = False,
    ) -> "DiscriminativeBaseline":
        from sklearn.linear_model import LogisticRegression

        c_grid = check_c_grid(c_grid)
        check_scorable(dev, label_set)
        check_trainable(train)
        features, gold = _labelled(train, encoder, cache_dir, progress)
        dev_features = context_features(utterance_embeddings(dev, encoder, cache_dir, progress), [len(d) for d in dev])
        best: tuple[float, float, Any] | None = None
        scores: dict[float, float] = {}
        for c in sorted(c_grid):
            classifier = LogisticRegression(C=c, max_iter=MAX_ITER, class_weight=None).fit(features, gold)
            scores[c] = selection_score(score_by_dataset(dev, classifier_predictions(classifier, label_set, dev, dev_features), label_set))
            if best is None or scores[c] > best[0]:
                best = (scores[c], c, classifier)
        _, chosen, classifier = best
        return cls(
            classifier, chosen, scores, label_set, encoder, cache_dir, len(gold), int(max(classifier.n_iter_)), tuple(sorted(c_grid))
        )

    def predict(self, dialogues: Sequence[Dialogue], progress: bool = False) -> list[list[Prediction]]:
        features = context_features(utterance_embeddings(dialogues, self.encoder, self.cache_dir, progress), [len(d) for d in dialogues])
        return classifier_predictions(self.classifier, self.label_set, dialogues, features)

    def settings(self) -> dict[str, Any]:
        return {
            "encoder": getattr(self.encoder, "identity", str(self.encoder)),
            "features": FEATURES,
            "context": CONTEXT,
            "classifier": "LogisticRegression(lbfgs)",
            "class_weight": None,
            "max_iter": MAX_ITER,
            "iterations": self.iterations,
            "converged": self.iterations < MAX_ITER,
            "C": self.C,
            "c_grid": list(self.c_grid),
            "selected_on": "dev",
            "dev_weighted_f1_by_C": {str(c): s for c, s in self.dev_scores.items()},
            "trained_on": "train",
            "train_utterances": self.train_utterances,
        }


def classifier_predictions(classifier: Any, label_set: LabelSet, dialogues: Sequence[Dialogue], features: Any) -> list[list[Prediction]]:
    """The most probable class per utterance, with every label's probability (0 for a class
    the training split never showed)."""
    probabilities = classifier.predict_proba(features)
    classes = list(classifier.classes_)
    flat = []
    for row in probabilities:
        by_class = dict(zip(classes, row.tolist()))
        scores = {label: float(by_class.get(label, 0.0)) for label in label_set.labels}
        flat.append(Prediction(label=classes[int(row.argmax())], scores=scores))
    return per_dialogue(flat, dialogues)


def check_trainable(train: Sequence[Dialogue]) -> None:
    """A classifier needs two classes to tell apart; checked before anything is encoded."""
    emotions = {u.emotion for d in train for u in d.utterances if u.emotion is not None}
    if len(emotions) < 2:
        found = f"only '{next(iter(emotions))}'" if emotions else "no gold emotion"
        raise InputError(
            f"the train split has {found}: a classifier needs at least two different emotions "
            f"(the {MAJORITY} baseline alone can be trained on it)",
            field="emotion",
        )


def _labelled(dialogues: Sequence[Dialogue], encoder: Any, cache_dir: Path | None, progress: bool) -> tuple[Any, list[str]]:
    """Features and gold of the labelled utterances (unlabelled ones still serve as context)."""
    features = context_features(utterance_embeddings(dialogues, encoder, cache_dir, progress), [len(d) for d in dialogues])
    keep = [u.emotion is not None for d in dialogues for u in d.utterances]
    gold = [u.emotion for d in dialogues for u in d.utterances if u.emotion is not None]
    return features[keep], gold


# -- running them ---------------------------------------------------------------------------------
def run_baselines(
    source: DataSource,
    split: str,
    which: Sequence[str] = BASELINES,
    encoder: Any = None,
    encoder_name: str = EMBEDDED_ENCODER,
    c_grid: Sequence[float] = C_GRID,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Train the chosen baselines on ``source``'s train split (C on dev) and score them on ``split``."""
    from instructerc.data.dialogue import canonical_split

    # Python callers pass str as readily as Path; a str failed only once the encoder had loaded.
    cache_dir = None if cache_dir is None else Path(cache_dir)

    which = [which] if isinstance(which, str) else list(which)  # one name, not its letters
    unknown = sorted(set(which) - set(BASELINES))
    if unknown or not which:
        raise InputError(f"unknown baselines {unknown} (known: {', '.join(BASELINES)})", field="baselines")
    if DISCRIMINATIVE in which:
        c_grid = check_c_grid(c_grid)
        if encoder is None:
            resolve_encoder(encoder_name)  # a wrong name fails now, not after loading the data
    split = canonical_split(split)
    label_set = label_set_of(source)
    if label_set is None:
        raise InputError("the data has no emotions, so there is nothing to train a baseline on", field="dataset")
    train = load_dialogues(source, "train")
    target = train if split == "train" else load_dialogues(source, split)
    _in_split(source, split, lambda: check_scorable(target, label_set))
    if DISCRIMINATIVE in which:
        # Every check before the first baseline is trained: encoding takes minutes.
        dev = target if split == "dev" else load_dialogues(source, "dev")
        _in_split(source, "dev", lambda: check_scorable(dev, label_set), f"{DISCRIMINATIVE} chooses its C on it")
        _in_split(source, "train", lambda: check_trainable(train))
    systems: dict[str, SystemResult] = {}
    trained_on = train_selection(train, target, split, warn=DISCRIMINATIVE in which)
    if MAJORITY in which:
        label = _in_split(source, "train", lambda: majority_label(train, label_set))
        systems[MAJORITY] = SystemResult(
            "baseline",
            score_by_dataset(target, constant_predictions(target, label), label_set, intervals=True),
            {"label": label, "label_set": label_set.name, "trained_on": trained_on},
        )
    if DISCRIMINATIVE in which:
        selected_on = dev_selection(dev, target, split)
        model = DiscriminativeBaseline.fit(train, dev, label_set, encoder or load_encoder(encoder_name), c_grid, cache_dir, progress)
        systems[DISCRIMINATIVE] = SystemResult(
            "baseline",
            score_by_dataset(target, model.predict(target, progress), label_set, intervals=True),
            {**model.settings(), "selected_on": selected_on, "trained_on": trained_on, "label_set": label_set.name},
        )
    data = {
        "dataset": source.name,
        "labels": source.labels,
        "path": recorded_path(source.path),
        "label_set": label_set.name,
    }
    return EvaluationResult(split=split, data=data, systems=systems)


def dev_selection(dev: Sequence[Dialogue], target: Sequence[Dialogue], split: str) -> str:
    """What C is chosen on, as the report states it: ``dev``; ``split`` when dev holds the very
    dialogues scored (a copied file), or how many of dev's dialogues are also scored. A choice
    made on the scored dialogues makes their figure optimistic, so it is said, not hidden."""
    return _overlap("dev", dev, target, split, f"{DISCRIMINATIVE} chooses its C on them, so its {split} figure is optimistic")


def train_selection(train: Sequence[Dialogue], target: Sequence[Dialogue], split: str, warn: bool = True) -> str:
    """What the baselines are trained on, as the report states it, like :func:`dev_selection`:
    one JSONL file read as every split trains them on the very dialogues they are scored on
    (MiniLM+LR then scores near 100), which must not read as a figure of unseen data. ``warn``:
    also on stderr, which only the discriminative baseline needs (a majority class learnt from the
    scored dialogues is just their most frequent label)."""
    return _overlap("train", train, target, split, f"{DISCRIMINATIVE} learns them, so its {split} figure is optimistic", warn)


def _overlap(name: str, used: Sequence[Dialogue], target: Sequence[Dialogue], split: str, consequence: str, warn: bool = True) -> str:
    """``name``, ``split`` when the split ``name`` holds exactly the scored dialogues, or ``name``
    with how many of its dialogues are scored too; with ``warn``, any overlap is said on stderr."""
    if split == name:
        return name
    scored = {_dialogue_key(d) for d in target}
    keys = [_dialogue_key(d) for d in used]
    shared = sum(key in scored for key in keys)
    if shared == 0:
        return name
    if set(keys) == scored:
        message = f"the {name} split holds the same dialogues as the {split} split"
        described = split
    else:
        message = f"{shared} of the {name} split's {len(keys)} dialogues are also in the {split} split"
        described = f"{name} ({shared} of its {len(keys)} dialogues also in {split})"
    if warn:
        print(f"instructerc: warning: {message}: {consequence}", file=sys.stderr)
    return described


def _dialogue_key(dialogue: Dialogue) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A dialogue's content (ids differ between copies of one dialogue, and may repeat across splits)."""
    return dialogue.dataset, tuple((u.speaker, u.text) for u in dialogue.utterances)


def _in_split(source: DataSource, split: str, check: Callable[[], T], why: str = "") -> T:
    """``check()``, its error naming the data and the split it is about: a complaint about the dev
    split must not read as one about the split that was asked for."""
    try:
        return check()
    except InputError as error:
        if error.path is not None:
            raise
        where = f"the {split} split" + (f" ({why})" if why else "")
        message = error.message if error.message.startswith(f"the {split} split") else f"{where}: {error.message}"
        raise InputError(message, path=source.path, field=error.field) from None
