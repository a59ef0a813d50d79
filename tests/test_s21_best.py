"""The run folder's saves under a stop at each write (Ctrl-C, a kill, a full disk): the dev-best
weights and their metrics change together, on one process or sharded over two (FSDP), the swap
itself cut short leaves the previous best to resume with, and checkpoints cut short while being
pruned are pruned again. Each time the earlier state stays readable and ``--resume`` goes on."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from instructerc.training import run_directory
from instructerc.training.checkpoint import latest_checkpoint, prune_checkpoints
from instructerc.training.config import TrainConfig
from instructerc.training.trainer import Trainer
from test_s20_training import scripted
from tiny import write_tiny_base

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_base(tmp_path_factory.mktemp("s21-best"), {"train": 8, "dev": 3}, optim={"batch_size": 2, "micro_batch_size": 2})


def short_run(recipe: Path, run: Path) -> TrainConfig:
    """Half an epoch (8 steps), dev scored after each, a checkpoint every second step."""
    overrides = {"output_dir": str(run), "checkpoint_every_steps": 2, "eval_every_steps": 1, "stages[0].epochs": 0.5}
    return TrainConfig.from_yaml(recipe, overrides)


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def snapshotting(scores: list[float], best: Path, copy: Path) -> Any:
    """Scripted dev scores; as the third is asked for, ``best`` (step 1's: the 2nd scored lower) is copied to ``copy``."""
    inner = scripted(scores)
    asked: list[int] = []

    def scoring(dev: Any) -> Any:
        score = inner(dev)

        def scored(model: Any) -> Any:
            asked.append(1)
            if len(asked) == 3:
                shutil.copytree(best, copy)
            return score(model)

        return scored

    return scoring


def stop_at_step_3_metrics(obj: Any, *args: Any, **kwargs: Any) -> None:
    """``json.dump`` stopped (Ctrl-C) as it writes step 3's dev metrics, once its weights are written."""
    if isinstance(obj, dict) and obj.get("step") == 3 and "by_dataset" in obj:
        raise KeyboardInterrupt
    return _real_dump(obj, *args, **kwargs)


_real_dump = json.dump


def assert_resumes_with_the_step_1_best(config: TrainConfig, run: Path, step_1: dict[str, bytes]) -> None:
    """Resumed, with dev scores lower than all before: step 1's weights and metrics are the model."""
    result = Trainer(config, progress=False, dev_scoring=scripted([30.0] * 10)).run(resume=True)
    assert (result.best_step, result.best_dev_score) == (1, 50.0)
    assert result.dev_metrics["step"] == 1
    assert files_of(run / "best") == step_1
    assert json.loads((run / "model" / "dev_metrics.json").read_text(encoding="utf-8"))["step"] == 1


# -- best/ on one process ---------------------------------------------------------------------------
def test_a_stop_between_the_best_weights_and_their_metrics_keeps_the_previous_best_whole(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # best/trainable.pt was step 3's and best/dev_metrics.json still step 1's: resumed on scores
    # lower than both, the run shipped step 3's weights as the model, its card saying step 1.
    run = tmp_path / "run"
    config = short_run(recipe, run)
    monkeypatch.setattr(json, "dump", stop_at_step_3_metrics)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, progress=False, dev_scoring=snapshotting([50.0, 40.0, 90.0], run / "best", tmp_path / "step-1")).run()
    monkeypatch.undo()

    step_1 = files_of(tmp_path / "step-1")
    assert files_of(run / "best") == step_1
    assert sorted(p.name for p in run.iterdir()) == ["best", "checkpoints", "config.yaml", "metrics.jsonl"]  # no staging left
    assert_resumes_with_the_step_1_best(config, run, step_1)


def test_a_full_disk_under_the_best_weights_keeps_the_previous_best_whole(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    config = short_run(recipe, run)
    real = run_directory.save_tensors

    def full_at_step_3(data: Any, file: Path, handle: Any = None) -> None:
        if len(scores_asked) == 3:
            file.write_bytes(b"PK\x03\x04 cut short")
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        real(data, file, handle)

    scoring = snapshotting([50.0, 40.0, 90.0], run / "best", tmp_path / "step-1")
    scores_asked: list[int] = []

    def counting(dev: Any) -> Any:
        score = scoring(dev)
        return lambda model: (scores_asked.append(1), score(model))[1]

    monkeypatch.setattr(run_directory, "save_tensors", full_at_step_3)
    with pytest.raises(OSError, match="No space left"):
        Trainer(config, progress=False, dev_scoring=counting).run()
    monkeypatch.undo()

    step_1 = files_of(tmp_path / "step-1")
    assert files_of(run / "best") == step_1
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # the half-written copy took no space
    assert_resumes_with_the_step_1_best(config, run, step_1)


def test_a_stop_in_the_middle_of_the_swap_resumes_with_the_previous_best(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The previous best moved aside, the new one not yet in its place: the resume found no best
    # weights ('missing: the run's best weights; train again'), hours of training lost.
    run = tmp_path / "run"
    config = short_run(recipe, run)

    real = run_directory.replace_directory

    def moved_aside_then_stopped(staging: Path, target: Path) -> None:
        if not target.exists():
            return real(staging, target)  # the first best: nothing to set aside
        target.rename(target.with_name(f".{target.name}.old"))
        raise KeyboardInterrupt

    monkeypatch.setattr(run_directory, "replace_directory", moved_aside_then_stopped, raising=False)
    with pytest.raises(KeyboardInterrupt):
        scoring = snapshotting([50.0, 40.0, 90.0], run / "best", tmp_path / "step-1")
        Trainer(config, progress=False, dev_scoring=scoring, stop_after_steps=3).run()
    monkeypatch.undo()
    assert not (run / "best").exists()

    assert_resumes_with_the_step_1_best(config, run, files_of(tmp_path / "step-1"))


def test_a_best_folder_deleted_by_hand_is_not_replaced_by_a_set_aside_copy_missing_its_metrics(tmp_path: Path) -> None:
    earlier = tmp_path / ".best.old"
    earlier.mkdir()
    (earlier / "trainable.pt").write_bytes(b"weights")
    run_directory.recover_best(tmp_path / "best")
    assert not (tmp_path / "best").exists()
    (earlier / "dev_metrics.json").write_text("{}", encoding="utf-8")
    run_directory.recover_best(tmp_path / "best")
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["dev_metrics.json", "trainable.pt"]


# -- checkpoints --------------------------------------------------------------------------------------
def test_a_checkpoint_left_half_deleted_by_a_stop_is_pruned_with_the_next_one(recipe: Path, tmp_path: Path) -> None:
    # Without its state.json it was no checkpoint to prune: it kept its space for good.
    run = tmp_path / "run"
    config = short_run(recipe, run)
    Trainer(config, progress=False, dev_scoring=scripted([50.0, 40.0, 90.0]), stop_after_steps=3).run()
    checkpoints = run / "checkpoints"
    half = checkpoints / "step-0000001"
    half.mkdir()
    (half / "optim.pt").write_bytes(b"left over")
    staged = checkpoints / ".step-0000001.tmp"  # a save cut short
    staged.mkdir()

    Trainer(config, progress=False, dev_scoring=scripted([30.0] * 10)).run(resume=True)

    last = latest_checkpoint(checkpoints)
    assert last is not None and sorted(p.name for p in checkpoints.iterdir()) == [last.name]


def test_pruning_removes_each_folder_out_of_the_way_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stop while deleting left a folder that still held its state.json: it read as a checkpoint.
    for step in (1, 2):
        folder = tmp_path / f"step-000000{step}"
        folder.mkdir()
        for name in ("trainable.pt", "optim.pt", "state.json"):
            (folder / name).write_text("{}", encoding="utf-8")
    from instructerc.training import checkpoint

    def stopped(path: Path, ignore_errors: bool = False) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.shutil, "rmtree", stopped)
    with pytest.raises(KeyboardInterrupt):
        prune_checkpoints(tmp_path, keep=1)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".step-0000001.pruned", "step-0000002"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-0000002"

    prune_checkpoints(tmp_path, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000002"]


# -- best/ sharded over two processes (FSDP) -----------------------------------------------------------
DRIVER = """
import json, os, shutil, sys, traceback
from pathlib import Path
sys.path.insert(0, {tests!r})
from instructerc.cli.process_group import end_process_group, exit_group_member
from instructerc.training import fsdp
from instructerc.training.config import TrainConfig
from instructerc.training.trainer import Trainer
import test_s21_best as here

recipe, mode = sys.argv[1], sys.argv[2]
rank = int(os.environ["RANK"])
config = TrainConfig.from_yaml(recipe)
best = Path(config.output_dir) / "best"
if mode == "resume":
    scoring, resume, stop = here.scripted([30.0] * 100), True, None
else:
    scoring, resume, stop = here.snapshotting([50.0, 40.0, 90.0], best, best.parent.parent / ("step-1-" + str(rank))), False, 3
if mode == "main-stops":
    json.dump = here.stop_at_step_3_metrics
if mode == "rank-1-fails" and rank == 1:
    real_save = fsdp.save_sharded
    def save(directory, model, optimizer=None):
        if here.shards_saved.append(1) or len(here.shards_saved) == 3:  # best 1, checkpoint 2, best 3
            raise OSError(28, "No space left on device")
        real_save(directory, model, optimizer)
    fsdp.save_sharded = save
try:
    Trainer(config, progress=False, stop_after_steps=stop, dev_scoring=scoring).run(resume=resume)
except BaseException:
    traceback.print_exc()
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(3)
in_group = end_process_group()
if in_group:
    exit_group_member(0)
"""
shards_saved: list[int] = []  # the driver's count of best saves on one process


def launch(driver: Path, recipe: Path, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = str(29600 + (os.getpid() + len(mode) * 7 + len(str(recipe))) % 300)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        port,
        str(driver),
        str(recipe),
        mode,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=TESTS)


def sharded_recipe(recipe: Path, run: Path) -> Path:
    data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    data["backbone"]["dtype"] = "float32"
    data["distributed"] = {"strategy": "fsdp"}
    data["optim"] = {**data["optim"], "batch_size": 2, "micro_batch_size": 1}
    data["stages"] = [{"tasks": {"erc": 1.0}, "epochs": 0.5}]
    data.update(output_dir=str(run), checkpoint_every_steps=2, eval_every_steps=1)
    path = run.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("mode", ["main-stops", "rank-1-fails"])
def test_a_sharded_best_cut_short_on_any_process_keeps_the_previous_best_whole(recipe: Path, tmp_path: Path, mode: str) -> None:
    # The main process swapped the new shards in, then was stopped writing their metrics: step
    # 3's shards beside step 1's metrics, shipped as step 1's model on a resume.
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(TESTS)), encoding="utf-8")
    run = tmp_path / "run"
    config = sharded_recipe(recipe, run)

    stopped = launch(driver, config, mode)

    assert stopped.returncode != 0
    assert ("KeyboardInterrupt" if mode == "main-stops" else "No space left on device") in stopped.stderr
    assert "in _save_best" in stopped.stderr  # stopped saving the best weights of step 3, not a checkpoint
    step_1 = files_of(tmp_path / "step-1-0")
    assert "sharded/.metadata" in step_1 and json.loads(step_1["dev_metrics.json"])["step"] == 1
    assert files_of(run / "best") == step_1
    if mode == "rank-1-fails":
        return  # the same resume as below
    resumed = launch(driver, config, "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step-0000002" in resumed.stdout
    assert files_of(run / "best") == step_1
    assert json.loads((run / "model" / "dev_metrics.json").read_text(encoding="utf-8"))["step"] == 1
    done = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()][-1]
    assert (done["event"], done["best_step"]) == ("done", 1)
