"""Training folders, evaluation outputs and the sentence encoder, in the states users leave them in:
inputs named from other folders, run folders trained again, full disks, unwritable folders, encoders
with weights under other names (tiny models)."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
from pathlib import Path

import pytest

from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from test_evaluate import write_folder
from tiny import tiny_model_dir, write_tiny_base


# -- evaluate: which input a default folder holds ----------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny-meld", MELD)


def _evaluate(run_cli, model: Path, data: str | Path):
    return run_cli(
        "evaluate", "--model", model, "--dataset", "jsonl", "--data", data, "--label-set", "meld", "--split", "test", "--no-progress"
    )


def test_the_same_input_named_from_another_folder_is_the_same_input(run_cli, model: Path, tmp_path: Path, monkeypatch) -> None:
    # data.path was recorded as typed ('same'): from another working directory, '../a/same',
    # './same' or the folder behind a link named the very input evaluated, yet the default
    # folder was refused as another input's.
    write_folder(tmp_path / "a" / "same")
    for folder in ("b", "c"):
        (tmp_path / folder).mkdir()
    (tmp_path / "c" / "same").symlink_to(tmp_path / "a" / "same")
    monkeypatch.chdir(tmp_path / "c")
    assert _evaluate(run_cli, model, "same").code == 0  # through the link
    recorded = json.loads((model / "eval-jsonl-same-test" / "metrics.json").read_text(encoding="utf-8"))["data"]["path"]
    assert recorded == str(tmp_path / "c" / "same")

    monkeypatch.chdir(tmp_path / "b")
    assert _evaluate(run_cli, model, "../a/same").code == 0
    monkeypatch.chdir(tmp_path / "a")
    assert _evaluate(run_cli, model, "./same").code == 0
    assert _evaluate(run_cli, model, tmp_path / "a" / "same").code == 0


def test_another_input_of_the_same_relative_spelling_is_refused(run_cli, model: Path, tmp_path: Path, monkeypatch) -> None:
    # 'twin' in a/ and 'twin' in b/ are two inputs: the second replaced the first's results.
    write_folder(tmp_path / "a" / "twin")
    write_folder(tmp_path / "b" / "twin", dataset="other")
    monkeypatch.chdir(tmp_path / "a")
    assert _evaluate(run_cli, model, "twin").code == 0
    metrics = model / "eval-jsonl-twin-test" / "metrics.json"
    before = metrics.read_bytes()

    monkeypatch.chdir(tmp_path / "b")
    result = _evaluate(run_cli, model, "twin")

    assert result.code == 2
    assert "holds the evaluation of another input" in result.err and str(tmp_path / "a" / "twin") in result.err
    assert metrics.read_bytes() == before


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_model_loads(model: Path, tmp_path: Path, monkeypatch) -> None:
    # A read-only folder failed only after every utterance had been predicted. (Simulated: the
    # tests may run as root, whom permissions do not stop.)
    from instructerc.data.registry import DataSource
    from instructerc.evaluation import report
    from instructerc.evaluation.evaluate import evaluate_model
    from instructerc.inference.predictor import Predictor

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    def never(*args, **kwargs):
        raise AssertionError("the model loaded before the output folder was checked")

    monkeypatch.setattr(report.tempfile, "mkdtemp", read_only)
    monkeypatch.setattr(Predictor, "from_directory", never)
    data = write_folder(tmp_path / "data")
    out = tmp_path / "locked" / "eval"
    (tmp_path / "locked").mkdir()

    with pytest.raises(InputError) as refused:
        evaluate_model(model, DataSource("jsonl", data, label_set="meld"), "test", out, progress=False)

    assert refused.value.path == str(out) and refused.value.field == "out"
    assert f"cannot write here ({tmp_path / 'locked'}): Permission denied" in refused.value.message
    assert not out.exists()


def test_a_grid_results_folder_that_cannot_be_written_is_refused_before_any_run(tmp_path: Path, monkeypatch) -> None:
    # --results was written only after every run of the grid had trained.
    from instructerc.evaluation import report
    from instructerc.experiments.runner import check_output_folder

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(report.tempfile, "mkdtemp", read_only)
    with pytest.raises(InputError) as refused:
        check_output_folder(tmp_path / "report", field="results", what="its report", named="--results folder")
    assert refused.value.field == "results" and "Read-only file system" in refused.value.message


def test_a_grid_report_without_a_plot_leaves_no_earlier_plot_beside_it(tmp_path: Path) -> None:
    # Another grid of the same name (or this one before its plot was dropped) drew g.png: it stayed
    # beside the new table, passing for its plot.
    from instructerc.experiments.grid import ExperimentConfig, PlotConfig, expand
    from instructerc.experiments.report import write_report
    from instructerc.experiments.runner import RunResult

    def results(config: ExperimentConfig) -> list[RunResult]:
        scores = {"meld": {"weighted_f1": 40.0, "macro_f1": 20.0, "accuracy": 40.0, "count": 10}}
        return [RunResult(s, {"by_dataset": {"meld": {"weighted_f1": 50.0}}}, scores) for s in expand(config)]

    plotted = ExperimentConfig("g", "base.yaml", "runs", axes={"fraction": {"0.5": {}, "1": {}}}, seeds=[1], plot=PlotConfig(x="fraction"))
    write_report(plotted, results(plotted), tmp_path)
    assert (tmp_path / "g.png").is_file()

    other = ExperimentConfig("g", "base.yaml", "runs", axes={"lr": {"a": {}, "b": {}}}, seeds=[1])
    written = write_report(other, results(other), tmp_path)

    assert sorted(p.name for p in written if ".earlier-" not in p.name) == ["g.csv", "g.md"]
    # The earlier report (its rows are not in the new one) is kept whole, plot included; no plot
    # stands beside the new table.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.csv", "g.earlier-1.csv", "g.earlier-1.md", "g.earlier-1.png", "g.md"]


# -- training: the run folder's log -----------------------------------------------------------------
@pytest.fixture(scope="module")
def base_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_base(tmp_path_factory.mktemp("s19-train"), {"train": 8, "dev": 3})


def _train(recipe: Path, run: Path, resume: bool = False, stop_after_steps: int | None = None, **overrides) -> None:
    from instructerc.evaluation.dev_scoring import predictor_dev_scoring
    from instructerc.training.config import TrainConfig
    from instructerc.training.trainer import Trainer

    config = TrainConfig.from_yaml(recipe, {"output_dir": str(run), "checkpoint_every_steps": 1, **overrides})
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring, stop_after_steps=stop_after_steps).run(resume=resume)


def _events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def test_a_run_trained_again_after_its_model_was_deleted_starts_a_log_of_its_own(base_recipe: Path, tmp_path: Path, capsys) -> None:
    # Its steps and scores were appended to the first run's metrics.jsonl: one file, two runs.
    import shutil

    run = tmp_path / "run"
    _train(base_recipe, run, stop_after_steps=1)
    _train(base_recipe, run, resume=True)  # a resumed run goes on in the same log, saying from where
    first = (run / "metrics.jsonl").read_bytes()
    starts = [e for e in _events(run / "metrics.jsonl") if e["event"] == "start"]
    assert [e["resumed_from"] for e in starts] == [None, "step-0000001"]
    assert not list(run.glob("*.earlier-*"))
    shutil.rmtree(run / "model")
    shutil.rmtree(run / "checkpoints")
    capsys.readouterr()

    _train(base_recipe, run)

    assert (run / "metrics.earlier-1.jsonl").read_bytes() == first
    assert (run / "config.earlier-1.yaml").is_file()
    events = _events(run / "metrics.jsonl")
    assert [e["event"] for e in events].count("start") == 1 and events[-1]["event"] == "done"
    assert "kept as metrics.earlier-1.jsonl, config.earlier-1.yaml" in capsys.readouterr().err


def test_earlier_logs_are_numbered_and_never_replaced(tmp_path: Path) -> None:
    from instructerc.training.run_directory import RunPaths, set_aside_earlier_log

    paths = RunPaths(tmp_path)
    (tmp_path / "metrics.earlier-1.jsonl").write_text("kept\n", encoding="utf-8")
    paths.metrics.write_text('{"event": "start"}\n', encoding="utf-8")

    kept = set_aside_earlier_log(paths)

    assert [p.name for p in kept] == ["metrics.earlier-2.jsonl"]  # no config.yaml to keep beside it
    assert (tmp_path / "metrics.earlier-1.jsonl").read_text(encoding="utf-8") == "kept\n"
    assert not paths.metrics.exists()
    paths.metrics.write_text("", encoding="utf-8")
    assert set_aside_earlier_log(paths) == []  # an empty log holds nothing to keep


def test_a_log_line_cut_short_by_a_full_disk_is_taken_back(tmp_path: Path, monkeypatch) -> None:
    # Half a record stayed at the end of metrics.jsonl, and the next record ran into it.
    from instructerc.training import run_directory

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"event": "start"}\n', encoding="utf-8")
    real_write = os.write

    def full_after_a_few_bytes(fd: int, data) -> int:
        if len(data) > 5:
            real_write(fd, bytes(data[:5]))
            return 5
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_directory.os, "write", full_after_a_few_bytes)
    with pytest.raises(OSError) as full:
        run_directory.append_line(log, '{"event": "step", "step": 1}')
    monkeypatch.undo()

    assert full.value.filename == str(log)
    assert log.read_text(encoding="utf-8") == '{"event": "start"}\n'


def test_a_log_left_with_an_unfinished_line_gets_the_next_record_on_a_line_of_its_own(tmp_path: Path) -> None:
    from instructerc.training.run_directory import append_line

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"event": "start"}\n{"event": "st', encoding="utf-8")  # a process killed mid-write

    append_line(log, '{"event": "eval"}')

    assert log.read_text(encoding="utf-8").splitlines()[-1] == '{"event": "eval"}'


def test_a_resumed_run_whose_best_weights_are_gone_is_refused_before_it_trains(base_recipe: Path, tmp_path: Path) -> None:
    # The rest of the run trained, and only writing the model failed, on a bare 'No such file'.
    run = tmp_path / "run"
    two_epochs = {"stages": [{"tasks": {"erc": 1.0}, "epochs": 2}]}
    _train(base_recipe, run, stop_after_steps=6, **two_epochs)  # dev-scored (and best kept) at step 4
    (run / "best" / "trainable.pt").unlink()

    with pytest.raises(InputError, match="missing: the run's best weights") as refused:
        _train(base_recipe, run, resume=True, **two_epochs)

    assert refused.value.path == str(run / "best" / "trainable.pt")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000006"]


def test_damaged_best_weights_are_an_error_naming_them(tmp_path: Path) -> None:
    from instructerc.training.run_directory import read_best_weights

    file = tmp_path / "trainable.pt"
    file.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(InputError, match="damaged") as refused:
        read_best_weights(file)
    assert refused.value.path == str(file)


# -- training: full disks under the weights -------------------------------------------------------------
class _FullDisk(io.FileIO):
    """A file on a disk that fills up after 1,000 bytes."""

    def write(self, data) -> int:
        if self.tell() + len(data) > 1000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_a_checkpoint_on_a_full_disk_is_an_error_naming_its_file_and_keeps_the_last_one(tmp_path: Path, monkeypatch) -> None:
    # torch reported the full disk as a RuntimeError of its writer ('unexpected pos ...'): a
    # traceback; the half-written staging folder stayed, holding the space it took.
    import torch

    from instructerc.training import checkpoint
    from instructerc.training.checkpoint import TrainState, latest_checkpoint, save_checkpoint

    weights = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(weights.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "step-0000001", TrainState(global_step=1), {"w": torch.zeros(2)}, optimizer, scheduler)
    monkeypatch.setattr(checkpoint, "open", lambda file, mode: _FullDisk(file, mode), raising=False)

    with pytest.raises(OSError) as full:
        save_checkpoint(folder / "step-0000002", TrainState(global_step=2), {"w": torch.zeros(10_000)}, optimizer, scheduler)

    assert full.value.errno == errno.ENOSPC
    assert full.value.filename == str(folder / ".step-0000002.tmp" / "trainable.pt")
    assert sorted(p.name for p in folder.iterdir()) == ["step-0000001"]
    assert latest_checkpoint(folder) == folder / "step-0000001"


def test_the_best_weights_on_a_full_disk_are_an_error_naming_their_file(tmp_path: Path) -> None:
    import torch

    from instructerc.training.checkpoint import save_tensors

    file = tmp_path / "trainable.pt"
    with _FullDisk(file, "wb") as handle, pytest.raises(OSError) as full:
        save_tensors({"w": torch.zeros(10_000)}, file, handle)
    assert full.value.errno == errno.ENOSPC and full.value.filename == str(file)


# -- the sentence encoder ---------------------------------------------------------------------------
def _encoder_with_renamed_weights(tmp_path: Path) -> Path:
    """The embedded encoder's files, linked, with its first layer's weights under other names."""
    from safetensors.torch import load_file, save_file

    from instructerc.retrieval.encoder import embedded_encoder_path

    source = embedded_encoder_path()
    copy = tmp_path / "encoder"
    copy.mkdir()
    for entry in source.iterdir():
        if entry.name != "model.safetensors":
            (copy / entry.name).symlink_to(entry)
    weights = load_file(source / "model.safetensors")
    renamed = {(f"old.{key}" if key.startswith("encoder.layer.0.") else key): value for key, value in weights.items()}
    save_file(renamed, copy / "model.safetensors", metadata={"format": "pt"})
    return copy


def test_an_encoder_whose_weights_are_under_other_names_is_refused_naming_them(tmp_path: Path) -> None:
    # transformers filled the weights it did not find with random values and only logged a
    # warning: retrieval then chose demonstrations with a random encoder.
    from instructerc.retrieval.encoder import SentenceEncoder

    folder = _encoder_with_renamed_weights(tmp_path)

    with pytest.raises(InputError) as refused:
        SentenceEncoder.load(str(folder))

    assert refused.value.path == str(folder)
    assert "lacks 16 of the model's weights" in refused.value.message
    assert "encoder.layer.0.attention.output.LayerNorm.bias" in refused.value.message


def test_the_embedded_encoder_still_loads_without_a_word(caplog, capsys) -> None:
    from instructerc.retrieval.encoder import SentenceEncoder

    with caplog.at_level(logging.WARNING):
        encoder = SentenceEncoder.load()

    assert encoder.dimension == 384
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "LOAD REPORT" not in capsys.readouterr().err
