"""Evaluation folders and grids in the states users leave them in: folders written by older
versions (relative paths) read from elsewhere, degenerate scores, odd label and grid names,
baselines on tiny data (tiny models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructerc.errors import InputError
from instructerc.evaluation.results import EvaluationResult
from instructerc.labels.benchmarks import MELD
from test_evaluate import write_folder
from tiny import tiny_model_dir


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder holding the model at runs/m (named relatively, as users do)."""
    root = tmp_path_factory.mktemp("work")
    tiny_model_dir(root / "runs" / "m", MELD)
    return root


def _evaluate(run_cli, model: str | Path, data: str | Path):
    return run_cli(
        "evaluate", "--model", model, "--dataset", "jsonl", "--data", data, "--label-set", "meld", "--split", "test", "--no-progress"
    )


def _as_older_version_wrote_it(metrics: Path, data: str, model: str) -> bytes:
    """The metrics.json as versions before absolute paths wrote it: the input and model as typed."""
    recorded = json.loads(metrics.read_text(encoding="utf-8"))
    recorded["data"]["path"] = data
    recorded["systems"]["llm"]["settings"]["model"] = model
    metrics.write_text(json.dumps(recorded), encoding="utf-8")
    return metrics.read_bytes()


# -- relative paths recorded by older versions -----------------------------------------------------
def test_new_folders_record_the_model_absolute(run_cli, model_root: Path, tmp_path: Path, monkeypatch) -> None:
    write_folder(tmp_path / "d")
    monkeypatch.chdir(model_root)
    assert _evaluate(run_cli, "runs/m", tmp_path / "d").code == 0
    metrics = json.loads((model_root / "runs" / "m" / "eval-jsonl-d-test" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["systems"]["llm"]["settings"]["model"] == str(model_root / "runs" / "m")


def test_an_older_default_folder_read_from_elsewhere_names_the_input_it_scored(run_cli, model_root: Path, monkeypatch) -> None:
    # Written from model_root as 'runs/m' and 'same'. From runs/, the same input named '../same'
    # was refused as another input ('same' read from runs/), and another input of the spelling
    # 'same' there replaced the results without a word.
    write_folder(model_root / "same")
    write_folder(model_root / "runs" / "same", dataset="other")
    monkeypatch.chdir(model_root)
    assert _evaluate(run_cli, "runs/m", "same").code == 0
    metrics = model_root / "runs" / "m" / "eval-jsonl-same-test" / "metrics.json"
    _as_older_version_wrote_it(metrics, "same", "runs/m")

    monkeypatch.chdir(model_root / "runs")
    assert _evaluate(run_cli, "m", "../same").code == 0
    before = _as_older_version_wrote_it(metrics, "same", "runs/m")
    other = _evaluate(run_cli, "m", "same")

    assert other.code == 2 and "holds the evaluation of another input" in other.err
    assert str(model_root / "same") in other.err
    assert metrics.read_bytes() == before


def test_an_older_folder_reads_back_with_absolute_paths_where_they_can_be_told(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "w" / "runs" / "m" / "eval-jsonl-x-test"
    _older_metrics(folder, "data/x.jsonl", "runs/m")
    monkeypatch.chdir(tmp_path)  # anywhere else

    result = EvaluationResult.load(folder)

    assert result.data["path"] == str(tmp_path / "w" / "data" / "x.jsonl")
    assert result.systems["llm"].settings["model"] == str(tmp_path / "w" / "runs" / "m")
    assert result.input_path(folder) == str(tmp_path / "w" / "data" / "x.jsonl")


@pytest.mark.parametrize(
    ("folder", "model"),
    [
        ("results/eval-x", "runs/m"),  # an --out of its own: where the run started is not known
        ("runs/m/eval-x", "/abs/runs/m"),  # the model named absolutely: nor is it here
        ("elsewhere/m/eval-x", "../m"),
    ],
)
def test_an_older_folder_whose_start_cannot_be_told_is_refused_naming_folder_and_field(tmp_path: Path, folder: str, model: str) -> None:
    _older_metrics(tmp_path / folder, "x.jsonl", model)

    result = EvaluationResult.load(tmp_path / folder)  # still readable: reports and --runs need no path
    assert result.data["path"] == "x.jsonl"
    with pytest.raises(InputError) as caught:
        result.input_path(tmp_path / folder)
    assert caught.value.field == "data.path" and caught.value.path == str(tmp_path / folder / "metrics.json")
    assert "'x.jsonl'" in caught.value.message


def _older_metrics(folder: Path, data: str, model: str) -> None:
    from instructerc.evaluation.metrics import compute_metrics
    from instructerc.evaluation.results import SystemResult

    metrics = compute_metrics(["joy", "anger"], ["joy", "joy"], MELD)
    llm = SystemResult("llm", {"meld": metrics}, {"model": model, "mode": "score", "paper_parsing": False})
    folder.mkdir(parents=True)
    EvaluationResult("test", {"dataset": "jsonl", "labels": "original", "path": data}, {"llm": llm}).save(folder)


# -- grids: run names in any script, relative paths of the recipe ---------------------------------
def _grid(root: Path, axes: dict, base: str = "base.yaml") -> Path:
    import yaml

    (root / "grid.yaml").write_text(
        yaml.safe_dump({"name": "g", "base": base, "output_dir": "runs", "axes": axes}, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    return root / "grid.yaml"


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import write_tiny_base

    root = tmp_path_factory.mktemp("grid")
    write_tiny_base(root, {"train": 6, "dev": 2, "test": 2})
    return root


def test_axis_values_in_another_script_give_runs_of_their_own_names(grid_root: Path) -> None:
    # Every letter outside A-Z became '-', so '高' and '低' both gave the name part 'x' and the
    # grid was refused as two values of one name.
    from instructerc.experiments.grid import expand, load_experiment

    config, _ = load_experiment(_grid(grid_root, {"学习率": {"高": {"optim.lr": 0.02}, "低": {"optim.lr": 0.001}}}))

    assert [spec.name for spec in expand(config)] == ["学习率=高__seed=42", "学习率=低__seed=42"]


def test_ascii_run_names_stay_what_earlier_versions_made_them(grid_root: Path) -> None:
    from instructerc.experiments.grid import expand, load_experiment

    axes = {"a_b": {"1/2": {"optim.lr": 0.02}, "x|y z": {"optim.lr": 0.001}, "under_score": {"optim.lr": 0.003}}}
    config, _ = load_experiment(_grid(grid_root, axes))

    assert [spec.name for spec in expand(config)] == ["a-b=1-2__seed=42", "a-b=x-y-z__seed=42", "a-b=under-score__seed=42"]


def _relative_base(root: Path) -> str:
    """The tiny base recipe with its data and backbone named relative to ``root`` (as the shipped
    recipes name ../shared/data), to be read from the working directory."""
    import yaml

    recipe = yaml.safe_load((root / "base.yaml").read_text(encoding="utf-8"))
    recipe["data"]["path"], recipe["backbone"]["model"] = "data", "backbone"
    (root / "relative.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return "relative.yaml"


def test_a_run_made_from_another_working_directory_is_not_reused_for_other_data(grid_root: Path, run_cli, monkeypatch) -> None:
    # The run's folder is named by the recipe as written ('data'): started from sub/, whose
    # 'data' is another data set, the grid found the run done and reported its scores as this data's.
    import shutil

    grid = _grid(grid_root, {"lr": {"a": {"optim.lr": 0.02}}}, base=_relative_base(grid_root))
    monkeypatch.chdir(grid_root)
    assert run_cli("experiment", grid, "--no-progress").code == 0
    spec = json.loads(next((grid_root / "runs").glob("run-*/spec.json")).read_text(encoding="utf-8"))
    assert spec["inputs"] == {"data.path": "../../data", "backbone.model": "../../backbone"}  # from the run's folder

    other = grid_root / "sub"
    shutil.copytree(grid_root / "data", other / "data")
    shutil.copytree(grid_root / "backbone", other / "backbone")
    monkeypatch.chdir(other)
    for action in ("--list", "--report-only"):
        refused = run_cli("experiment", grid, action)
        assert refused.code == 2 and "field 'inputs." in refused.err and "spec.json" in refused.err
        assert str(grid_root / "data") in refused.err and str(other / "data") in refused.err

    monkeypatch.chdir(grid_root)  # where it was made: the run is done and reused
    listed = run_cli("experiment", grid, "--list")
    assert listed.code == 0 and listed.out.startswith("done")


# -- report.md ----------------------------------------------------------------------------------------
def test_the_notes_name_the_invalid_and_outside_columns_as_text_not_as_html_tags() -> None:
    # '(column <invalid>)' is an HTML tag to a Markdown viewer, which drops it: the note read '(column )'.
    from instructerc.evaluation.metrics import compute_metrics
    from instructerc.evaluation.report import render_report
    from instructerc.evaluation.results import SystemResult

    metrics = compute_metrics(["joy", "anger"], [None, "joy"], MELD)
    settings = {"model": "/m", "mode": "generate", "paper_parsing": False, "label_set": "uime", "unified": True}
    report = render_report(EvaluationResult("test", {"dataset": "meld"}, {"llm": SystemResult("llm", {"meld": metrics}, settings)}))

    assert "(column \\<invalid\\>)" in report and "(column \\<outside\\>)" in report
    assert "(column <" not in report


def test_a_grid_moved_with_its_data_finds_its_runs_done(grid_root: Path, run_cli, monkeypatch, tmp_path: Path) -> None:
    import shutil

    grid = _grid(grid_root, {"lr": {"b": {"optim.lr": 0.03}}}, base=_relative_base(grid_root))
    monkeypatch.chdir(grid_root)
    assert run_cli("experiment", grid, "--no-progress").code == 0
    moved = tmp_path / "moved"
    shutil.copytree(grid_root, moved, ignore=shutil.ignore_patterns("sub"))

    monkeypatch.chdir(moved)
    listed = run_cli("experiment", moved / "grid.yaml", "--list")

    assert listed.code == 0 and listed.out.startswith("done"), listed.err


def test_evaluate_refuses_an_older_default_folder_whose_input_cannot_be_told_instead_of_resolving_it_from_here(
    run_cli, model_root: Path, monkeypatch
) -> None:
    # The model named absolutely: the folder it was started from cannot be told, so the recorded
    # 'same' could be any folder of that name; resolved from here it named ../same's neighbour.
    write_folder(model_root / "same")
    monkeypatch.chdir(model_root)
    model = str(model_root / "runs" / "m")
    assert _evaluate(run_cli, model, "same").code == 0
    metrics = model_root / "runs" / "m" / "eval-jsonl-same-test" / "metrics.json"
    kept = _as_older_version_wrote_it(metrics, "same", model)
    result = _evaluate(run_cli, model, "same")
    assert result.code == 2  # the --out folder chosen for the user is refused, as for another input
    assert "metrics.json: field 'data.path'" in result.err and "relative to the folder" in result.err
    assert metrics.read_bytes() == kept
