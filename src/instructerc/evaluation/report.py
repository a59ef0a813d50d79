"""Writing an evaluation: metrics.json, a short report.md and one confusion matrix per dataset.

Every number in the report names its split. When the LLM's generations were repaired with the
paper's parsing, every table title says so: those numbers hide the invalid outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from pathlib import Path

from instructerc.errors import InputError
from instructerc.evaluation.metrics import INVALID, OUTSIDE, Metrics
from instructerc.evaluation.results import METRICS_FILE, PREDICTIONS_FILE, EvaluationResult, SystemResult
from instructerc.files import atomic_write, check_output_folder_path, nearest_existing

REPORT_FILE = "report.md"
SHORT_NAMES = {"llm": "LLM", "majority": "majority", "minilm-logreg": "MiniLM+LR"}
DATASET_TITLES = {"meld": "MELD", "iemocap": "IEMOCAP", "emorynlp": "EmoryNLP"}


def write_outputs(result: EvaluationResult, out: Path, extra: dict[str, str | bytes] | None = None) -> list[Path]:
    """metrics.json, report.md and ``confusion-SYSTEM-DATASET.png`` for each system scored in
    this run (systems read from another folder keep their matrices there), and the ``extra``
    files (name -> content) of the same run, e.g. its predictions.

    All or nothing: a run stopped midway (Ctrl-C, a full disk) leaves the folder's earlier files
    as they were, never this run's metrics.json beside an earlier run's report.md."""
    # Everything is rendered before anything is written: drawing the matrices takes seconds.
    files: dict[str, str | bytes] = {**(extra or {}), METRICS_FILE: result.to_json()}
    for name, system in result.systems.items():
        if "from" in system.settings:
            continue
        for dataset, metrics in system.by_dataset.items():
            files[confusion_file(name, dataset)] = confusion_png(metrics, confusion_title(name, system, dataset, result.split))
    files[REPORT_FILE] = render_report(result)
    out.mkdir(parents=True, exist_ok=True)
    written = write_together(out, files)
    remove_stale_confusions(out, result)
    remove_stale_predictions(out, files)
    return written


def remove_stale_predictions(out: Path, files: dict[str, str | bytes]) -> None:
    """Removes the predictions.jsonl an earlier evaluation left in ``out`` when this run wrote
    none (``instructerc baseline --out`` naming a model's evaluation folder): beside this run's
    metrics.json they would pass for the predictions it scored, and they are the model's, whose
    scores this run replaced."""
    if PREDICTIONS_FILE not in files and (out / PREDICTIONS_FILE).is_file():
        (out / PREDICTIONS_FILE).unlink(missing_ok=True)


def remove_stale_confusions(out: Path, result: EvaluationResult) -> None:
    """Removes the confusion matrices an earlier run left in ``out`` for a system or dataset this
    run did not score: beside this run's report they would pass for its own. Matrices of systems
    read from elsewhere (``--baselines`` naming this very folder) stay."""
    current = {confusion_file(name, dataset) for name, system in result.systems.items() for dataset in system.by_dataset}
    for path in out.glob("confusion-*.png"):
        if path.name not in current and path.is_file():
            path.unlink(missing_ok=True)


def check_output_folder(out: Path, field: str = "out") -> None:
    """An :class:`InputError` when ``out`` or a folder above it is an existing file or a broken
    symlink (the same test as :func:`instructerc.experiments.runner.check_output_folder`): the outputs
    are written at the very end, so a long evaluation must not run first and fail then."""
    check_output_folder_path(out, field, f"--{field} names the folder to write into")
    check_writable(out, field, f"--{field} names the folder to write into")


def check_writable(folder: Path, field: str, what: str) -> None:
    """An :class:`InputError` naming ``field`` when nothing can be written into ``folder`` (or
    made at it): a read-only folder or file system, a folder of another user. Outputs written at
    the end of hours of work would fail only then. The probe is a folder of a unique name in
    the nearest existing folder, removed again, so no other process sees a name come and go."""
    existing = nearest_existing(folder)
    if existing is None:
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".instructerc-probe-", dir=existing))
    except OSError as error:
        where = "" if existing == folder else f" ({existing})"
        raise InputError(f"cannot write here{where}: {error.strerror or error}; {what}", path=folder, field=field) from None


def write_together(out: Path, files: dict[str, str | bytes]) -> list[Path]:
    """Each of ``files`` (name in ``out`` -> text or bytes), as one change: every file is complete
    in its temporary file before the first is renamed over its old version, so a failure or an
    interrupt while writing leaves every old file in place and no temporary file behind."""
    paths = [out / name for name in files]
    with contextlib.ExitStack() as renames:  # on leaving, each temporary file is renamed, or all removed
        for path, content in zip(paths, files.values()):
            binary = isinstance(content, bytes)
            handle = renames.enter_context(atomic_write(path, "wb" if binary else "w"))
            try:
                handle.write(content)
                handle.flush()  # a full disk shows here, before any rename, not in the renames' flush
            except OSError as error:
                error.filename = error.filename or str(path)  # a failed write() names no file: say which one
                raise
    return paths


def confusion_file(system: str, dataset: str) -> str:
    return f"confusion-{file_part(system)}-{file_part(dataset)}.png"


_UNSAFE_FILE_CHARACTERS = re.compile(r"[^\w.:+-]+")  # a folder separator, a space, a line break...
_MAX_FILE_PART = 100  # bytes: a file name is at most 255, and the name is only part of one


def file_part(name: str) -> str:
    """``name`` as one piece of a file name inside the output folder.

    Dataset names come from the user's data (a JSONL dialogue's ``dataset``), so one may hold a
    ``/``, ``..``, a line break or be too long for a file name: written as it is, it would put the
    file elsewhere or fail after the whole evaluation ran. Such a name becomes its safe characters
    plus a hash of the whole name, so two different names never share a file.
    """
    if not _UNSAFE_FILE_CHARACTERS.search(name) and len(name.encode()) <= _MAX_FILE_PART:
        return name
    slug = _UNSAFE_FILE_CHARACTERS.sub("-", name)[:40].strip("-.") or "x"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


# Characters that start inline Markdown: a label ``*joy*`` would show as an italic joy, ``<b>`` would
# vanish as HTML, ``$x$`` turn into math (GitHub), a backtick open a code span. Each is shown as
# itself with a backslash before it, which CommonMark allows before any ASCII punctuation.
# Underscores between two letters or digits (``v=a__seed=1``) never mark emphasis: kept plain.
_MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]<>~&$|]|_+")


def md_cell(text: object) -> str:
    """``text`` for a Markdown table cell, heading or list line, shown as written. Labels, dataset
    names and axis values come from the user's data or grid, and a ``|`` or a line break in one
    would split the table (or end the heading); other control characters are shown escaped too,
    so the text stays readable."""
    return printable(_MARKDOWN_SPECIAL.sub(_escaped, str(text)))


def _escaped(match: re.Match[str]) -> str:
    text, start, end = match.string, match.start(), match.end()
    inside_word = 0 < start and end < len(text) and text[start - 1].isalnum() and text[end].isalnum()
    if match.group().startswith("_") and inside_word:
        return match.group()
    return "".join("\\" + c for c in match.group())


def printable(text: object) -> str:
    """``text`` with each character that is not printable (a line break, a control) escaped, for
    a line of a report or of the terminal that a name from the user's data must not break."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def dataset_title(dataset: str) -> str:
    return DATASET_TITLES.get(dataset, dataset)


