"""Probes of predict, evaluate and baseline: default output folders, output paths, warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructerc.labels.benchmarks import MELD
from test_evaluate import write_folder
from tiny import tiny_model_dir


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny-meld", MELD)


def _evaluate_default(run_cli, model: Path, data: Path, *more: str):
    return run_cli(
        "evaluate", "--model", model, "--dataset", "jsonl", "--data", data, "--label-set", "meld", "--split", "test", "--no-progress", *more
    )


def test_evaluating_a_second_jsonl_folder_keeps_the_first_ones_results(run_cli, model: Path, tmp_path: Path) -> None:
    # Both used to write MODEL/eval-jsonl-test: the second evaluation replaced the first's.
    first, second = write_folder(tmp_path / "first"), write_folder(tmp_path / "second")

    assert _evaluate_default(run_cli, model, first).code == 0
    assert _evaluate_default(run_cli, model, second).code == 0

    for name in ("first", "second"):
        recorded = json.loads((model / f"eval-jsonl-{name}-test" / "metrics.json").read_text(encoding="utf-8"))
        assert recorded["data"]["path"] == str(tmp_path / name)


def test_a_jsonl_file_is_named_by_its_stem(run_cli, model: Path, tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "data")
    result = run_cli(
        "evaluate", "--model", model, "--dataset", "jsonl", "--data", folder / "test.jsonl", "--label-set", "meld", "--split", "test",
        "--no-progress",
    )  # fmt: skip

    assert result.code == 0, result.err
    assert (model / "eval-jsonl-test-test" / "metrics.json").is_file()


def test_a_default_folder_holding_another_inputs_results_is_refused(run_cli, model: Path, tmp_path: Path) -> None:
    # Two folders of the same name share the default: the second must not replace the first's results.
    first, second = write_folder(tmp_path / "a" / "same"), write_folder(tmp_path / "b" / "same")
    assert _evaluate_default(run_cli, model, first).code == 0
    metrics = model / "eval-jsonl-same-test" / "metrics.json"
    before = metrics.read_bytes()

    result = _evaluate_default(run_cli, model, second)

    assert result.code != 0
    assert "eval-jsonl-same-test" in result.err and "--out" in result.err and str(first) in result.err
    assert metrics.read_bytes() == before
    assert _evaluate_default(run_cli, model, first).code == 0, "the same input may be evaluated again"


def test_loading_a_model_from_python_shows_no_library_deprecation_notices() -> None:
    # peft's FutureWarning about is_gradient_checkpointing reached every Python API user on load;
    # the CLI hid it, the API did not.
    import warnings

    from instructerc.inference.predictor import Predictor
    from instructerc.modeling.default_model import default_model_dir

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Predictor.from_directory(default_model_dir())
        warnings.warn("the caller's own notice", FutureWarning)

    assert [str(w.message) for w in caught] == ["the caller's own notice"], "the filter is scoped to the call"


def test_nearest_existing_stops_at_a_dangling_symlink(tmp_path: Path) -> None:
    # It skipped the link (exists() is False for it) and named its folder: the output check then
    # passed, and the write failed at the end with "File exists".
    from instructerc.files import nearest_existing

    (tmp_path / "link").symlink_to(tmp_path / "nowhere")

    assert nearest_existing(tmp_path / "link" / "out") == tmp_path / "link"


@pytest.mark.parametrize("below", ["", "inside"])
def test_evaluation_and_grid_folders_refuse_a_dangling_symlink_alike(tmp_path: Path, below: str) -> None:
    from instructerc.errors import InputError
    from instructerc.evaluation.report import check_output_folder as evaluation_folder
    from instructerc.experiments.runner import check_output_folder as grid_folder

    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    folder = link / below if below else link

    for check, field in ((evaluation_folder, "out"), (grid_folder, "output_dir")):
        with pytest.raises(InputError) as refused:
            check(folder)
        assert refused.value.path == str(link) and refused.value.field == field
        assert f"is a symlink to {tmp_path / 'nowhere'}, which does not exist" in refused.value.message


def test_evaluate_into_a_dangling_symlink_is_refused_before_the_model_runs(run_cli, model: Path, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    data = write_folder(tmp_path / "data")

    result = _evaluate_default(run_cli, model, data, "--out", str(tmp_path / "link"))

    assert result.code == 2 and result.err.count("\n") == 1
    assert f"{tmp_path / 'link'}: field 'out': is a symlink to" in result.err
    assert not (tmp_path / "nowhere").exists()


def test_predict_below_a_dangling_symlink_is_refused_before_the_model_runs(run_cli, model: Path, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    data = write_folder(tmp_path / "data")

    output = tmp_path / "link" / "p.jsonl"
    result = run_cli("predict", "--model", model, "--input", data / "test.jsonl", "--output", output, "--no-progress")

    assert result.code == 2 and "is a symlink to" in result.err and "File exists" not in result.err


@pytest.mark.parametrize("kind", ["file", "dangling symlink"])
def test_aggregating_into_a_file_or_a_dangling_symlink_says_what_is_there(run_cli, model: Path, tmp_path: Path, kind: str) -> None:
    # It failed with "cannot write: File exists", which told neither what nor why.
    data = write_folder(tmp_path / "data")
    runs = [tmp_path / "seed1", tmp_path / "seed2"]
    for run in runs:
        assert _evaluate_default(run_cli, model, data, "--out", str(run)).code == 0
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("keep me", encoding="utf-8")
    else:
        out.symlink_to(tmp_path / "nowhere")

    result = run_cli("evaluate", "--runs", *runs, "--out", out)

    assert result.code == 2 and "File exists" not in result.err
    assert f"{out}: field 'out': " in result.err and ("is a file" in result.err or "is a symlink to" in result.err)
    assert kind != "file" or out.read_text(encoding="utf-8") == "keep me"


def test_an_output_file_ending_with_a_slash_is_refused_not_written_as_a_file(run_cli, capsys, model: Path, tmp_path: Path) -> None:
    # Path() drops the trailing slash: 'results/' became a file named 'results'.
    data = write_folder(tmp_path / "data")

    with pytest.raises(SystemExit) as stop:
        run_cli("predict", "--model", model, "--input", data / "test.jsonl", "--output", f"{tmp_path / 'results'}/", "--no-progress")

    assert stop.value.code == 2
    assert "argument --output" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_evaluate_model_from_python_takes_str_paths(run_cli, model: Path, tmp_path: Path) -> None:
    # A str out failed deep inside with "'str' object has no attribute 'parents'".
    from instructerc.data.registry import DataSource
    from instructerc.evaluation.evaluate import evaluate_model

    data = write_folder(tmp_path / "data")
    out, baselines = tmp_path / "out", tmp_path / "baselines"
    common = ("--dataset", "jsonl", "--data", data, "--label-set", "meld", "--split", "test", "--no-progress")
    assert run_cli("baseline", *common, "--only", "majority", "--out", baselines).code == 0
    source = DataSource("jsonl", str(data), label_set="meld")

    result = evaluate_model(str(model), source, "test", str(out), baselines_from=str(baselines), progress=False)

    assert "meld" in result.systems["llm"].by_dataset and "majority" in result.systems
    assert (out / "metrics.json").is_file()


def test_an_empty_baseline_encoder_is_refused_as_an_empty_path(run_cli, capsys, tmp_path: Path) -> None:
    # --encoder "$UNSET" tried the working directory as the encoder, and the error named nothing.
    data = write_folder(tmp_path / "data")

    with pytest.raises(SystemExit) as stop:
        run_cli("baseline", "--dataset", "jsonl", "--data", data, "--split", "test", "--out", tmp_path / "b", "--encoder", "")

    assert stop.value.code == 2
    assert "argument --encoder: an empty path" in capsys.readouterr().err


def test_run_baselines_from_python_takes_a_str_cache_dir(tmp_path: Path) -> None:
    # A str cache_dir failed with "unsupported operand type(s) for /: 'str' and 'str'" after the encoder loaded.
    from instructerc.data.registry import DataSource
    from instructerc.evaluation.baselines import run_baselines

    data = write_folder(tmp_path / "data")

    result = run_baselines(DataSource("jsonl", data, label_set="meld"), "test", cache_dir=str(tmp_path / "cache"), progress=False)

    assert "minilm-logreg" in result.systems
    assert (tmp_path / "cache" / "embeddings").is_dir()


def test_predict_into_a_symlink_loop_is_refused_before_the_model_runs(run_cli, model: Path, tmp_path: Path, monkeypatch) -> None:
    from instructerc.inference import predictor

    def never(*args, **kwargs):
        raise AssertionError("the model ran before the output was checked")

    monkeypatch.setattr(predictor.Predictor, "from_directory", never)
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    data = write_folder(tmp_path / "data")

    result = run_cli("predict", "--model", model, "--input", data / "test.jsonl", "--output", loop, "--no-progress")

    assert result.code == 2
    assert f"{loop}: is a symlink loop" in result.err and "--output names the file to write" in result.err


def test_evaluate_says_how_many_utterances_have_no_gold_and_are_not_scored(run_cli, model: Path, tmp_path: Path) -> None:
    utterances = [
        {"speaker": "A", "text": "I am happy", "original_emotion": "joy"},
        {"speaker": "B", "text": "meh", "emotion": "neutral"},
        {"speaker": "A", "text": "ok then"},
    ]
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text(json.dumps({"id": "a", "dataset": "meld", "utterances": utterances}) + "\n", encoding="utf-8")

    result = _evaluate_default(run_cli, model, data, "--out", str(tmp_path / "out"))

    assert result.code == 0, result
    assert (
        "2 of 3 utterances have no gold 'emotion' and are not scored; "
        "1 of them give only 'original_emotion', which is not read as the gold" in result.err
    )
    assert json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))["systems"]["llm"]["by_dataset"]["meld"]["count"] == 1
