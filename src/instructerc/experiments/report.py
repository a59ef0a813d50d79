"""Collecting a grid's results: a CSV of every run, a Markdown table of means, a plot."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from pathlib import Path

from instructerc.evaluation.report import md_cell
from instructerc.experiments.grid import METRICS, ExperimentConfig, axis_number, scores_name
from instructerc.experiments.runner import RunResult
from instructerc.files import atomic_write

# The dev weighted F1 that selected each run's checkpoint (the committed tables' name for it).
SELECTION_COLUMN = "dev_weighted_f1"


def score_column(split: str, metric: str) -> str:
    """The column of an evaluation score: ``test_weighted_f1``; ``dev_eval_weighted_f1`` for dev,
    which must not take the selection score's column."""
    return f"{scores_name(split)}_{metric}"


def score_header(split: str) -> str:
    return scores_name(split).replace("_", " ")


def rows(results: list[RunResult], split: str) -> list[dict[str, object]]:
    """One row per run and scored dataset (``scored_on``: a grid may have an axis named ``dataset``)."""
    table = []
    for result in results:
        dev_by_dataset = result.dev.get("by_dataset", {})
        for dataset, metrics in result.test.items():
            row: dict[str, object] = {"run": result.name, **result.spec.values, "seed": result.spec.seed, "scored_on": dataset}
            row[SELECTION_COLUMN] = round(dev_by_dataset.get(dataset, {}).get("weighted_f1", float("nan")), 2)
            for metric in METRICS:
                row[score_column(split, metric)] = round(metrics[metric], 2)
            table.append(row)
    return table


def write_csv(table: list[dict[str, object]], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in table for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(table)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def markdown_table(config: ExperimentConfig, table: list[dict[str, object]], split: str) -> str:
    """Mean ± standard deviation over seeds, one row per combination of axis values and dataset."""
    axes = list(config.axes)
    groups: dict[tuple, list[dict[str, object]]] = defaultdict(list)
    for row in table:
        groups[tuple(row[a] for a in axes) + (row["scored_on"],)].append(row)
    scores = score_header(split)
    header = [*axes, "scored on", "seeds", "dev W-F1", f"{scores} W-F1", f"{scores} macro F1", f"{scores} accuracy"]
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + " --- |" * len(header)]
    for key, members in groups.items():
        cells = [md_cell(k) for k in key]
        cells.append(str(len(members)))
        cells.append(mean_std([float(m[SELECTION_COLUMN]) for m in members]))
        cells += [mean_std([float(m[score_column(split, metric)]) for m in members]) for metric in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(config: ExperimentConfig, table: list[dict[str, object]], split: str, path: Path) -> None:
    """Test weighted F1 against the plot's x axis, one line per value of its ``lines`` axis (mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = config.plot
    assert spec is not None
    x_values = list(config.axes[spec.x])
    numeric = {name: _position(name) for name in x_values}
    series: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in table:
        scored = str(row["scored_on"])
        line = f"{row[spec.lines]} ({scored})" if spec.lines and str(row[spec.lines]) != scored else scored
        series[line][str(row[spec.x])].append(float(row[score_column(split, "weighted_f1")]))
    figure, axis = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for line, points in sorted(series.items()):
        xs = sorted((numeric[x], statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for x, v in points.items())
        axis.errorbar([p[0] for p in xs], [p[1] for p in xs], yerr=[p[2] for p in xs], marker="o", capsize=3, label=line)
    if spec.log2_x:
        axis.set_xscale("log", base=2)
    axis.set_xticks(sorted(numeric.values()))
    axis.set_xticklabels([name for name, _ in sorted(numeric.items(), key=lambda kv: kv[1])])
    axis.set_xlabel(f"{spec.x}")
    axis.set_ylabel(f"{split} weighted F1")
    axis.set_title(config.name)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _position(value: str) -> float:
    number = axis_number(value)
    if number is None:  # the grid's checks refuse such a value when it is loaded
        raise AssertionError(f"plot x value {value!r} is not a number")
    return number


def write_report(config: ExperimentConfig, results: list[RunResult], directory: Path) -> list[Path]:
    """CSV, Markdown table (and plot) of a grid under ``directory``; returns the files written."""
    split = config.evaluate_split
    table = rows(results, split)
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / f"{config.name}.csv", directory / f"{config.name}.md"]
    write_csv(table, written[0])
    with atomic_write(written[1]) as handle:
        scope = (
            split
            if config.evaluate_max_dialogues is None
            else (f"{split} (a fixed subset of at most {config.evaluate_max_dialogues} {split} dialogues per dataset)")
        )
        handle.write(f"# {config.name}\n\n{len(results)} runs; {scope} scores of dev-selected checkpoints; mean ± std over seeds.\n\n")
        handle.write(markdown_table(config, table, split))
    if config.plot is not None and table:
        written.append(directory / f"{config.name}.png")
        plot(config, table, split, written[-1])
    return written
