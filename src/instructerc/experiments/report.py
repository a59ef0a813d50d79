"""Collecting a grid's results: a CSV of every run, a Markdown table of means, a plot."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from instructerc.evaluation.report import md_cell, printable, write_together
from instructerc.experiments.grid import METRICS, ExperimentConfig, axis_number, scores_name
from instructerc.experiments.runner import RunFailure, RunResult
from instructerc.files import free_number

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


def csv_text(config: ExperimentConfig, table: list[dict[str, object]], split: str) -> str:
    """The table as CSV; with no run finished it still has its header, so it reads as an empty table."""
    fixed = ["run", *config.axes, "seed", "scored_on", SELECTION_COLUMN, *(score_column(split, m) for m in METRICS)]
    columns = list(dict.fromkeys([*fixed, *(key for row in table for key in row)]))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([csv_cell(column) for column in columns])
    writer.writerows([csv_cell(row.get(column, "")) for column in columns] for row in table)
    return buffer.getvalue()


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """``value`` for a CSV cell that a spreadsheet opens as text, never as a formula.

    Axis names and values, run and dataset names come from the user's grid and data, and a
    spreadsheet runs a cell starting with ``=``, ``+``, ``-`` or ``@`` as a formula
    (``=HYPERLINK(...)``). Such a cell gets a leading ``'``, the usual guard, which spreadsheets
    hide. Numbers stay as they are (``-1`` is data, not a formula, and must still read as one).
    A score that does not exist (NaN: a dataset the dev split does not hold) is an empty cell,
    what a spreadsheet reads as missing; written as ``nan`` it was text in a column of numbers."""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if not isinstance(value, str) or not value.startswith(_FORMULA_STARTS):
        return value
    try:
        if math.isfinite(float(value)):
            return value
    except ValueError:
        pass
    return "'" + value


def mean_std(values: list[float]) -> str:
    """Mean ± standard deviation over seeds; ``n/a`` where there is no score (a dataset dev does
    not hold has no dev score), not ``nan``."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
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


