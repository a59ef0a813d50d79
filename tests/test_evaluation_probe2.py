"""``evaluate``, ``baseline`` and ``experiment`` on inputs a user could send: dataset and label
names from the data, damaged result files, grids whose runs cannot be told apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from instructerc.errors import InputError
from instructerc.evaluation.aggregate import aggregate, render_aggregate
from instructerc.evaluation.metrics import compute_metrics
from instructerc.evaluation.report import render_report, write_outputs
from instructerc.evaluation.results import EvaluationResult, SystemResult
from instructerc.experiments.grid import ExperimentConfig, expand, load_experiment
from instructerc.experiments.report import markdown_table
from instructerc.experiments.runner import RESULT_FILE, RunResult, Scoring, load_result, run_directory, run_one
from instructerc.labels.benchmarks import MELD
from tiny import tiny_backbone, tiny_model_dir, write_split

ODD_LABELS = ("a|b", "new\nline", 'q"uote', "x,y", "ünï")


def result_on(dataset: str, labels: tuple[str, ...], system: str = "majority", hits: int = 1) -> EvaluationResult:
    gold = [labels[i % len(labels)] for i in range(4)]
    predicted = gold[:hits] + [labels[0]] * (len(gold) - hits)
    scored = SystemResult("baseline", {dataset: compute_metrics(gold, predicted, labels)}, {"label": labels[0]})
    return EvaluationResult("test", {"dataset": "jsonl", "labels": "original"}, {system: scored})


def table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def cells(row: str) -> int:
    """The cells of a Markdown table row: ``|`` not escaped by a backslash separate them."""
    return len(re.findall(r"(?<!\\)\|", row)) - 1


# -- evaluate / baseline reports ------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["../../escape", "sub/dir", "line\nbreak", "x" * 300])
def test_a_dataset_named_like_a_path_keeps_its_confusion_matrix_inside_the_output_folder(tmp_path: Path, dataset: str) -> None:
    out = tmp_path / "deep" / "out"
    written = write_outputs(result_on(dataset, MELD.labels), out)

    everything = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(everything) == sorted(written)
    assert all(p.parent == out for p in written), written
    pictures = [p.name for p in written if p.suffix == ".png"]
    assert len(pictures) == 1 and not re.search(r"\s", pictures[0]), pictures  # a Markdown link stops at a line break
    assert f"[{pictures[0]}](./{pictures[0]})" in (out / "report.md").read_text(encoding="utf-8")


def test_two_datasets_whose_names_differ_only_in_unsafe_characters_get_two_matrices(tmp_path: Path) -> None:
    first, second = result_on("a|b", MELD.labels), result_on("a/b", MELD.labels)
    both = EvaluationResult(
        "test",
        first.data,
        {"majority": SystemResult("baseline", {**first.systems["majority"].by_dataset, **second.systems["majority"].by_dataset})},
    )

    written = write_outputs(both, tmp_path)

    pictures = [p for p in written if p.suffix == ".png"]
    assert len(pictures) == 2 and all(p.parent == tmp_path for p in pictures), pictures


def test_labels_and_dataset_names_with_pipes_and_line_breaks_keep_the_report_tables_whole() -> None:
    report = render_report(result_on("my|data\nset", ODD_LABELS))

    rows = table_rows(report)
    assert rows and all(cells(row) == cells(rows[0]) for row in rows[:3]), rows
    per_class = rows[rows.index(next(r for r in rows if r.startswith("| class"))) :]
    assert len(per_class) == 2 + len(ODD_LABELS) and {cells(r) for r in per_class} == {3}, per_class
    assert "| a\\|b |" in report and "| new\\nline |" in report
    assert all(line.startswith("## my\\|data\\nset") for line in report.splitlines() if line.startswith("## "))


def test_an_aggregate_of_odd_dataset_names_keeps_its_table_whole() -> None:
    runs = [result_on("my|data\nset", ODD_LABELS, hits=h) for h in (1, 2)]
    markdown = render_aggregate(aggregate(runs, ["a", "b"]))

    rows = table_rows(markdown)
    assert len(rows) == 3 and {cells(r) for r in rows} == {5}, rows
    assert "## my\\|data\\nset" in markdown


# -- evaluate --runs --------------------------------------------------------------------------------
def test_runs_that_share_no_system_are_refused_not_aggregated_into_nothing(run_cli, tmp_path: Path) -> None:
    result_on("d", MELD.labels, "majority").save(tmp_path / "a")
    result_on("d", MELD.labels, "minilm-logreg").save(tmp_path / "b")

    result = run_cli("evaluate", "--runs", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "agg")

    assert result.code == 2 and "Traceback" not in result.err, result
    assert "argument --runs:" in result.err and "no system was scored in every run" in result.err
    assert not (tmp_path / "agg").exists()


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("labels", 5, "labels"),
        ("labels", [["joy"]], "labels"),
        ("count", "4", "count"),
        ("confusion", [[1]], "confusion"),
        ("columns", ["joy"], "columns"),
    ],
)
def test_a_metrics_file_with_a_field_of_the_wrong_type_names_the_field(run_cli, tmp_path: Path, key: str, value, field: str) -> None:
    result_on("d", MELD.labels, hits=1).save(tmp_path / "a")
    damaged = result_on("d", MELD.labels, hits=2).save(tmp_path / "b")
    data = json.loads(damaged.read_text(encoding="utf-8"))
    data["systems"]["majority"]["by_dataset"]["d"][key] = value
    damaged.write_text(json.dumps(data), encoding="utf-8")

    result = run_cli("evaluate", "--runs", tmp_path / "a", tmp_path / "b")

    assert result.code == 2 and "Traceback" not in result.err, result
    assert f"{damaged}: field 'systems.majority.by_dataset.d.{field}'" in result.err


# -- metrics ----------------------------------------------------------------------------------------
def test_a_class_spelled_like_the_invalid_column_does_not_count_invalid_outputs_as_right() -> None:
    metrics = compute_metrics(["<invalid>", "joy"], [None, "joy"], ["<invalid>", "joy"])

    assert metrics.accuracy == 50.0 and metrics.invalid_rate == 50.0
    assert metrics.per_class["<invalid>"].recall == 0.0
    assert metrics.columns[:2] == ["<invalid>", "joy"] and len(metrics.columns) == 3


# -- evaluate --with-baselines ----------------------------------------------------------------------
def test_baselines_in_another_label_set_than_the_model_are_refused_before_anything_runs(run_cli, tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "model", MELD)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev", "test"):
        write_split(data / f"{split}.jsonl", 3, seed=len(split))  # joy, neutral, sadness: not MELD's seven

    result = run_cli(
        "evaluate", "--model", model, "--dataset", "jsonl", "--data", data, "--split", "test", "--with-baselines", "--out", tmp_path / "out"
    )

    assert result.code == 2 and "Traceback" not in result.err, result
    assert "argument --with-baselines:" in result.err and "--label-set" in result.err
    assert not (tmp_path / "out").exists()


# -- experiment grids -------------------------------------------------------------------------------
def test_a_repeated_seed_is_refused_rather_than_counted_twice() -> None:
    with pytest.raises(InputError) as caught:
        ExperimentConfig("g", "base.yaml", "runs", axes={"a": {"x": {}}}, seeds=[1, 2, 1])
    assert caught.value.field == "seeds" and "[1]" in caught.value.message


@pytest.mark.parametrize(
    "axes",
    [{"hist": {"a|b": {}, "a/b": {"template.history": False}}}, {"a b": {"x": {}}, "a-b": {"y": {}}}],
    ids=["values", "axes"],
)
def test_axis_names_or_values_that_give_two_runs_one_name_are_refused(axes: dict) -> None:
    with pytest.raises(InputError) as caught:
        ExperimentConfig("g", "base.yaml", "runs", axes=axes, seeds=[1])
    assert caught.value.field.startswith("axes") and "rename one" in caught.value.message


def test_odd_axis_values_keep_the_grid_table_whole() -> None:
    config = ExperimentConfig("g", "base.yaml", "runs", axes={"hist": {"a|b": {}, "new\nline": {}}}, seeds=[1])
    row = {"test_weighted_f1": 1.0, "test_macro_f1": 1.0, "test_accuracy": 1.0, "dev_weighted_f1": 1.0, "scored_on": "d|x", "seed": 1}
    table = markdown_table(config, [{**row, "hist": "a|b"}, {**row, "hist": "new\nline"}], "test")

    rows = table_rows(table)
    assert len(rows) == 4 and {cells(r) for r in rows} == {7}, rows


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid")
    data = root / "data"
    data.mkdir()
    for split, seed in (("train", 1), ("dev", 2), ("test", 3)):
        write_split(data / f"{split}.jsonl", 4, seed=seed)
    backbone = tiny_backbone(root / "backbone")
    recipe = {
        "data": {"dataset": "jsonl", "path": str(data), "label_set": "meld"},
        "backbone": {"model": str(backbone)},
        "template": {"name": "dialogue-prefix", "demonstration": False},
        "finetune": {"method": "lora", "lora": {"r": 2, "alpha": 4, "target_modules": ["q_proj"]}},
    }
    (root / "base.yaml").write_text(yaml.safe_dump(recipe))
    (root / "grid.yaml").write_text(yaml.safe_dump({"name": "g", "base": "base.yaml", "output_dir": "runs", "seeds": [1]}))
    return root / "grid.yaml"


def _record(scores: object, dev_by_dataset: object) -> dict:
    return {"name": "seed=1", "values": {}, "seed": 1, "dev": {"by_dataset": dev_by_dataset}, "test": scores, "evaluate_split": "test"}


GOOD = {"data": {"weighted_f1": 1.0, "macro_f1": 1.0, "accuracy": 1.0}}


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (_record({"data": {}}, GOOD), "test.data.weighted_f1"),
        (_record([], GOOD), "test"),
        (_record({"data": {**GOOD["data"], "accuracy": "x"}}, GOOD), "test.data.accuracy"),
        (_record(GOOD, []), "dev.by_dataset"),
        (_record(GOOD, {"data": "x"}), "dev.by_dataset.data.weighted_f1"),
        (
            {**_record(GOOD, GOOD), "other_scorings": [{"evaluate_split": "dev", "dev_eval": {"data": None}}]},
            "other_scorings[0].dev_eval.data.weighted_f1",
        ),
    ],
    ids=["metrics-missing", "scores-list", "metric-string", "dev-list", "dev-metrics-string", "other-scoring"],
)
def test_a_damaged_run_result_names_its_file_and_field(grid: Path, run_cli, record: dict, field: str) -> None:
    config, root = load_experiment(grid)
    spec = expand(config)[0]
    directory = run_directory(config, root, spec)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RESULT_FILE).write_text(json.dumps(record), encoding="utf-8")

    for flag in ("--report-only", "--list"):
        result = run_cli("experiment", grid, flag)
        assert result.code == 2 and "Traceback" not in result.err, result
        assert f"{directory / RESULT_FILE}: field '{field}'" in result.err, result.err
    (directory / RESULT_FILE).write_text(json.dumps(_record(GOOD, GOOD)), encoding="utf-8")
    assert load_result(directory / RESULT_FILE, spec, Scoring.of(config)) == RunResult(spec, {"by_dataset": GOOD}, GOOD)


@pytest.mark.parametrize("content", ["{", None], ids=["damaged", "missing"])
def test_damaged_dev_scores_of_a_trained_run_are_named_not_a_traceback(grid: Path, content: str | None) -> None:
    from instructerc.modeling.model_dir import DEV_METRICS, MANIFEST

    config, root = load_experiment(grid)
    spec = expand(config)[0]
    model = run_directory(config, root, spec) / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / MANIFEST).write_text("{}", encoding="utf-8")  # a finished model: training is skipped
    (model / DEV_METRICS).unlink(missing_ok=True)
    if content is not None:
        (model / DEV_METRICS).write_text(content, encoding="utf-8")
    (model.parent / RESULT_FILE).unlink(missing_ok=True)

    with pytest.raises(InputError) as caught:
        run_one(config, root, spec, progress=False)
    assert caught.value.path == str(model / DEV_METRICS)


def test_an_aggregate_out_that_is_a_file_is_an_error_naming_it(run_cli, tmp_path: Path) -> None:
    first = result_on("d", MELD.labels, hits=1).save(tmp_path / "a")
    result_on("d", MELD.labels, hits=2).save(tmp_path / "b")

    result = run_cli("evaluate", "--runs", tmp_path / "a", tmp_path / "b", "--out", first)

    assert result.code == 2 and "Traceback" not in result.err, result
    assert f"{first}: field 'out': is a file; --out names the folder to write into" in result.err


def test_a_grid_report_folder_that_is_a_file_is_an_error_naming_it(grid: Path, run_cli) -> None:
    result = run_cli("experiment", grid, "--report-only", "--results", grid)

    assert result.code == 2 and "Traceback" not in result.err, result
    assert f"{grid}: field 'results': is not a folder" in result.err


@pytest.mark.parametrize(
    "flags",
    [
        ["--mode", "generate"],
        ["--data", "somewhere"],
        ["--labels", "uime"],
        ["--label-set", "meld"],
        ["--with-baselines"],
        ["--dtype", "float32"],
    ],
)
def test_runs_refuses_the_options_of_scoring_a_model(run_cli, tmp_path, flags):
    """They were silently ignored: --runs reads evaluations that are already scored."""
    result = run_cli("evaluate", "--runs", tmp_path / "a", tmp_path / "b", *flags)
    assert result.code == 2 and f"it takes no {flags[0]}" in result.err
