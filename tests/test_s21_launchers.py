"""Processes started by a launcher other than torchrun (mpirun, srun) join one process group rather
than each run the whole job alone, and a process whose peers never join the group stops after a
bounded wait, not torch's half hour."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from instructerc.cli.main import main
from instructerc.distributed import launched_world_size
from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from test_predict_processes import write_input
from test_s19_launchers import free_port, single_process_env
from tiny import tiny_model_dir

OPEN_MPI = ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE")
MPICH = ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")
SRUN = ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_TASKS_PER_NODE")


def launched_by(names: tuple[str, ...], rank: int, world: int = 2, port: int | None = None) -> dict[str, str]:
    """The variables ``names`` (world, rank, local rank, local world) of process ``rank``; with
    ``port``, where the processes meet too."""
    given = dict(zip(names, (str(world), str(rank), str(rank), str(world))))
    if port is not None:
        given |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    return given


@pytest.fixture
def environ(monkeypatch):
    """A process environment of its own (what the code under test adds to it goes with it)."""
    own = {name: value for name, value in os.environ.items() if not name.startswith(("OMPI_", "PMI_", "MPI_", "MV2_", "SLURM_"))}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        own.pop(name, None)
    monkeypatch.setattr(os, "environ", own)
    return own


@pytest.mark.parametrize("names", [OPEN_MPI, MPICH, SRUN], ids=["open-mpi", "mpich", "srun"])
def test_a_process_started_by_mpirun_or_srun_gets_torchruns_variables(environ, names):
    environ.update(launched_by(names, rank=1, port=29511))
    assert launched_world_size() == 2
    assert (environ["WORLD_SIZE"], environ["RANK"], environ["LOCAL_RANK"], environ["LOCAL_WORLD_SIZE"]) == ("2", "1", "1", "2")


@pytest.mark.parametrize("names", [OPEN_MPI, MPICH, SRUN], ids=["open-mpi", "mpich", "srun"])
def test_mpirun_or_srun_without_where_to_meet_is_refused_naming_what_is_missing(environ, names):
    environ.update(launched_by(names, rank=0) | {"MASTER_ADDR": "127.0.0.1"})
    with pytest.raises(InputError) as caught:
        launched_world_size()
    message = str(caught.value)
    assert f"one of 2 ({names[0]} is 2)" in message and "environment variable MASTER_PORT is not set" in message
    assert "RANK" not in environ  # nothing adopted: the command stops here


def test_mpirun_without_master_addr_or_port_stops_predict_with_one_line(environ, tmp_path, capsys):
    environ.update(launched_by(OPEN_MPI, rank=1))
    out = tmp_path / "out.jsonl"
    status = main(["predict", "--input", str(write_input(tmp_path / "in.jsonl", 2)), "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and not out.exists()
    assert len(err) == 1 and err[0].startswith("instructerc: error: mpirun (Open MPI) started this process as one of 2")
    assert "environment variables MASTER_ADDR and MASTER_PORT are not set" in err[0]


def test_a_batch_script_given_several_tasks_runs_as_one_process(environ):
    # sbatch --ntasks=4 runs its script once: SLURM_NTASKS and SLURM_PROCID are set, no step's count.
    environ.update({"SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"})
    assert launched_world_size() == 1
    assert "RANK" not in environ


def test_torchruns_variables_win_over_the_mpi_launchers(environ):
    port = free_port()
    environ.update(launched_by(OPEN_MPI, rank=1, port=port) | {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    assert launched_world_size() == 2
    assert environ["RANK"] == "0"


@pytest.mark.parametrize(("variable", "value"), [("OMPI_COMM_WORLD_RANK", "one"), ("OMPI_COMM_WORLD_SIZE", "-2")])
def test_a_malformed_mpi_variable_is_named(environ, variable, value):
    environ.update(launched_by(OPEN_MPI, rank=1, port=29511) | {variable: value})
    with pytest.raises(InputError, match=f"environment variable {variable} must be a whole number"):
        launched_world_size()


def test_slurm_tasks_spread_unevenly_leave_the_local_world_size_unsaid(environ):
    environ.update(launched_by(SRUN, rank=1, port=29511) | {"SLURM_STEP_TASKS_PER_NODE": "2,1"})
    assert launched_world_size() == 2
    assert "LOCAL_WORLD_SIZE" not in environ


def by_launcher(names: tuple[str, ...], rank: int, port: int) -> dict[str, str]:
    return single_process_env() | launched_by(names, rank, port=port)


@pytest.mark.parametrize("names", [OPEN_MPI, SRUN], ids=["open-mpi", "srun"])
def test_predict_started_by_mpirun_or_srun_shares_the_work_and_writes_one_output(tmp_path, names):
    # Each process ran the whole input alone and wrote the same output.
    model = tiny_model_dir(tmp_path / "model", MELD, TemplateConfig(name="dialogue-stream", demonstration=False))
    source = write_input(tmp_path / "in.jsonl", 5)
    options = ["--model", str(model), "--input", str(source), "--chunk-size", "2", "--no-progress"]
    command = [sys.executable, "-m", "instructerc", "predict", *options]
    alone = subprocess.run(
        [*command, "--output", "one.jsonl"], capture_output=True, text=True, env=single_process_env(), cwd=tmp_path, timeout=300
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    port = free_port()
    started = [
        subprocess.Popen(
            [*command, "--output", "two.jsonl"],
            env=by_launcher(names, rank, port),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    done = [process.communicate(timeout=300) + (process.returncode,) for process in started]
    assert [status for _, _, status in done] == [0, 0], [err[-3000:] for _, err, _ in done]
    said = [line for out, _, _ in done for line in out.splitlines() if line.startswith("wrote")]
    assert len(said) == 1 and said[0].endswith(", 2 processes)")
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl", "model", "one.jsonl", "two.jsonl"]


# The CLI with a short join, as a user's wait would end after JOIN_SECONDS.
SHORT_JOIN = (
    "import sys, instructerc.inference.sharding as s; s.JOIN_SECONDS = 2.0; "
    "from instructerc.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("rank", [0, 1])
def test_a_process_whose_peers_never_join_stops_with_one_error(tmp_path, rank):
    # Process 0 waited for the missing one (and process 1 for a missing process 0) for half an hour.
    source = write_input(tmp_path / "in.jsonl", 1)
    out = tmp_path / "out.jsonl"
    out.write_text("earlier\n", encoding="utf-8")
    port = free_port()
    env = single_process_env() | {"WORLD_SIZE": "2", "RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    command = [sys.executable, "-c", SHORT_JOIN, "predict", "--input", str(source), "--output", str(out), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    ours = [line for line in done.stderr.splitlines() if line.startswith("instructerc:")]
    assert ours == [
        line
        for line in ours
        if line.startswith(f"instructerc: error: cannot form the run's process group (MASTER_ADDR 127.0.0.1, MASTER_PORT {port}): ")
    ]
    assert len(ours) == 1 and "Traceback" not in done.stderr
    assert ("1/2 clients joined" in ours[0]) if rank == 0 else ("timed out" in ours[0])
    assert out.read_text(encoding="utf-8") == "earlier\n"