def system_title(name: str, system: SystemResult) -> str:
    """The row name of a system in the report."""
    settings = system.settings
    if system.kind == "llm":
        model = Path(str(settings.get("model", "model"))).name or str(settings.get("model"))
        mode = settings.get("mode", "score")
        return f"LLM {model} ({mode} mode{', paper parsing' if system.paper_parsing else ''})"
    if name == "majority":
        return f"majority class ({settings.get('label')}, the most frequent training label)"
    if name == "minilm-logreg":
        return f"MiniLM-L6 embeddings + logistic regression (C={settings.get('C')}, chosen on {settings.get('selected_on', 'dev')})"
    return name


def paper_parsing_note(result: EvaluationResult) -> str:
    """The suffix every table title carries when paper parsing was used."""
    if not result.paper_parsing:
        return ""
    return " — LLM with paper parsing: generations that are not a label were snapped to the closest label"


def confusion_title(name: str, system: SystemResult, dataset: str, split: str) -> str:
    title = f"{system_title(name, system)}\n{dataset_title(dataset)}, {split} split: rows gold, columns predicted"
    return title + ("\npaper parsing: non-labels snapped to the closest label" if system.paper_parsing else "")


def render_report(result: EvaluationResult) -> str:
    split = result.split
    note = paper_parsing_note(result)
    lines = [f"# {md_cell(result.data.get('dataset', 'data'))}, {split} split", ""]
    lines += [f"- {line}" for line in _notes(result)]
    for dataset in result.datasets:
        scored = [(n, s, s.by_dataset[dataset]) for n, s in result.systems.items() if dataset in s.by_dataset]
        count = scored[0][2].count
        lines += ["", f"## {md_cell(dataset_title(dataset))} ({split} split, {count} utterances){note}", ""]
        lines += _scores_table(scored, split)
        lines += ["", f"### Per-class F1, {md_cell(dataset_title(dataset))} ({split} split){note}", ""]
        lines += [
            f"| class | support ({split}) | " + " | ".join(f"{md_cell(SHORT_NAMES.get(n, n))} F1 ({split})" for n, _, _ in scored) + " |",
            "| --- | ---: | " + " | ".join("---:" for _ in scored) + " |",
        ]
        for label in scored[0][2].labels:
            cells = " | ".join(f"{m.per_class[label].f1:.2f}" for _, _, m in scored)
            lines.append(f"| {md_cell(label)} | {scored[0][2].per_class[label].support} | {cells} |")
        lines += _absent_classes_note(scored[0][2], split)
        pictures = [confusion_file(n, dataset) for n, s, _ in scored if "from" not in s.settings]
        if pictures:
            # ./ first: a name with a colon (jsonl:meld) would otherwise read as a URL scheme.
            lines += ["", "Confusion matrices (rows gold, columns predicted): " + ", ".join(f"[{p}](./{p})" for p in pictures)]
    return "\n".join(lines) + "\n"


