"""Reports and tables of evaluate, baseline and experiment with names from the user's data and
grid: Markdown that shows them as written, CSV cells a spreadsheet does not run as formulas,
pictures that draw them, and metrics equal to scikit-learn's."""

from __future__ import annotations

import csv
import io
import random
import re
import warnings
from pathlib import Path

import pytest

from instructerc.evaluation.aggregate import aggregate, render_aggregate
from instructerc.evaluation.metrics import compute_metrics
from instructerc.evaluation.report import md_cell, render_report, tick_label, write_outputs
from instructerc.evaluation.results import EvaluationResult, SystemResult
from instructerc.experiments.grid import ExperimentConfig, PlotConfig, expand
from instructerc.experiments.report import csv_cell, write_report
from instructerc.experiments.runner import RunResult
from instructerc.labels.benchmarks import MELD

MARKUP_LABELS = ["*joy*", "<b>anger</b>", "`code", "[x](http://e.com)", "$a$", "~~s~~", "_sad_", "a_b_c", "&lt;", "back\\slash"]


def result_on(dataset: str, labels: list[str], data_name: str = "jsonl", model: str = "/models/tiny") -> EvaluationResult:
    gold = labels * 2
    metrics = compute_metrics(gold, labels[::-1] * 2, labels)
    system = SystemResult("llm", {dataset: metrics}, {"mode": "score", "model": model, "label_set": "custom"})
    return EvaluationResult("test", {"dataset": data_name, "labels": "original"}, {"llm": system})


def unescaped(markdown: str, character: str) -> list[int]:
    """Where ``character`` stands in ``markdown`` without a backslash escaping it."""
    return [m.start() for m in re.finditer(rf"(?<!\\)(?:\\\\)*{re.escape(character)}", markdown)]


