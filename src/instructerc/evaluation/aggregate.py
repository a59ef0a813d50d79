"""Several runs (seeds) of one evaluation, summarised as mean and standard deviation.

The standard deviation is the sample one (n - 1), as the seed spread of a reported mean usually is.
Runs are only combined when they score the same utterances the same way: same split, datasets,
classes and counts, and the same LLM mode and parsing.
"""

from __future__ import annotations

import json
import math
import numbers
import statistics
from pathlib import Path
from typing import Any, Sequence

from instructerc.errors import InputError
from instructerc.evaluation.metrics import Metrics
from instructerc.evaluation.report import SHORT_NAMES, dataset_title, md_cell, write_together
from instructerc.evaluation.results import FORMAT, EvaluationResult, check_comparable

AGGREGATE_FILE = "aggregate.json"
AGGREGATE_REPORT = "aggregate.md"
SCALARS = ("weighted_f1", "macro_f1", "accuracy", "invalid_rate")
_MUST_AGREE = ("mode", "paper_parsing")
SUBSET_KEY = "max_dialogues_per_dataset"  # in an evaluation's data: it scored a fixed subset


def spread(values: Sequence[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values), "values": list(values)}


def aggregate(results: Sequence[EvaluationResult], names: Sequence[str]) -> dict[str, Any]:
    """Mean and standard deviation per system, dataset and metric (``names`` label the runs).

    Systems that are not in every run are listed under ``skipped``.
    """
    if len(results) < 2:
        raise InputError("give at least two runs to aggregate", field="runs")
    if len(set(names)) != len(names):
        raise InputError("a run is given twice", field="runs")
    first = results[0]
    for result, name in zip(results[1:], names[1:]):
        check_comparable(first, result, name)
        _check_same_subset(first, result, name)
    everywhere = [s for s in first.systems if all(s in r.systems for r in results)]
    skipped = sorted({s for r in results for s in r.systems} - set(everywhere))
    if not everywhere:
        # Nothing would be aggregated: an empty summary must not pass for a result.
        found = "; ".join(f"{name}: {', '.join(r.systems) or 'none'}" for r, name in zip(results, names))
        raise InputError(f"no system was scored in every run, so there is nothing to aggregate ({found})", field="runs")
    systems: dict[str, Any] = {}
    for system in everywhere:
        settings = {key: first.systems[system].settings.get(key) for key in _MUST_AGREE if key in first.systems[system].settings}
        for result, name in zip(results, names):
            theirs = {key: result.systems[system].settings.get(key) for key in settings}
            if theirs != settings:
                raise InputError(
                    f"system '{system}' ran with {theirs} here but {settings} in {names[0]}: aggregate like with like", path=name
                )
        by_dataset = {dataset: _summarise(results, names, system, dataset) for dataset in first.systems[system].by_dataset}
        systems[system] = {"kind": first.systems[system].kind, "settings": settings, "by_dataset": by_dataset}
    return {
        "format": FORMAT,
        "split": first.split,
        "data": first.data,
        "runs": list(names),
        "n": len(results),
        "systems": systems,
        "skipped": skipped,
    }


def _check_same_subset(first: EvaluationResult, other: EvaluationResult, name: str) -> None:
    """Runs scored on fixed subsets of different sizes scored different utterances, even where
    the counts happen to agree: their mean would be of no one split."""
    mine, theirs = (r.data.get(SUBSET_KEY) for r in (first, other))
    if mine != theirs:
        shown = {None: "the whole split"}
        raise InputError(
            f"scored on {shown.get(theirs, f'at most {theirs} dialogues per dataset')}, "
            f"not {shown.get(mine, f'at most {mine} dialogues per dataset')} as the first run: aggregate like with like",
            path=name,
            field=f"data.{SUBSET_KEY}",
        )


def _summarise(results: Sequence[EvaluationResult], names: Sequence[str], system: str, dataset: str) -> dict[str, Any]:
    """Mean and spread of one system's metrics on one dataset over the runs."""
    where = f"systems.{system}.by_dataset.{dataset}"
    for result, name in zip(results, names):
        if dataset not in result.systems[system].by_dataset:
            raise InputError(f"system '{system}' has no scores on {dataset} here", path=name, field=where)
    runs = [r.systems[system].by_dataset[dataset] for r in results]
    summary: dict[str, Any] = {
        metric: spread([_score(getattr(m, metric), name, f"{where}.{metric}") for m, name in zip(runs, names)]) for metric in SCALARS
    }
    summary["per_class_f1"] = {
        label: spread([_class_f1(m, label, name, f"{where}.per_class.{label}") for m, name in zip(runs, names)]) for label in runs[0].labels
    }
    summary["count"] = runs[0].count
    return summary


def _class_f1(metrics: Metrics, label: str, name: str, field: str) -> float:
    if label not in metrics.per_class:
        raise InputError(f"class '{label}' has no scores", path=name, field=field)
    return _score(metrics.per_class[label].f1, name, f"{field}.f1")


def _score(value: Any, name: str, field: str) -> float:
    """``value`` if it is a finite number: a damaged metrics.json must not crash the statistics."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"not a finite number: {value!r}", path=name, field=field)
    return float(value)


def load_runs(locations: Sequence[Path]) -> list[EvaluationResult]:
    return [EvaluationResult.load(location) for location in locations]


def render_aggregate(summary: dict[str, Any]) -> str:
    split, n = summary["split"], summary["n"]
    paper = any(s["settings"].get("paper_parsing") for s in summary["systems"].values())
    note = " — LLM with paper parsing: generations that are not a label were snapped to the closest label" if paper else ""
    lines = [f"# {md_cell(summary['data'].get('dataset'))}, {split} split: mean ± standard deviation over {n} runs", ""]
    lines += [f"- run: {md_cell(run)}" for run in summary["runs"]]
    if summary["data"].get(SUBSET_KEY) is not None:
        lines.append(f"- a fixed subset (seed 0) of at most {summary['data'][SUBSET_KEY]} dialogues per dataset, not the whole split")
    if summary["skipped"]:
        lines.append(f"- not in every run, left out: {', '.join(map(md_cell, summary['skipped']))}")
    datasets = list(dict.fromkeys(d for s in summary["systems"].values() for d in s["by_dataset"]))
    for dataset in datasets:
        lines += ["", f"## {md_cell(dataset_title(dataset))} ({split} split, {n} runs){note}", ""]
        lines += [
            f"| system | weighted F1 ({split}) | macro F1 ({split}) | accuracy ({split}) | invalid rate ({split}) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, system in summary["systems"].items():
            if dataset not in system["by_dataset"]:
                continue
            row = system["by_dataset"][dataset]
            cells = " | ".join(f"{row[m]['mean']:.2f} ± {row[m]['std']:.2f}" for m in SCALARS)
            mode = system["settings"].get("mode")
            lines.append(f"| {md_cell(SHORT_NAMES.get(name, name))}{f' ({md_cell(mode)} mode)' if mode else ''} | {cells} |")
    return "\n".join(lines) + "\n"


def write_aggregate(summary: dict[str, Any], out: Path) -> list[Path]:
    """aggregate.json and aggregate.md, all or nothing: a stop or a full disk between the two
    must not leave a new summary beside an earlier report."""
    files = {
        AGGREGATE_FILE: json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
        AGGREGATE_REPORT: render_aggregate(summary),
    }
    out.mkdir(parents=True, exist_ok=True)
    return write_together(out, files)
