"""A grid under a multi-process launcher: the processes agree on each run's outcome and go on (or
stop) together, the first process alone says what happens and scores the runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_s19_launchers import free_port, our_lines, single_process_env
from test_s19_launchers2 import by_hand
from tiny import write_tiny_base

# Runs the grid as ``instructerc experiment`` does, with one process's work broken on purpose
# (argv: what to break, a file each evaluation appends its process's rank to, the command's arguments).
DRIVER = """
import os
import sys

import instructerc.distributed as distributed
from instructerc.cli.main import main
from instructerc.errors import InputError
from instructerc.experiments import runner
from instructerc.training.trainer import Trainer

distributed.SAME_FAILURE_SECONDS = 5.0  # a process that failed alone need not wait a minute here
broken, log, arguments = sys.argv[1], sys.argv[2], sys.argv[3:]
rank = int(os.environ["RANK"])
evaluate_run = runner.evaluate_run


def logged(directory, *args, **kwargs):
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"{rank}\\n")
    if broken == "scoring" and rank == 0 and "fraction=a" in (directory / "spec.json").read_text(encoding="utf-8"):
        raise InputError("the evaluation split cannot be read", path="test.jsonl")
    return evaluate_run(directory, *args, **kwargs)


def step_fails(*args, **kwargs):
    raise InputError("this machine lost its disk", path="/scratch")


runner.evaluate_run = logged
if broken == "training" and rank == 1:
    Trainer._train_step = step_fails
sys.exit(main(["experiment", *arguments]))
"""


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory) -> Path:
    """A folder with a tiny backbone, tiny data and a base recipe for grids (see test_s19_launchers2)."""
    root = tmp_path_factory.mktemp("grid")
    write_tiny_base(root, {"train": 12, "dev": 4, "test": 4}, backbone={"dtype": "float32"}, optim={"micro_batch_size": 4})
    return root


def two_run_grid(root: Path, name: str, first: dict, output_dir: str) -> Path:
    """A grid of two runs: ``a`` (with the overrides ``first``), then ``b`` (the base recipe)."""
    grid = {"name": "tiny", "base": "base.yaml", "output_dir": output_dir, "seeds": [1], "axes": {"fraction": {"a": first, "b": {}}}}
    path = root / name
    path.write_text(yaml.safe_dump(grid), encoding="utf-8")
    return path


def driven(root: Path, broken: str, grid: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The grid under torchrun (two CPU processes), and the ranks of the evaluations, in order."""
    driver, log = root / "driver.py", root / f"{grid.stem}-evaluated.txt"
    driver.write_text(DRIVER, encoding="utf-8")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    command = launcher + [str(driver), broken, str(log), str(grid), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, env=single_process_env(), timeout=300, cwd=root)
    return done, log.read_text(encoding="utf-8").split() if log.is_file() else []


def test_a_run_that_fails_alike_is_said_once_and_the_next_is_scored_by_the_first_process(grid_root):
    # Both processes printed every "[i/n]" line, and both evaluated the run and wrote its files.
    grid = two_run_grid(grid_root, "alike.yaml", {"data.path": str(grid_root / "no-data")}, "runs-alike")
    done, evaluated = driven(grid_root, "nothing", grid)
    assert done.returncode != 0 and "exitcode  : 0" not in done.stderr
    assert our_lines(done) == [
        f"instructerc: error: {grid}: 1 run(s) of the grid failed "
        f"(fraction=a__seed=1: {grid_root / 'no-data'}: no such file or folder); the others ran"
    ], done.stderr[-3000:]
    progress = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert [line.split(" (")[0] + line.split(")")[-1] for line in progress] == [
        "[1/2] fraction=a__seed=1: running",
        "[2/2] fraction=b__seed=1: running",
    ]
    assert done.stderr.count(": failed: ") == 1
    assert evaluated == ["0"]
    assert len(list((grid_root / "runs-alike").glob("run-*/result.json"))) == 1
    assert "| b | data | 1 |" in (grid_root / "runs-alike" / "tiny.md").read_text(encoding="utf-8")


def test_a_scoring_that_fails_in_the_first_process_is_a_failed_run_for_every_process(grid_root):
    # The others did not know it failed: they went on as if run a had finished.
    grid = two_run_grid(grid_root, "scoring.yaml", {"optim.lr": 0.02}, "runs-scoring")
    done, evaluated = driven(grid_root, "scoring", grid)
    assert done.returncode != 0 and "exitcode  : 0" not in done.stderr
    assert our_lines(done) == [
        f"instructerc: error: {grid}: 1 run(s) of the grid failed "
        "(fraction=a__seed=1: test.jsonl: the evaluation split cannot be read); the others ran"
    ], done.stderr[-3000:]
    assert evaluated == ["0", "0"]
    assert len(list((grid_root / "runs-scoring").glob("run-*/result.json"))) == 1


def test_a_run_that_fails_in_one_process_mid_training_stops_the_grid_in_both(grid_root):
    # The failed process went on to the next step of the grid while the other was still in the
    # run's training collectives: they paired the wrong operations, or waited for ever.
    # Started by hand (no launcher ends the other), each says one line and ends.
    grid = two_run_grid(grid_root, "alone.yaml", {"optim.lr": 0.03}, "runs-alone")
    driver, log = grid_root / "driver.py", grid_root / "alone-evaluated.txt"
    driver.write_text(DRIVER, encoding="utf-8")
    port = free_port()
    command = [sys.executable, str(driver), "training", str(log), str(grid), "--no-progress"]
    processes = [
        subprocess.Popen(command, env=by_hand(rank, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=grid_root)
        for rank in range(2)
    ]
    try:
        outputs = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    run = next((grid_root / "runs-alone").glob("run-*"))
    assert [process.returncode for process in processes] == [2, 2], outputs
    lines = [[line for line in err.splitlines() if line.startswith("instructerc:")] for _, err in outputs]
    assert lines[0][-1] == (
        f"instructerc: error: {run}: stopped: another process of the grid ended before finishing (its error is above, or it was killed)"
    ), outputs[0][1][-3000:]
    assert lines[1] == [
        f"instructerc: error: {run}: run fraction=a__seed=1 failed in process 1 of 2 alone, while the others were still training it, "
        "so the grid stopped: /scratch: this machine lost its disk"
    ], outputs[1][1][-3000:]
    assert all("Traceback" not in err for _, err in outputs), outputs
    assert not log.exists()  # neither went on to score or to the next run
    assert "[2/2]" not in outputs[0][0]