def rendered(cell: str) -> str:
    """What CommonMark shows for an escaped cell: a backslash before punctuation is dropped."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", cell)


# -- Markdown -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [*MARKUP_LABELS, "a|b", "plain", "MiniLM+LR", "jsonl:meld"])
def test_a_markdown_cell_shows_the_text_as_written(text: str) -> None:
    cell = md_cell(text)

    assert rendered(cell) == text
    for special in "*<>`[]$~&|":
        assert not unescaped(cell, special), (text, cell)


@pytest.mark.parametrize(
    ("text", "cell"), [("_sad_", "\\_sad\\_"), ("__x__", "\\_\\_x\\_\\_"), ("v=a__seed=1", "v=a__seed=1"), ("a_b", "a_b")]
)
def test_underscores_are_escaped_only_where_they_could_mark_emphasis(text: str, cell: str) -> None:
    # Between two letters or digits an underscore never marks emphasis: run names stay readable.
    assert md_cell(text) == cell


def test_a_label_with_markdown_markup_is_shown_as_written_in_the_per_class_table() -> None:
    report = render_report(result_on("mine", MARKUP_LABELS))

    rows = [line for line in report.splitlines() if line.startswith("| ")]
    per_class = rows[rows.index(next(r for r in rows if r.startswith("| class"))) + 2 :]
    assert [rendered(row.split(" | ")[0][2:]) for row in per_class] == MARKUP_LABELS
    assert "<b>" not in report and "*joy*" not in report


@pytest.mark.parametrize("name", ["mine\n# injected", "a|b", "<script>x</script>"])
def test_the_data_name_in_the_report_heading_and_notes_stays_on_its_line(name: str) -> None:
    report = render_report(result_on("meld", list(MELD.labels), data_name=name, model=f"/models/{name}"))

    headings = [line for line in report.splitlines() if line.startswith("# ")]
    assert headings == [f"# {md_cell(name)}, test split"]
    assert "<script>" not in report and "\n# injected" not in report
    assert f"model: {md_cell('/models/' + name)} " in report


def test_an_aggregate_names_its_runs_and_data_without_breaking_lines() -> None:
    runs = [result_on("meld", list(MELD.labels), data_name="d\n# x") for _ in range(2)]

    markdown = render_aggregate(aggregate(runs, ["run\none", "run*two*"]))

    assert markdown.splitlines()[0].startswith("# d\\n# x, test split")
    assert "- run: run\\none" in markdown and "- run: run\\*two\\*" in markdown


# -- pictures -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("label", ["$\\frac$", "$x^$", "cost $5 and $"])
def test_a_label_matplotlib_would_read_as_tex_does_not_fail_the_evaluation(tmp_path: Path, label: str) -> None:
    written = write_outputs(result_on("mine", ["joy", label]), tmp_path)

    pictures = [p for p in written if p.suffix == ".png"]
    assert len(pictures) == 1 and pictures[0].read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "report.md").is_file()


def grid(name: str, axes: dict, plot: PlotConfig | None) -> ExperimentConfig:
    return ExperimentConfig(name=name, base="base.yaml", output_dir="runs", axes=axes, seeds=[1, 2], plot=plot)


def results_of(config: ExperimentConfig, dataset: str = "meld") -> list[RunResult]:
    scores = {"weighted_f1": 40.0, "macro_f1": 20.0, "accuracy": 45.0, "count": 10}
    return [RunResult(s, {"by_dataset": {dataset: {"weighted_f1": 50.0}}}, {dataset: scores}) for s in expand(config)]


def test_an_experiment_plot_of_tex_like_names_is_drawn(tmp_path: Path) -> None:
    config = grid("$x^$", {"fraction": {"1/2": {}, "1": {}}, "$\\x$": {"$\\y$": {}}}, PlotConfig(x="fraction"))

    written = write_report(config, results_of(config, dataset="$\\frac$"), tmp_path)

    assert sorted(p.suffix for p in written) == [".csv", ".md", ".png"]
    assert (tmp_path / "$x^$.md").read_text(encoding="utf-8").startswith("# \\$x^\\$\n")


def test_an_experiment_named_with_a_line_break_keeps_its_heading_on_one_line(tmp_path: Path) -> None:
    config = grid("x\n| a | b |", {"fraction": {"1": {}}}, None)

    write_report(config, results_of(config), tmp_path)

    text = (tmp_path / "x\n| a | b |.md").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# x\\n\\| a \\| b \\|"


# -- CSV ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ['=HYPERLINK("http://e")', "+cmd", "-2+3", "@SUM(A1)", "\tx", "\r=x", "-inf", "=1"])
def test_a_csv_cell_a_spreadsheet_would_run_as_a_formula_is_quoted(cell: str) -> None:
    assert csv_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["-1", "+0.5", "-1e-3", "1/2", "meld", "a=b", 3.5, -2, "", "'=x"])
def test_numbers_and_plain_text_stay_as_they_are(cell: object) -> None:
    assert csv_cell(cell) == cell


def test_grid_names_and_values_that_read_as_formulas_are_quoted_in_the_csv(tmp_path: Path) -> None:
    axes = {"=axis": {"=1+1": {}, "@x": {}}, "lr": {"-1": {}}, "+run": {"a": {}}}
    config = grid("formulas", axes, None)

    write_report(config, results_of(config, dataset="-meld"), tmp_path)

    table = list(csv.reader(io.StringIO((tmp_path / "formulas.csv").read_text(encoding="utf-8"))))
    header, rows = table[0], table[1:]
    assert header[:4] == ["run", "'=axis", "lr", "'+run"]
    assert len(rows) == 4
    for row in rows:
        cells = dict(zip(header, row))
        assert cells["'=axis"] in ("'=1+1", "'@x") and cells["lr"] == "-1" and cells["scored_on"] == "'-meld"
        assert not any(value.startswith(("=", "+", "@")) for value in row), row
        assert float(cells["test_weighted_f1"]) == 40.0


# -- metrics against scikit-learn -----------------------------------------------------------------------
def test_every_metric_equals_scikit_learn_on_random_small_cases() -> None:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    draw = random.Random(0)
    for _ in range(300):
        labels = draw.sample(["a", "b", "c", "d"], draw.randint(1, 4))
        present = draw.sample(labels, draw.randint(1, len(labels)))  # some classes never in gold
        gold = [draw.choice(present) for _ in range(draw.randint(1, 7))]
        predicted = [draw.choice([*labels, None, "other"]) for _ in gold]
        shown = ["<invalid>" if p is None else p for p in predicted]

        metrics = compute_metrics(gold, predicted, labels)

        assert metrics.weighted_f1 == pytest.approx(100 * f1_score(gold, shown, labels=labels, average="weighted", zero_division=0))
        assert metrics.macro_f1 == pytest.approx(100 * f1_score(gold, shown, labels=labels, average="macro", zero_division=0))
        assert metrics.accuracy == pytest.approx(100 * accuracy_score(gold, shown))
        precision, recall, f1, support = precision_recall_fscore_support(gold, shown, labels=labels, zero_division=0)
        for k, label in enumerate(labels):
            scores = metrics.per_class[label]
            assert (scores.precision, scores.recall, scores.f1) == pytest.approx((100 * precision[k], 100 * recall[k], 100 * f1[k]))
            assert scores.support == support[k]


def test_a_split_without_some_classes_says_that_macro_f1_still_averages_them() -> None:
    # A perfect prediction of a split holding one class of seven: macro F1 14.29, as scikit-learn
    # gives over the label set, and the report says why.
    metrics = compute_metrics(["joy", "joy"], ["joy", "joy"], MELD.labels)
    system = SystemResult("baseline", {"meld": metrics}, {})
    report = render_report(EvaluationResult("test", {"dataset": "meld"}, {"majority": system}))

    assert metrics.macro_f1 == pytest.approx(100 / 7) and metrics.weighted_f1 == 100.0 and metrics.accuracy == 100.0
    assert "6 of the 7 classes have no gold utterance in the test split" in report
    assert "macro F1 still averages all 7" in report


def test_a_split_holding_every_class_has_no_such_note() -> None:
    labels = list(MELD.labels)
    report = render_report(result_on("meld", labels))

    assert "no gold utterance" not in report


def test_a_very_long_label_is_cut_short_on_the_matrix_axes_only(tmp_path: Path) -> None:
    long = "very long label " * 40
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = write_outputs(result_on("mine", ["joy", long, "a\nb"]), tmp_path)

    assert not [w for w in caught if "layout" in str(w.message)]  # the matrix was squeezed out of the figure

    assert tick_label(long) == long[:39] + "…" and tick_label("a\nb") == "a\\nb" and tick_label("joy") == "joy"
    assert any(p.suffix == ".png" for p in written)
    assert md_cell(long) in (tmp_path / "report.md").read_text(encoding="utf-8")
