"""The benchmark scripts and scripts/ship_default_model.py refuse a bad option when they start, as
one ``error:`` line naming it (exit code 2), instead of a traceback minutes into a run; and a
failure after the start is one message with a non-zero exit, not a traceback."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from instructerc.labels.benchmarks import MELD
from test_benchmark_reports import benchmark
from test_retrieval import FakeEncoder
from tiny import tiny_model_dir

REPO = Path(__file__).resolve().parents[1]


def ship_script():
    spec = importlib.util.spec_from_file_location("ship_default_model", REPO / "scripts" / "ship_default_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(module, argv: list[str], monkeypatch) -> object:
    """``module.main()`` as the command line ``argv`` runs it."""
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *argv])
    return module.main()


def refused(module, argv: list[str], monkeypatch, capsys) -> str:
    """The one error line of a refused command line (exit code 2)."""
    with pytest.raises(SystemExit) as exited:
        run(module, argv, monkeypatch)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "script, argv, option",
    [
        ("train_throughput", ["--dialogues", "0"], "--dialogues"),
        ("train_throughput", ["--steps", "0"], "--steps"),
        ("train_throughput", ["--batch-size", "-1"], "--batch-size"),
        ("train_throughput", ["--pool-dialogues", "0"], "--pool-dialogues"),
        ("train_throughput", ["--max-length", "0"], "--max-length"),
        ("inference_throughput", ["--default-model", "--dialogues", "0"], "--dialogues"),
        ("inference_throughput", ["--default-model", "--max-tokens", "0"], "--max-tokens"),
        ("inference_throughput", ["--default-model", "--batch-tokens", "-8"], "--batch-tokens"),
        ("predict_precision", ["--repeats", "0"], "--repeats"),
        ("score_cost_model", ["--model", "{tmp}", "--dialogues", "0"], "--dialogues"),
        ("score_cost_model", ["--model", "{tmp}", "--row-tokens", "512", "0"], "--row-tokens"),
        ("sharded_memory", ["--processes", "0"], "--processes"),
        ("sharded_memory", ["--threads", "0"], "--threads"),
        ("sharded_memory", ["--fraction", "0"], "--fraction"),
        ("sharded_memory", ["--fraction", "1.5"], "--fraction"),
        ("sharded_memory", ["--epochs", "0"], "--epochs"),
        ("sharded_memory", ["--micro-batch-size", "0"], "--micro-batch-size"),
        ("sharded_memory", ["--dtype", "float8"], "--dtype"),
        ("serve_load", ["--turns", "0"], "--turns"),
        ("serve_load", ["--max-batch-size", "0"], "--max-batch-size"),
        ("serve_load", ["--max-wait-ms", "-1"], "--max-wait-ms"),
        ("serve_load", ["--threads", "0"], "--threads"),
        ("serve_load", ["--timeout", "0"], "--timeout"),
        ("serve_load", ["--startup-timeout", "0"], "--startup-timeout"),
        ("serve_load", ["--seconds", "nan"], "--seconds"),
    ],
)
def test_a_count_or_time_out_of_range_is_one_error_line_naming_it(script, argv, option, tmp_path, monkeypatch, capsys):
    argv = [value.replace("{tmp}", str(tmp_path)) for value in argv]
    line = refused(benchmark(script), argv, monkeypatch, capsys)
    assert line.startswith(f"{script}.py: error: argument {option}:")


@pytest.mark.parametrize(
    "script, argv",
    [
        ("score_cost_model", ["--model", "{missing}"]),
        ("score_cost_model", ["--model", "{tmp}"]),
        ("serve_load", ["--model", "{missing}"]),
        ("serve_load", ["--model", "{tmp}"]),
        ("inference_throughput", ["--prefix-model", "{missing}"]),
        ("inference_throughput", ["--prefix-model", "{tmp}"]),
    ],
)
def test_a_folder_that_is_no_model_directory_is_refused_before_any_work(script, argv, tmp_path, monkeypatch, capsys):
    argv = [value.replace("{missing}", str(tmp_path / "nope")).replace("{tmp}", str(tmp_path)) for value in argv]
    line = refused(benchmark(script), argv, monkeypatch, capsys)
    assert f"error: argument {argv[0]}: {argv[1]}:" in line


def test_serve_load_refuses_a_backbone_that_is_no_checkpoint(tmp_path, monkeypatch, capsys):
    line = refused(benchmark("serve_load"), ["--backbone", str(tmp_path)], monkeypatch, capsys)
    assert "argument --backbone" in line and "config.json" in line


@pytest.mark.parametrize("script", ["train_throughput", "predict_precision", "retrieval_index", "sharded_memory"])
def test_missing_data_is_one_error_line_naming_data(script, tmp_path, monkeypatch, capsys):
    line = refused(benchmark(script), ["--data", str(tmp_path / "nope")], monkeypatch, capsys)
    assert line.endswith(f"error: argument --data: {tmp_path / 'nope'}: no such file or folder")


def test_inference_throughput_refuses_missing_data_before_starting_a_route(tmp_path, monkeypatch, capsys):
    model = tiny_model_dir(tmp_path / "model", MELD)
    line = refused(benchmark("inference_throughput"), ["--prefix-model", str(model), "--data", str(tmp_path)], monkeypatch, capsys)
    assert "argument --data" in line and "MELD test CSV not found" in line


def test_train_throughput_refuses_more_dialogues_than_meld_has_and_a_missing_model(data_root, monkeypatch, capsys):
    module = benchmark("train_throughput")
    line = refused(module, ["--data", str(data_root), "--dialogues", "100000"], monkeypatch, capsys)
    assert "argument --dialogues: MELD train has" in line
    line = refused(module, ["--data", str(data_root), "--model", "./no-such-backbone"], monkeypatch, capsys)
    assert "argument --model: ./no-such-backbone" in line and "no such model folder" in line


def test_inference_throughput_refuses_one_precision_asked_twice(data_root, monkeypatch, capsys):
    # Results are keyed by precision: the second run would replace the first one's figures.
    argv = ["--default-model", "--data", str(data_root), "--dtypes", "float32", "float32"]
    line = refused(benchmark("inference_throughput"), argv, monkeypatch, capsys)
    assert "argument --dtypes: the same precision twice" in line


def test_sharded_memory_refuses_a_batch_smaller_than_its_processes_and_a_bad_recipe(data_root, tmp_path, monkeypatch, capsys):
    module = benchmark("sharded_memory")
    line = refused(module, ["--data", str(data_root), "--batch-size", "1", "--processes", "2"], monkeypatch, capsys)
    assert "argument --batch-size" in line
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("optim: [\n", encoding="utf-8")
    line = refused(module, ["--data", str(data_root), "--recipe", str(recipe)], monkeypatch, capsys)
    assert line.startswith("sharded_memory.py: error: argument --recipe:") and str(recipe) in line


@pytest.mark.parametrize("script", ["train_throughput", "inference_throughput", "predict_precision", "sharded_memory", "serve_load"])
def test_json_into_a_folder_is_refused_at_the_start(script, tmp_path, monkeypatch, capsys):
    argv = ["--json", str(tmp_path)] + (["--default-model"] if script == "inference_throughput" else [])
    line = refused(benchmark(script), argv, monkeypatch, capsys)
    assert f"error: argument --json: {tmp_path}: is a folder" in line


def test_json_that_cannot_be_written_is_refused_and_a_new_folder_is_fine(tmp_path):
    report = benchmark("_report")
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    for bad in (str(tmp_path), str(blocker / "out.json"), str(blocker / "deeper" / "out.json")):
        with pytest.raises(argparse.ArgumentTypeError):
            report.output_file(bad)
    assert report.output_file(str(tmp_path / "new" / "out.json")) == tmp_path / "new" / "out.json"
    assert not (tmp_path / "new").exists()  # checked, not created: the report creates it when written
    assert report.output_file(str(blocker)) == blocker  # an earlier report is replaced


def test_retrieval_index_checks_json_and_cache_dir_before_encoding(data_root, tmp_path, monkeypatch, capsys):
    from instructerc.retrieval.encoder import SentenceEncoder

    encoded = []
    monkeypatch.setattr(SentenceEncoder, "load", classmethod(lambda cls, name, *a, **k: encoded.append(name) or FakeEncoder()))
    module = benchmark("retrieval_index")
    line = refused(module, ["--data", str(data_root), "--json", str(tmp_path)], monkeypatch, capsys)
    assert "argument --json" in line
    blocker = tmp_path / "cache"
    blocker.write_text("", encoding="utf-8")
    line = refused(module, ["--data", str(data_root), "--cache-dir", str(blocker)], monkeypatch, capsys)
    assert "argument --cache-dir" in line
    assert encoded == []


def test_serve_load_reports_a_server_that_did_not_start_without_a_traceback(tmp_path, monkeypatch, capsys):
    module = benchmark("serve_load")
    code = run(module, ["--clients", "1", "--seconds", "0.1", "--startup-timeout", "0.01", "--json", str(tmp_path / "s.json")], monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "serve_load.py: error: mode cache: the server was not ready after 0.01 s" in err
    assert not (tmp_path / "s.json").exists()


def test_predict_precision_without_labelling_times_still_reports_and_leaves_no_copy_of_meld(data_root, tmp_path, monkeypatch, capsys):
    module = benchmark("predict_precision")
    outputs: list[Path] = []

    def export(data, target):
        target.write_text("", encoding="utf-8")
        return 3

    def predict(source, output, dtype):
        outputs.append(output)
        output.write_text(json.dumps({"utterances": [{"predicted_emotion": "joy"}] * 3}) + "\n", encoding="utf-8")
        # A run shorter than the progress bar's first second shows no labelling time.
        return {"dtype": dtype, "wall_seconds": 2.0, "labelling_seconds": None, "peak_rss_mb": None, "stdout": "wrote 3"}

    monkeypatch.setattr(module, "export_meld_test", export)
    monkeypatch.setattr(module, "run_predict", predict)
    out = tmp_path / "p.json"
    run(module, ["--data", str(data_root), "--repeats", "1", "--dtypes", "bfloat16", "float32", "--json", str(out)], monkeypatch)
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["summary"]["float32"]["median_labelling_utterances_per_s"] is None
    assert report["summary"]["bfloat16"]["labels_equal_to_float32"] == 3
    assert "labelling - utt/s" in capsys.readouterr().out
    assert outputs and not outputs[0].parent.exists(), "the exported MELD test and the predictions were left in a temporary folder"


# -- scripts/ship_default_model.py: every input read before the package's model is replaced --------


@pytest.fixture
def shipping(tmp_path, monkeypatch):
    """The ship script aimed at a scratch target, and a run directory holding a copy of the default model."""
    module = ship_script()
    monkeypatch.setattr(module, "TARGET", tmp_path / "shipped")
    model = tmp_path / "run" / "model"
    shutil.copytree(REPO / "src" / "instructerc" / "resources" / "default_model", model)
    return module, model


def finished_run(model: Path, *extra: str) -> Path:
    lines = [
        '{"event": "start", "time": 1, "processes": 1, "device": "cpu", "precision": "bfloat16"}',
        *extra,
        '{"event": "done", "time": 9}',
    ]
    metrics = model.parent / "metrics.jsonl"
    metrics.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return metrics


def test_ship_refuses_a_missing_model_directory_by_its_name(shipping, tmp_path, monkeypatch, capsys):
    module, _ = shipping
    line = refused(module, [str(tmp_path / "nope")], monkeypatch, capsys)
    assert line == f"ship_default_model.py: error: {tmp_path / 'nope'}: no such model directory"


def test_ship_names_the_line_of_a_broken_run_log(shipping, monkeypatch, capsys):
    module, model = shipping
    metrics = finished_run(model, '{"event": "step", "time": 3', '{"event": "step", "time": 4}')
    line = refused(module, [str(model)], monkeypatch, capsys)
    assert line.startswith(f"ship_default_model.py: error: {metrics}:2: not JSON")
    metrics.write_text('{"event": "start", "time": 1, "device": "cpu"}\n{"event": "done", "time": 2}\n', encoding="utf-8")
    line = refused(module, [str(model)], monkeypatch, capsys)
    assert line.endswith(f"{metrics}:1: field 'processes': the start event has no such field")


def test_ship_refuses_test_metrics_that_are_missing_or_not_evaluate_output(shipping, tmp_path, monkeypatch, capsys):
    module, model = shipping
    finished_run(model)
    line = refused(module, [str(model), "--test-metrics", str(tmp_path / "none.json")], monkeypatch, capsys)
    assert line.endswith(f"{tmp_path / 'none.json'}: no such file")
    other = tmp_path / "other.json"
    other.write_text('{"accuracy": 1}', encoding="utf-8")
    line = refused(module, [str(model), "--test-metrics", str(other)], monkeypatch, capsys)
    assert f"{other}: not the metrics.json of instructerc evaluate" in line
    assert not (tmp_path / "shipped").exists()


def test_ship_refuses_a_model_directory_without_its_adapter(shipping, monkeypatch, capsys):
    module, model = shipping
    finished_run(model)
    (model / "adapter_model.safetensors").unlink()
    line = refused(module, [str(model)], monkeypatch, capsys)
    assert line.endswith(f"{model}: the model directory has no adapter_model.safetensors")