def plot_png(config: ExperimentConfig, table: list[dict[str, object]], split: str) -> bytes:
    """Test weighted F1 against the plot's x axis (mean ± std over seeds), as PNG: one line per
    value of its ``lines`` axis and scored dataset, and per value of any other axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = config.plot
    assert spec is not None
    numeric = {name: _position(name) for name in config.axes[spec.x]}
    series: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in table:
        series[_line_name(config, row)][str(row[spec.x])].append(float(row[score_column(split, "weighted_f1")]))
    figure, axis = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for line, points in sorted(series.items()):
        xs = sorted((numeric[x], statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for x, v in points.items())
        axis.errorbar([p[0] for p in xs], [p[1] for p in xs], yerr=[p[2] for p in xs], marker="o", capsize=3, label=line)
    if spec.log2_x:
        axis.set_xscale("log", base=2)
    # Two values at one position (``1/2`` and ``0.5``) share one tick, labelled with both.
    ticks: dict[float, list[str]] = defaultdict(list)
    for name, position in numeric.items():
        ticks[position].append(name)
    axis.set_xticks(sorted(ticks))
    # parse_math off everywhere: matplotlib reads text between two ``$`` as TeX, and a grid or
    # dataset name like ``$\frac$`` would fail the report after every run trained.
    axis.set_xticklabels([" = ".join(ticks[position]) for position in sorted(ticks)], parse_math=False)
    axis.set_xlabel(f"{spec.x}", parse_math=False)
    axis.set_ylabel(f"{split} weighted F1")
    axis.set_title(config.name, parse_math=False)
    axis.grid(alpha=0.3)
    if series:
        for text in axis.legend().get_texts():
            text.set_parse_math(False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _line_name(config: ExperimentConfig, row: dict[str, object]) -> str:
    """The plot line a row belongs to. Every axis but x names it, not just ``lines``: runs that
    differ on another axis (history on and off) are other conditions, not more seeds of one
    point, and averaged together they would draw a point no run measured."""
    spec = config.plot
    assert spec is not None
    scored = str(row["scored_on"])
    line = f"{row[spec.lines]} ({scored})" if spec.lines and str(row[spec.lines]) != scored else scored
    others = [f"{axis}={row[axis]}" for axis in config.axes if axis not in (spec.x, spec.lines)]
    return f"{line}, {', '.join(others)}" if others else line


def _position(value: str) -> float:
    number = axis_number(value)
    if number is None:  # the grid's checks refuse such a value when it is loaded
        raise AssertionError(f"plot x value {value!r} is not a number")
    return number


def failures_section(failures: Sequence[RunFailure]) -> str:
    """The runs that failed, each with its error, under the table (empty when none did)."""
    if not failures:
        return ""
    lines = [f"\n{len(failures)} run(s) failed and are not in the table:\n", "| run | error |", "| --- | --- |"]
    lines += [f"| {md_cell(failure.name)} | {md_cell(failure.message)} |" for failure in failures]
    return "\n".join(lines) + "\n"


def write_report(config: ExperimentConfig, results: list[RunResult], directory: Path, failures: Sequence[RunFailure] = ()) -> list[Path]:
    """CSV, Markdown table (and plot) of a grid under ``directory``; returns the files written.
    The Markdown names the ``failures`` of this invocation: a table without them reads as if the
    grid had only the runs it shows.

    All or nothing: every file is rendered first and they replace their earlier versions
    together, so a stop or a full disk never leaves a new table beside an old plot. An earlier
    report that held rows this one lacks is kept beside it (see :func:`kept_earlier_report`)."""
    split = config.evaluate_split
    table = rows(results, split)
    scope = (
        split
        if config.evaluate_max_dialogues is None
        else (f"{split} (a fixed subset of at most {config.evaluate_max_dialogues} {split} dialogues per dataset)")
    )
    heading = f"# {md_cell(config.name)}\n\n{len(results)} runs; {scope} scores of dev-selected checkpoints; mean ± std over seeds.\n\n"
    files: dict[str, str | bytes] = {
        f"{config.name}.csv": csv_text(config, table, split),
        f"{config.name}.md": heading + markdown_table(config, table, split) + failures_section(failures),
    }
    if config.plot is not None:
        files[f"{config.name}.png"] = plot_png(config, table, split)
    kept, warning = kept_earlier_report(config.name, directory, files[f"{config.name}.csv"])
    files.update(kept)
    directory.mkdir(parents=True, exist_ok=True)
    written = write_together(directory, files)
    if warning:
        print(warning, file=sys.stderr)
    if config.plot is None:
        # A plot an earlier grid of this name drew (or this grid, before its plot was dropped):
        # beside this table it would pass for this grid's.
        (directory / f"{config.name}.png").unlink(missing_ok=True)
    return written


REPORT_SUFFIXES = (".csv", ".md", ".png")


def kept_earlier_report(name: str, directory: Path, csv_now: str) -> tuple[dict[str, bytes], str]:
    """The earlier report of this name in ``directory`` under ``NAME.earlier-N.*`` (the first N
    no file has), when its CSV holds a row the new CSV (``csv_now``) does not, and the warning
    to give once it is written; else nothing.

    A report is rebuilt from the run folders, so one that only adds rows (more runs finished,
    ``--only``) replaces the earlier one: nothing of it is lost. But one built after the base
    recipe changed (every run has a new folder, none done yet), after an axis value or seed was
    dropped, on another evaluation split, or by another grid of the same name writing into the
    same folder, lacks rows the earlier report had, and replacing it would lose those results
    without a word: it is kept, and a warning says where."""
    earlier = directory / f"{name}.csv"
    try:
        text = earlier.read_bytes()
    except OSError:  # none (the usual case), or unreadable: then it cannot be kept either
        return {}, ""
    lost = lost_rows(text, csv_now)
    if not lost:
        return {}, ""
    number = free_number(lambda number: [directory / f"{name}.earlier-{number}{suffix}" for suffix in REPORT_SUFFIXES])
    kept: dict[str, bytes] = {}
    for suffix in REPORT_SUFFIXES:
        with contextlib.suppress(OSError):  # a report without a plot (or one deleted by hand)
            kept[f"{name}.earlier-{number}{suffix}"] = (directory / f"{name}{suffix}").read_bytes()
    shown = ", ".join(lost[:3]) + (f" and {len(lost) - 3} more" if len(lost) > 3 else "")
    warning = (
        f"instructerc: warning: {printable(earlier)}: the earlier report holds {len(lost)} row(s) that this one does not "
        f"({printable(shown)}): kept as {printable(', '.join(sorted(kept)))}"
    )
    return kept, warning


def lost_rows(earlier: bytes, now: str) -> list[str]:
    """The rows of the ``earlier`` CSV that ``now`` lacks, each named ``RUN on DATASET`` (all of
    them when the earlier file is no CSV this module could have written)."""

    def keyed(text: str) -> list[frozenset[tuple[str, str]]]:
        table = list(csv.reader(io.StringIO(text)))
        header, body = (table[0], table[1:]) if table else ([], [])
        # ``nan``: how a missing score was written before it became an empty cell.
        return [frozenset((h, "" if c == "nan" else c) for h, c in zip(header, row)) for row in body]

    try:
        rows_before = keyed(earlier.decode("utf-8"))
    except (UnicodeDecodeError, csv.Error):
        return ["a file that is not a report table"]
    rows_now = set(keyed(now))
    lost = [dict(row) for row in rows_before if row not in rows_now]
    return [f"{row.get('run', '?')} on {row.get('scored_on', '?')}" for row in lost]