def _absent_classes_note(metrics: Metrics, split: str) -> list[str]:
    """Says when classes of the label set have no gold utterance in the split: their F1 is 0 by
    scikit-learn's convention and still counts in macro F1, so a perfect prediction of a split
    holding one class of seven scores a macro F1 of 14.29, which the table alone does not explain."""
    absent = [label for label in metrics.labels if metrics.per_class[label].support == 0]
    if not absent:
        return []
    return [
        "",
        f"{len(absent)} of the {len(metrics.labels)} classes have no gold utterance in the {split} split "
        f"({', '.join(md_cell(label) for label in absent)}): F1 0 each, and macro F1 still averages all {len(metrics.labels)}.",
    ]


def _notes(result: EvaluationResult) -> list[str]:
    label_set = result.data.get("label_set")
    # The gold's label set (--label-set) decides the classes scored; shown as the command took it.
    shown = label_set if isinstance(label_set, str) else ", ".join(map(str, label_set or ()))
    gold = f", gold read as label set {md_cell(shown)}" if label_set else ""
    notes = [
        f"data: {md_cell(result.data.get('dataset'))} (labels: {md_cell(result.data.get('labels', 'original'))}{gold}), "
        f"{result.split} split; all figures in percent"
    ]
    intervals = [m.weighted_f1_interval for system in result.systems.values() for m in system.by_dataset.values()]
    resamples = next((interval["resamples"] for interval in intervals if interval), None)
    if resamples:
        notes.append(
            "95% interval: where weighted F1 could lie on another draw of as many dialogues of this kind (a percentile "
            f"bootstrap over the split's dialogues, {resamples:,} resamples; utterances of one dialogue are not independent)"
        )
    if result.data.get("max_dialogues_per_dataset") is not None:
        notes.append(
            f"a fixed subset (seed 0) of at most {result.data['max_dialogues_per_dataset']} dialogues per dataset, not the whole split"
        )
    for name, system in result.systems.items():
        settings = system.settings
        if system.kind == "llm":
            notes.append(
                f"model: {md_cell(settings.get('model'))} (label set {md_cell(settings.get('label_set'))}), {settings.get('mode')} mode"
            )
            if settings.get("mode") == "score":
                notes.append("score mode: every label is scored and the most probable one taken, so no output is invalid by construction")
            elif system.paper_parsing:
                notes.append(
                    "**paper parsing**: generations that are not exactly a label were snapped to the closest label "
                    "(the paper's repair, for comparison only); the invalid rate is therefore 0 and the true invalid outputs are hidden"
                )
            else:
                notes.append(
                    "generate mode, strict parsing: a generation that is not exactly a label is invalid "
                    f"(column {md_cell(INVALID)}) and counts as an error"
                )
            if settings.get("unified"):
                notes.append(
                    "unified-label model, scored on each dataset's own classes: a unified label the dataset lacks "
                    f"counts as an error (column {md_cell(OUTSIDE)})"
                )
        elif "from" in settings:
            notes.append(f"{md_cell(SHORT_NAMES.get(name, name))}: read from {md_cell(settings['from'])}")
        trained_on = settings.get("trained_on", "train")
        if system.kind == "baseline" and trained_on != "train":
            # The train split holds scored dialogues (one file read as every split): said, not hidden.
            where = f"the {result.split} split itself" if trained_on == result.split else trained_on
            notes.append(f"{md_cell(SHORT_NAMES.get(name, name))}: trained on {md_cell(where)}, so its figure here is optimistic")
        if name == "minilm-logreg":
            notes.append(
                f"{SHORT_NAMES[name]}: {settings.get('features', '')}; trained on {md_cell(trained_on)}, "
                f"C chosen by {settings.get('selected_on', 'dev')} weighted F1 "
                f"from {settings.get('c_grid')}"
            )
            if settings.get("selected_on") == result.split:
                notes.append(f"{SHORT_NAMES[name]}: C was chosen on the {result.split} split itself, so its figure here is optimistic")
    return notes


