"""The command line given what a user could type: a baseline run aimed at a model's evaluation
(and the other way round), a ``--set`` that makes another field of the recipe wrong, mistyped
commands and choices, ``-`` for an output folder or an input file, a pipe as a recipe, and a
full disk under an output file."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from instructerc.cli.options import output_error
from instructerc.errors import InputError
from instructerc.evaluation import baselines
from instructerc.evaluation.results import EvaluationResult, SystemResult
from instructerc.labels.benchmarks import MELD
from test_baseline_options import write_folder
from tiny import tiny_model_dir


def one_line(result, code: int = 2) -> str:
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    assert lines[0].startswith("instructerc: error: "), lines[0]
    return lines[0]


def files_of(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def never_trained(*args, **kwargs):
    raise AssertionError("the baselines were trained before the output folder was checked")


def data_options(data: Path) -> tuple[str | Path, ...]:
    return ("--dataset", "jsonl", "--data", data, "--label-set", "meld", "--split", "test", "--no-progress")


def saved_result(folder: Path, *kinds: str) -> Path:
    """A metrics.json of systems of ``kinds`` (``llm``, ``baseline``), as evaluate and baseline write it."""
    names = {"llm": "llm", "baseline": "majority"}
    systems = {names[kind]: SystemResult(kind, {}, {"model": "runs/a/model"} if kind == "llm" else {}) for kind in kinds}
    folder.mkdir(parents=True, exist_ok=True)
    EvaluationResult("test", {"dataset": "jsonl"}, systems).save(folder)
    return folder


# -- baseline --out onto a model's evaluation ----------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny-meld", MELD)


def test_baselines_aimed_at_a_model_evaluation_are_refused_before_training(
    run_cli, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The baselines' metrics.json and report.md replaced the model's, and its predictions.jsonl was removed.
    data, out = write_folder(tmp_path / "data"), tmp_path / "eval"
    assert run_cli("evaluate", "--model", model, *data_options(data), "--out", out).code == 0
    before = files_of(out)
    assert {"metrics.json", "predictions.jsonl", "report.md"} <= set(before)
    monkeypatch.setattr(baselines, "run_baselines", never_trained)

    line = one_line(run_cli("baseline", *data_options(data), "--only", "majority", "--out", out))

    assert str(out) in line and f"holds the evaluation of {model}" in line and "instructerc evaluate --baselines DIR" in line
    assert files_of(out) == before


def test_a_folder_holding_a_models_predictions_is_refused_too(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `predict --output results/predictions.jsonl`: writing baselines into results/ deleted it.
    data, out = write_folder(tmp_path / "data"), tmp_path / "results"
    out.mkdir()
    (out / "predictions.jsonl").write_text('{"id": "d1"}\n', encoding="utf-8")
    monkeypatch.setattr(baselines, "run_baselines", never_trained)

    line = one_line(run_cli("baseline", *data_options(data), "--only", "majority", "--out", out))

    assert "predictions.jsonl" in line and "instructerc evaluate --baselines DIR" in line
    assert (out / "predictions.jsonl").read_text(encoding="utf-8") == '{"id": "d1"}\n'


def test_a_baseline_run_is_written_again_over_its_own_folder(run_cli, tmp_path: Path) -> None:
    data, out = write_folder(tmp_path / "data"), tmp_path / "baselines"
    assert run_cli("baseline", *data_options(data), "--only", "majority", "--out", out).code == 0
    again = run_cli("baseline", *data_options(data), "--only", "majority", "--out", out)
    assert again.code == 0, again.err
    assert list(json.loads((out / "metrics.json").read_text(encoding="utf-8"))["systems"]) == ["majority"]


def test_an_evaluation_aimed_at_a_baseline_run_is_refused_unless_it_keeps_them(run_cli, model: Path, tmp_path: Path) -> None:
    # The model's metrics.json replaced the baselines', and their confusion matrices were removed.
    data, out = write_folder(tmp_path / "data"), tmp_path / "baselines"
    assert run_cli("baseline", *data_options(data), "--only", "majority", "--out", out).code == 0
    before = files_of(out)

    line = one_line(run_cli("evaluate", "--model", model, *data_options(data), "--out", out))

    assert "holds the baselines of 'instructerc baseline'" in line and f"--baselines {out}" in line
    assert files_of(out) == before
    kept = run_cli("evaluate", "--model", model, *data_options(data), "--out", out, "--baselines", out / "metrics.json")
    assert kept.code == 0, kept.err
    assert list(json.loads((out / "metrics.json").read_text(encoding="utf-8"))["systems"]) == ["llm", "majority"]


def test_the_folder_checks_tell_the_kinds_of_result_apart(tmp_path: Path) -> None:
    from instructerc.cli.eval_commands import refuse_baseline_run, refuse_model_evaluation

    llm, both, only = (
        saved_result(tmp_path / "llm", "llm"),
        saved_result(tmp_path / "both", "llm", "baseline"),
        saved_result(tmp_path / "bl", "baseline"),
    )
    for folder in (llm, both):
        with pytest.raises(InputError, match="holds the evaluation of runs/a/model"):
            refuse_model_evaluation(folder)
        refuse_baseline_run(folder, None)
    refuse_model_evaluation(only)
    refuse_model_evaluation(tmp_path / "new")
    with pytest.raises(InputError, match="holds the baselines"):
        refuse_baseline_run(only, None)
    refuse_baseline_run(only, only)


# -- --set over a recipe that another field of makes wrong ----------------------------------------
RECIPE = """\
data:
  dataset: meld
