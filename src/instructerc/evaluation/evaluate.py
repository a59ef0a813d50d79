"""Evaluating a model directory on one split: the function behind ``instructerc evaluate``."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from instructerc.data.dialogue import Dialogue, canonical_split
from instructerc.data.registry import DataSource, load_dialogues
from instructerc.errors import InputError
from instructerc.evaluation.results import PREDICTIONS_FILE, EvaluationResult, SystemResult, recorded_path
from instructerc.labels.label_set import LabelSet


def evaluate_model(
    model: str | Path,
    source: DataSource,
    split: str,
    out: str | Path,
    *,
    mode: str = "score",
    paper_parsing: bool = False,
    baselines_from: str | Path | None = None,
    with_baselines: bool = False,
    chunk_size: int = 64,
    max_dialogues: int | None = None,
    progress: bool = True,
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> EvaluationResult:
    """Predict every utterance of ``split``, score it, and write metrics.json, predictions.jsonl,
    report.md and confusion matrices to ``out``. This is the only place a test split is read.

    ``max_dialogues``: score a fixed subset of at most that many dialogues per source dataset
    (seed 0, so every model is scored on the same dialogues); recorded in the result's data.
    ``dtype``: the precision the model computes in (recorded in the settings).
    ``trust_remote_code``: let the model's own Python files run (never the model directory's choice).
    """
    from instructerc.evaluation.baselines import run_baselines
    from instructerc.evaluation.harness import check_chunk_size, check_scorable, gold_in_model_space, llm_result, predict_all
    from instructerc.evaluation.report import check_output_folder
    from instructerc.inference.predictor import Predictor, check_mode
    from instructerc.modeling.model_dir import Manifest
    from instructerc.prompts.setup import PromptSetup

    check_mode(mode, paper_parsing)
    # Here, not when the first chunk is cut: that is after the model has loaded.
    check_chunk_size(chunk_size)
    if baselines_from and with_baselines:
        raise InputError("give --baselines DIR or --with-baselines, not both", field="baselines")
    split = canonical_split(split)
    model, out = Path(model), Path(out)  # Python callers pass str as readily as Path
    check_output_folder(out)
    dialogues = as_read = _dialogues(source, split, max_dialogues)
    imported = EvaluationResult.load(baselines_from) if baselines_from else None
    # The gold is checked against the model's labels before the model loads: a bad file fails fast.
    Manifest.load(model)  # a clear error for a folder that is no model directory
    label_set = PromptSetup.load(model).label_set
    if source.name == "jsonl" and source.mapping is None and isinstance(source.label_set, str):
        dialogues = gold_in_model_space(dialogues, source.label_set, label_set, source.path)
    check_scorable(dialogues, label_set, source.path)
    data = {"dataset": source.name, "labels": source.labels, "path": recorded_path(source.path)}
    if source.label_set is not None:
        # The gold's label set decides the classes scored (--label-set meld: MELD's), as the baselines record it.
        data["label_set"] = source.label_set if isinstance(source.label_set, str) else list(source.label_set)
    if max_dialogues is not None:
        data["max_dialogues_per_dataset"] = max_dialogues
    if imported is not None:
        _check_imported_baselines(imported, baselines_from, split, data, dialogues, label_set)
    if with_baselines:
        _check_baselines_beside(source, as_read, dialogues, label_set)
    computed = run_baselines(source, split, progress=progress) if with_baselines else None
    predictor = Predictor.from_directory(model, dtype=dtype, trust_remote_code=trust_remote_code)
    predictions = predict_all(predictor, dialogues, mode, paper_parsing, chunk_size, progress=progress)
    settings = {
        "model": os.path.abspath(model),  # as data.path: read from any working directory
        "mode": mode,
        "paper_parsing": paper_parsing,
        "template": predictor.setup.template.name,
        "precision": predictor.precision,
    }
    result = EvaluationResult(split, data, {"llm": llm_result(dialogues, predictions, label_set, settings)})
    if imported is not None:
        result = result.with_systems(
            {
                n: replace(s, settings={**s.settings, "from": os.path.abspath(baselines_from)})
                for n, s in imported.systems.items()
                if s.kind == "baseline"
            }
        )
    if computed is not None:
        result = result.with_systems(computed.systems)
    _write(out, result, dialogues, predictions, mode, label_set)
    return result


def _dialogues(source: DataSource, split: str, max_dialogues: int | None) -> list[Dialogue]:
    """The split's dialogues, or a fixed subset (seed 0) of at most ``max_dialogues`` per dataset;
    says how many of their utterances have no gold and go unscored."""
    from instructerc.evaluation.harness import warn_unscored

    dialogues = load_dialogues(source, split)
    if max_dialogues is not None:
        from instructerc.data.sampling import per_dataset_subset

        if max_dialogues < 1:
            raise InputError("must be at least 1", field="max_dialogues")
        dialogues = per_dataset_subset(dialogues, max_dialogues, seed=0)
    warn_unscored(dialogues, source.path)
    return dialogues


def _check_imported_baselines(
    imported: EvaluationResult, path: Path | None, split: str, data: dict, dialogues: list[Dialogue], label_set: LabelSet
) -> None:
    """Imported baseline results must hold baselines scored on the same split, data and labels."""
    from instructerc.evaluation.baselines import constant_predictions
    from instructerc.evaluation.results import check_comparable
    from instructerc.evaluation.scoring import score_by_dataset

    if not any(s.kind == "baseline" for s in imported.systems.values()):
        raise InputError("holds no baseline results (write them with 'instructerc baseline')", path=path)
    shape = SystemResult("llm", score_by_dataset(dialogues, constant_predictions(dialogues, label_set.labels[0]), label_set))
    check_comparable(EvaluationResult(split, data, {"llm": shape}), imported, path)


def _check_baselines_beside(source: DataSource, as_read: list[Dialogue], dialogues: list[Dialogue], label_set: LabelSet) -> None:
    """Baselines learn the data's own label set on its dialogues as read; the model is scored on
    ``dialogues`` in its label set. Unless both give the same datasets and classes, their rows
    would stand side by side over different classes (or not meet at all): refused before anything
    is trained or loaded."""
    from instructerc.data.registry import label_set_of
    from instructerc.evaluation.scoring import scored_classes

    theirs = label_set_of(source)
    if theirs is None:
        return  # run_baselines says that the data has no emotions to learn from
    mine, baselines = scored_classes(dialogues, label_set), scored_classes(as_read, theirs)
    if mine != baselines:

        def shown(classes: dict[str, tuple[str, ...]]) -> str:
            return "; ".join(f"'{d}' in {', '.join(c)}" for d, c in classes.items())

        raise InputError(
            f"the baselines would be scored on {shown(baselines)} (label set {theirs.name}, the data's), but the model on "
            f"{shown(mine)} (label set {label_set.name}): give --label-set NAME so that both use one label set, "
            "or score the baselines apart with 'instructerc baseline'",
            field="with-baselines",
        )


def _write(out: Path, result: EvaluationResult, dialogues: list[Dialogue], predictions: list, mode: str, label_set: LabelSet) -> None:
    import io

    from instructerc.evaluation.harness import write_prediction_records
    from instructerc.evaluation.report import write_outputs

    # With the other files, all or nothing: new predictions never sit beside an earlier run's metrics.
    records = io.StringIO()
    write_prediction_records(records, dialogues, predictions, mode, label_set)
    try:
        write_outputs(result, out, {PREDICTIONS_FILE: records.getvalue()})
    except OSError as error:
        raise InputError(f"cannot write: {error.strerror or error}", path=error.filename or out) from None