def confusion_png(metrics: Metrics, title: str) -> bytes:
    """A confusion matrix (rows gold, columns predicted, counts annotated, shaded by row share), as PNG."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.array(metrics.confusion, dtype=np.int64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    rows, columns = len(metrics.labels), len(metrics.columns)
    figure = Figure(figsize=(2.0 + 0.8 * columns, 1.6 + 0.55 * rows))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for r in range(rows):
        for c in range(columns):
            axes.text(c, r, str(counts[r, c]), ha="center", va="center", fontsize=8, color="white" if shares[r, c] > 0.5 else "black")
    if columns > rows:
        axes.axvline(rows - 0.5, color="firebrick", linewidth=1.5)
    # parse_math off: matplotlib reads text between two ``$`` as TeX, so a label like ``$x`` +
    # ``y$`` would be drawn as math, and one like ``$\frac$`` fail the whole evaluation at the end.
    axes.set_xticks(range(columns), labels=[tick_label(c) for c in metrics.columns], rotation=45, ha="right", fontsize=8, parse_math=False)
    axes.set_yticks(range(rows), labels=[tick_label(c) for c in metrics.labels], fontsize=8, parse_math=False)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(title, fontsize=8, parse_math=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


_MAX_TICK = 40  # characters of a class name on a matrix axis; report.md has the whole name


def tick_label(label: str) -> str:
    """``label`` as an axis label of a picture: one line, and cut short with an ellipsis when
    long, since a label of a few hundred characters squeezed the matrix itself out of the figure."""
    shown = printable(label)
    return shown if len(shown) <= _MAX_TICK else shown[: _MAX_TICK - 1] + "…"


def _scores_table(scored: list[tuple[str, SystemResult, Metrics]], split: str) -> list[str]:
    """One dataset's scores, a row per system; generated labels of the model's unified space that
    the dataset lacks (scored as errors) get a column where any system made them."""
    outside = any(m.outside_rate for _, _, m in scored)
    intervals = any(m.weighted_f1_interval for _, _, m in scored)
    head = f"| system | weighted F1 ({split}) |"
    rule = "| --- | ---: |"
    if intervals:
        head, rule = head + " 95% interval, dialogues resampled |", rule + " :---: |"
    head, rule = head + f" macro F1 ({split}) | accuracy ({split}) | invalid rate ({split}) |", rule + " ---: | ---: | ---: |"
    if outside:
        head, rule = head + f" outside the dataset's classes ({split}) |", rule + " ---: |"
    rows = [
        f"| {md_cell(system_title(n, s))} | {m.weighted_f1:.2f} |"
        + (f" {interval_text(m)} |" if intervals else "")
        + f" {m.macro_f1:.2f} | {m.accuracy:.2f} | {m.invalid_rate:.2f} |"
        + (f" {m.outside_rate:.2f} |" if outside else "")
        for n, s, m in scored
    ]
    return [head, rule, *rows]


def interval_text(metrics: Metrics) -> str:
    """The weighted F1's bootstrap interval as ``30.84-40.75``; empty where none was computed."""
    interval = metrics.weighted_f1_interval
    return "" if not interval else f"{interval['low']:.2f}-{interval['high']:.2f}"


def summary_lines(result: EvaluationResult) -> list[str]:
    """One line per system and dataset, for the terminal."""
    lines = []
    for name, system in result.systems.items():
        for dataset, m in system.by_dataset.items():
            lines.append(
                f"{printable(SHORT_NAMES.get(name, name)):10} {printable(dataset)} {result.split}: "
                f"weighted F1 {m.weighted_f1:.2f}"
                + (f" (95% interval {interval_text(m)})" if m.weighted_f1_interval else "")
                + f"  macro F1 {m.macro_f1:.2f}  accuracy {m.accuracy:.2f}  invalid {m.invalid_rate:.2f}%"
                + (f"  outside the dataset's classes {m.outside_rate:.2f}%" if m.outside_rate else "")
                + ("  (paper parsing)" if system.paper_parsing else "")
            )
    return lines