finetune:
  method: lora
  lora: {r: 8}
packing: {dialogue_chunk: 4}
evals_per_epoch: 4
stages:
  - tasks: {erc: 1.0}
    epochs: 1
"""


def refused_training(run_cli, tmp_path: Path, *options: str) -> str:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    line = one_line(run_cli("train", recipe, "--output", tmp_path / "run", *options))
    assert not (tmp_path / "run").exists()
    return line


@pytest.mark.parametrize(
    ("option", "field"),
    [
        ("finetune.method=full", "finetune.lora.r"),
        ("packing.shared_prefix=false", "packing.dialogue_chunk"),
        ("eval_every_steps=100", "evals_per_epoch"),
    ],
)
def test_a_set_that_makes_a_recipe_field_wrong_is_named(run_cli, tmp_path: Path, option: str, field: str) -> None:
    # The error named the recipe's field and line, but not the option that made it wrong.
    line = refused_training(run_cli, tmp_path, "--set", option)
    assert f"field '{field}'" in line and line.endswith(f"(given by --set {option})")


def test_the_option_that_gave_the_field_itself_is_named_first(run_cli, tmp_path: Path) -> None:
    line = refused_training(run_cli, tmp_path, "--set", "finetune.lora.r=32", "--set", "finetune.method=full")
    assert "r is 32" in line and line.endswith("(given by --set finetune.lora.r=32)")


def test_an_option_the_error_does_not_name_is_not_blamed(run_cli, tmp_path: Path) -> None:
    from instructerc.cli.train_commands import naming_the_option

    error = InputError("dropout must be in [0, 1), got 2", path="r.yaml", field="finetune.lora.dropout")
    given = [("seed", 3, "--seed 3"), ("finetune.lora.r", 4, "--set finetune.lora.r=4"), ("optim.lr", 0.1, "--set optim.lr=0.1")]
    assert naming_the_option(error, given) is error
    line = refused_training(run_cli, tmp_path, "--seed", "3", "--set", "packing.max_tokens=0")
    assert line.endswith("(given by --set packing.max_tokens=0)") and "--seed" not in line


# -- mistyped commands and choices --------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["prdict"], "invalid choice: 'prdict' (did you mean 'predict'? choose from 'data', 'prompts'"),
        (["prompt", "show"], "invalid choice: 'prompt' (did you mean 'prompts'?"),
        (["data", "stat"], "invalid choice: 'stat' (did you mean 'stats'? choose from 'list', 'stats', 'export')"),
        (
            ["predict", "--input", "a", "--output", "b", "--mode", "Score"],
            "argument --mode: invalid choice: 'Score' (did you mean 'score'?",
        ),
    ],
)
def test_a_mistyped_command_or_choice_is_told_the_closest(run_cli, capsys, argv: list[str], said: str) -> None:
    with pytest.raises(SystemExit) as stop:
        run_cli(*argv)
    assert stop.value.code == 2
    assert said in capsys.readouterr().err


def test_a_word_close_to_no_command_lists_them_only(run_cli, capsys) -> None:
    with pytest.raises(SystemExit):
        run_cli("zzz")
    assert "invalid choice: 'zzz' (choose from 'data'" in capsys.readouterr().err


# -- '-' for an output folder or an input file ------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--dataset", "meld", "--split", "test", "--out", "-"],
        ["evaluate", "--runs", "a", "b", "--out", "-"],
        ["baseline", "--dataset", "meld", "--split", "test", "--out", "-"],
        ["experiment", "grid.yaml", "--results", "-", "--report-only"],
        ["train", "recipe.yaml", "--output", "-"],
    ],
    ids=["evaluate", "evaluate-runs", "baseline", "experiment", "train"],
)
def test_a_dash_output_folder_is_refused_not_made(run_cli, capsys, tmp_path: Path, monkeypatch, argv: list[str]) -> None:
    # evaluate --out - wrote its metrics into a new folder named '-'.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_cli(*argv)
    assert stop.value.code == 2
    assert "'-' is not stdout here: give the folder to write into" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()


def test_a_folder_named_dash_can_still_be_given(run_cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = write_folder(tmp_path / "data")
    assert run_cli("baseline", *data_options(data), "--only", "majority", "--out", "./-").code == 0
    assert (tmp_path / "-" / "metrics.json").is_file()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["train", "-"], "'-' is not stdin here, and no file has that name: save the recipe to a file"),
        (["experiment", "-", "--list"], "'-' is not stdin here, and no file has that name: save the grid to a file"),
        (
            ["predict", "--input", "-", "--output", "out.jsonl"],
            "'-' is not stdin here (predict reads its input twice), and no file has that name",
        ),
    ],
)
def test_a_dash_input_is_said_not_to_be_stdin(run_cli, tmp_path: Path, monkeypatch, argv: list[str], said: str) -> None:
    # It was "-: file not found".
    monkeypatch.chdir(tmp_path)
    assert said in one_line(run_cli(*argv))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("command", ["train", "experiment", "prompts"])
def test_a_pipe_or_device_as_a_recipe_is_not_called_missing(run_cli, tmp_path: Path, command: str) -> None:
    # `instructerc train <(envsubst < recipe.yaml)` and /dev/null were refused as "file not found".
    pipe = tmp_path / "recipe.yaml"
    os.mkfifo(pipe)
    for path in (pipe, Path(os.devnull)):
        argv = {
            "train": ["train", path],
            "experiment": ["experiment", path, "--list"],
            "prompts": [
                "prompts",
                "show",
                "--dataset",
                "jsonl",
                "--data",
                write_folder(tmp_path / "d"),
                "--label-set",
                "meld",
                "--config",
                path,
            ],
        }[command]
        line = one_line(run_cli(*argv))
        assert line == f"instructerc: error: {path}: is not a regular file (a pipe or a device): save it to a file first"


def test_an_export_onto_a_folder_is_refused_before_the_data_is_read(run_cli, tmp_path: Path, monkeypatch) -> None:
    from instructerc.data import registry

    def never_read(*args, **kwargs):
        raise AssertionError("the split was read before the output was checked")

    monkeypatch.setattr(registry, "load_dialogues", never_read)
    (tmp_path / "out").mkdir()
    result = run_cli("data", "export", "--dataset", "meld", "--split", "test", "--out", tmp_path / "out")
    assert one_line(result) == f"instructerc: error: {tmp_path / 'out'}: is a folder; --out names the file to write"


# -- a full disk under an output file -------------------------------------------------------------
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_under_an_exported_file_is_the_machines_error(run_cli, tmp_path: Path) -> None:
    # It exited 2 ("cannot write: No space left on device"), the status of a wrong input; train says a full disk with 1.
    data = write_folder(tmp_path / "data")
    result = run_cli("data", "export", "--dataset", "jsonl", "--data", data, "--split", "test", "--out", "/dev/full")
    assert one_line(result, code=1) == "instructerc: error: /dev/full: No space left on device"


def test_only_the_machines_failures_leave_the_input_status(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    for number in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        raised = output_error(OSError(number, os.strerror(number), str(tmp_path / ".tmp")), out)
        assert type(raised) is OSError and raised.filename == str(out) and raised.errno == number
    refused = output_error(PermissionError(errno.EACCES, "Permission denied"), out)
    assert isinstance(refused, InputError) and str(refused) == f"{out}: cannot write: Permission denied"


def test_a_full_disk_under_a_grid_report_is_the_machines_error(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from instructerc.experiments import report

    (tmp_path / "base.yaml").write_text(RECIPE.replace("packing: {dialogue_chunk: 4}\nevals_per_epoch: 4\n", ""), encoding="utf-8")
    grid = {"name": "g", "base": "base.yaml", "output_dir": "runs", "axes": {"fraction": {"1": {"data.fraction": 1.0}}}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid), encoding="utf-8")

    def full_disk(config, results, target, failures):
        raise OSError(errno.ENOSPC, "No space left on device", str(target / "results.csv"))

    monkeypatch.setattr(report, "write_report", full_disk)
    result = run_cli("experiment", tmp_path / "grid.yaml", "--report-only", "--results", tmp_path / "report")
    assert one_line(result, code=1) == f"instructerc: error: {tmp_path / 'report' / 'results.csv'}: No space left on device"
