"""predict and experiment under a multi-process launcher: a group that cannot form is one line, a
process waiting for peers that never come ends on SIGTERM, and a grid's errors, list and report
are said and written once."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_s19_launchers import free_port, our_lines, single_process_env, terminated_while_forming, torchrun
from tiny import write_tiny_base


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid")
    write_tiny_base(root, {"train": 12, "dev": 4, "test": 4}, backbone={"dtype": "float32"}, optim={"micro_batch_size": 4})
    return root


def write_grid(root: Path, name: str, overrides: dict, output_dir: str) -> Path:
    grid = {"name": "tiny", "base": "base.yaml", "output_dir": output_dir, "seeds": [1], "axes": {"fraction": {"1": overrides}}}
    path = root / name
    path.write_text(yaml.safe_dump(grid), encoding="utf-8")
    return path


def by_hand(rank: int, port: int) -> dict[str, str]:
    """The environment of process ``rank`` of two, started by hand (no launcher)."""
    return single_process_env() | {"WORLD_SIZE": "2", "RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


# -- predict --------------------------------------------------------------------------------------


def test_predict_in_a_process_group_that_cannot_be_formed_is_one_line(tmp_path):
    # predict formed its group outside joined_shard: torch's DistNetworkError traceback.
    source = tmp_path / "in.jsonl"
    source.write_text('{"utterances": [{"speaker": "A", "text": "Hi"}]}\n', encoding="utf-8")
    command = [sys.executable, "-m", "instructerc", "predict", "--input", str(source), "--output", str(tmp_path / "out.jsonl")]
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(command, capture_output=True, text=True, env=by_hand(0, port), timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    err = done.stderr.splitlines()
    assert len(err) == 1, done.stderr[-3000:]
    assert err[0].startswith(f"instructerc: error: cannot form the run's process group (MASTER_ADDR 127.0.0.1, MASTER_PORT {port}): ")
    assert "address already in use" in err[0]
    assert not (tmp_path / "out.jsonl").exists()


def test_predict_waiting_for_processes_that_never_come_ends_on_sigterm(tmp_path):
    # Process 0 of two, the other never started: it waited in torch's C++ code, deaf to SIGTERM.
    source = tmp_path / "in.jsonl"
    source.write_text('{"utterances": [{"speaker": "A", "text": "Hi"}]}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("earlier\n", encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "instructerc", "predict", "--input", str(source), "--output", str(out), "--no-progress"]
    returncode, stderr = terminated_while_forming(command, by_hand(0, port), port)
    assert returncode == -signal.SIGTERM, stderr[-3000:]
    assert out.read_text(encoding="utf-8") == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


# -- experiment -------------------------------------------------------------------------------------


def test_a_bad_grid_under_torchrun_is_said_once(grid_root):
    grid = write_grid(grid_root, "bad.yaml", {"data.fractionn": 1.0}, "runs-bad")
    done = torchrun("experiment", grid, "--no-progress", cwd=grid_root)
    assert done.returncode != 0 and "exitcode  : 0" not in done.stderr
    lines = our_lines(done)
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"instructerc: error: {grid}: field 'axes.fraction.1': field 'data' of the recipe: unknown key(s)")
    assert not (grid_root / "runs-bad").exists()


def test_a_bad_only_under_torchrun_is_said_once(grid_root):
    grid = write_grid(grid_root, "grid.yaml", {}, "runs-only")
    done = torchrun("experiment", grid, "--only", "nosuchrun", "--no-progress", cwd=grid_root)
    assert done.returncode != 0
    assert our_lines(done) == [
        f"instructerc: error: {grid}: field 'only': no run of the grid has 'nosuchrun' in its name (runs: fraction=1__seed=1)"
    ], done.stderr[-3000:]


def test_a_grid_whose_runs_miss_their_data_under_torchrun_reports_once(grid_root):
    # Every process met the failed run: each wrote the report and said the failure.
    grid = write_grid(grid_root, "nodata.yaml", {"data.path": str(grid_root / "no-data")}, "runs-nodata")
    done = torchrun("experiment", grid, "--no-progress", cwd=grid_root)
    assert done.returncode != 0 and "exitcode  : 0" not in done.stderr
    assert our_lines(done) == [
        f"instructerc: error: {grid}: 1 run(s) of the grid failed "
        f"(fraction=1__seed=1: {grid_root / 'no-data'}: no such file or folder); the others ran"
    ], done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 2  # the CSV and the Markdown table, by one process
    assert (grid_root / "runs-nodata" / "tiny.md").is_file()


def test_list_under_torchrun_lists_once(grid_root):
    grid = write_grid(grid_root, "grid.yaml", {}, "runs-list")
    done = torchrun("experiment", grid, "--list", cwd=grid_root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["pending"]
    assert not (grid_root / "runs-list").exists()


def test_experiment_in_a_process_group_that_cannot_be_formed_is_one_line(grid_root):
    grid = write_grid(grid_root, "grid.yaml", {}, "runs-port")
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        command = [sys.executable, "-m", "instructerc", "experiment", str(grid), "--no-progress"]
        done = subprocess.run(command, capture_output=True, text=True, env=by_hand(0, port), timeout=120, cwd=grid_root)
    assert done.returncode == 2
    err = done.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("instructerc: error: cannot form the run's process group"), done.stderr[-3000:]
    assert not (grid_root / "runs-port").exists()
