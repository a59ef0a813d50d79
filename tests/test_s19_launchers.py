"""train, evaluate, baseline and serve under a multi-process launcher (torchrun, accelerate launch):
an error every process meets is said once, one-process commands are refused once, and a broken
launcher environment, a process gone mid-run or a wait for processes that never come is one line
or an ended process, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from instructerc.cli.main import main
from instructerc.errors import InputError
from instructerc.inference.sharding import Shard, current_shard

LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def single_process_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in LAUNCHER_VARIABLES} | {"OMP_NUM_THREADS": "1"}


def torchrun(*arguments: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    command = launcher + ["-m", "instructerc", *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, env=single_process_env(), timeout=300, cwd=cwd)


def our_lines(done: subprocess.CompletedProcess) -> list[str]:
    """What the processes of the run said (the launcher's own report left out)."""
    # The launcher's own traceback (ChildFailedError) goes through torch's files alone.
    ours = [line for line in done.stderr.splitlines() if line.lstrip().startswith('File "') and "torch/distributed" not in line]
    assert not [line for line in ours if "<frozen runpy>" not in line], done.stderr[-3000:]
    return [line for line in done.stderr.splitlines() if line.startswith("instructerc:")]


def write_recipe(path: Path, backbone: Path, data: Path, run: Path) -> Path:
    recipe = {
        "data": {"dataset": "jsonl", "path": str(data), "label_set": "meld"},
        "backbone": {"model": str(backbone), "dtype": "float32"},
        "template": {"name": "dialogue-prefix", "demonstration": False},
        "finetune": {"method": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        "optim": {"batch_size": 8, "micro_batch_size": 4},
        "stages": [{"tasks": {"erc": 1.0}, "epochs": 1}],
        "output_dir": str(run),
    }
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


@pytest.fixture
def clean_launcher_env(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- train under a launcher: an error every process meets is said once --------------------------


def test_a_bad_recipe_under_torchrun_is_said_once(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("backbone:\n  model: x\noptimm: 1\n", encoding="utf-8")
    done = torchrun("train", recipe, "--no-progress")
    assert done.returncode != 0 and "exitcode  : 0" not in done.stderr
    lines = our_lines(done)
    assert len(lines) == 1 and lines[0].startswith(f"instructerc: error: {recipe}:3: unknown key(s) ['optimm']"), done.stderr[-3000:]


def test_a_bad_set_under_torchrun_is_said_once(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}\n", encoding="utf-8")
    done = torchrun("train", recipe, "--set", "optim.lr=[", "--no-progress")
    assert done.returncode != 0
    assert our_lines(done) == [
        "instructerc: error: --set optim.lr: '[' is not a YAML value (expected the node content, but found '<stream end>')"
    ]


def test_missing_data_found_inside_the_run_under_torchrun_is_said_once(tmp_path, backbone):
    # Found by the trainer after the processes have formed their group, not by the recipe's check.
    recipe = write_recipe(tmp_path / "recipe.yaml", backbone, tmp_path / "no-data", tmp_path / "run")
    done = torchrun("train", recipe, "--no-progress")
    assert done.returncode != 0 and "exitcode  : 0" not in done.stderr
    assert our_lines(done) == [f"instructerc: error: {tmp_path / 'no-data'}: no such file or folder"], done.stderr[-3000:]
    assert not (tmp_path / "run" / "model").exists()


def test_a_bad_set_is_named_as_the_option_not_as_a_field(tmp_path, clean_launcher_env, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}\n", encoding="utf-8")
    assert main(["train", str(recipe), "--set", "optim"]) == 2
    assert capsys.readouterr().err == "instructerc: error: --set expects KEY=VALUE, got 'optim'\n"


# -- a broken launcher environment ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            {"WORLD_SIZE": "2"},
            "environment variable RANK is not set while WORLD_SIZE is 2: start the processes with torchrun or accelerate launch",
        ),
        ({"WORLD_SIZE": "2", "RANK": "3", "MASTER_ADDR": "127.0.0.1"}, "environment variable RANK (3) must be below WORLD_SIZE (2)"),
        ({"LOCAL_RANK": "1"}, "environment variable LOCAL_RANK is set (1) but no launcher started this process"),
        ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "no-such-host.invalid"}, "environment variable MASTER_ADDR names no host"),
        (
            {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "70000"},
            "environment variable MASTER_PORT must be a whole number from 1 to 65535, got '70000'",
        ),
    ],
)
def test_train_in_a_broken_launcher_environment_is_one_line(tmp_path, clean_launcher_env, capsys, environment, message):
    # Each used to end in accelerate's or torch's traceback, or (an unknown host) to retry for half an hour.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}\n", encoding="utf-8")
    for name, value in environment.items():
        clean_launcher_env.setenv(name, value)
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"instructerc: error: {message}")


def test_a_bad_master_address_or_port_is_named_for_predict_too(clean_launcher_env):
    clean_launcher_env.setenv("WORLD_SIZE", "2")
    clean_launcher_env.setenv("RANK", "0")
    clean_launcher_env.setenv("MASTER_ADDR", "127.0.0.1")
    clean_launcher_env.setenv("MASTER_PORT", "port")
    with pytest.raises(InputError, match="MASTER_PORT must be a whole number from 1 to 65535, got 'port'"):
        current_shard()


def test_a_process_waiting_for_processes_that_never_come_ends_on_sigterm(tmp_path, backbone, tiny_data):
    # WORLD_SIZE 2 but no process 1: torch waits in C++ for it, where Python's handlers never run.
    recipe = write_recipe(tmp_path / "recipe.yaml", backbone, tiny_data, tmp_path / "run")
    port = free_port()
    env = single_process_env() | {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    returncode, stderr = terminated_while_forming([sys.executable, "-m", "instructerc", "train", str(recipe), "--no-progress"], env, port)
    assert returncode == -signal.SIGTERM, stderr[-3000:]
    assert not (tmp_path / "run").exists()


def terminated_while_forming(command: list[str], env: dict[str, str], port: int) -> tuple[int, str]:
    """(exit code, stderr) of ``command`` (process 0 of a run) sent SIGTERM while it forms the group on ``port``."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_listening(process, port)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stderr


def wait_until_listening(process: subprocess.Popen, port: int) -> None:
    """Until ``process`` (process 0 of a run) holds the run's store on ``port``: it is then forming
    the process group."""
    import psutil

    watched = psutil.Process(process.pid)
    for _ in range(1200):  # a bound, not a measure: a process that never gets there fails the test
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in watched.net_connections(kind="tcp")):
            return
        assert process.poll() is None, process.stderr.read()[-3000:] if process.stderr else ""
        time.sleep(0.1)
    pytest.fail(f"process 0 never listened on port {port}")


# -- a process gone mid-run ---------------------------------------------------------------------------


def test_a_process_that_finds_another_gone_in_training_stops_with_one_line(tmp_path, clean_launcher_env, capsys, monkeypatch):
    # Started by hand (no launcher stops the others), the survivor of a killed process got the
    # backend's RuntimeError traceback from its next collective.
    import torch.distributed as dist

    from instructerc.training.trainer import Trainer

    def peer_killed(self, resume=False):
        raise RuntimeError(
            "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:37785. "
            "This is typically caused by a remote worker crashing."
        )

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "backbone": {"model": str(tmp_path)}}), encoding="utf-8")
    monkeypatch.setattr(Trainer, "run", peer_killed)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        assert main(["train", str(recipe), "--no-progress"]) == 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    err = capsys.readouterr().err
    assert err == (
        f"instructerc: error: {tmp_path / 'run'}: stopped: another process of the run ended before finishing "
        "(its error is above, or it was killed)\n"
    )


def test_a_bug_is_not_taken_for_a_process_gone(tmp_path, clean_launcher_env, monkeypatch):
    from instructerc.training.trainer import Trainer

    def bug(self, resume=False):
        raise RuntimeError("Connection closed by peer")  # no process group: not the backend's word

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "backbone": {"model": str(tmp_path)}}), encoding="utf-8")
    monkeypatch.setattr(Trainer, "run", bug)
    with pytest.raises(RuntimeError, match="closed by peer"):
        main(["train", str(recipe), "--no-progress"])


class Gone(Shard):
    """A shard whose barrier finds the other processes gone, or not answering in time."""

    def failed_ranks(self, failed: bool) -> list[int] | None:
        return None


def test_a_failure_the_others_do_not_answer_is_said_by_the_process_itself():
    # Under training, the others may be in a collective waiting for this process: the barrier
    # times out, and this process's own error is said rather than a "stopped" line.
    from instructerc.inference.sharding import said_once

    def missing() -> None:
        raise InputError("no such file or folder", path="data")

    with pytest.raises(InputError, match="no such file or folder"):
        said_once(Gone(1, 2), missing)


# -- one-process commands under a launcher are refused once ------------------------------------------


def test_serve_under_torchrun_is_refused_once(tmp_path):
    done = torchrun("serve", "--model", tmp_path)
    assert done.returncode != 0 and "exitcode  : 0" not in done.stderr
    lines = our_lines(done)
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("instructerc: error: serve runs as one process, but a launcher (torchrun, accelerate launch) started 2")
    assert "every process would bind the same port" in lines[0] and "--port" in lines[0] and "load balancer" in lines[0]


@pytest.mark.parametrize("command", ["evaluate", "baseline"])
def test_evaluate_and_baseline_under_torchrun_are_refused_once_and_write_nothing(tmp_path, tiny_data, command):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"earlier": True}), encoding="utf-8")
    done = torchrun(command, "--dataset", "jsonl", "--data", tiny_data, "--split", "dev", "--out", out)
    assert done.returncode != 0 and "exitcode  : 0" not in done.stderr
    lines = our_lines(done)
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"instructerc: error: {command} runs as one process, but a launcher")
    assert "Run it without torchrun or accelerate launch" in lines[0]
    assert [p.name for p in out.iterdir()] == ["metrics.json"] and json.loads((out / "metrics.json").read_text()) == {"earlier": True}


@pytest.mark.parametrize("command", [["train", "recipe.yaml"], ["serve"]])
def test_a_process_group_that_cannot_be_formed_is_one_line_naming_where(tmp_path, command):
    # Process 0 of a run started by hand, on a port something else holds: torch's traceback.
    (tmp_path / "recipe.yaml").write_text("{}\n", encoding="utf-8")
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = single_process_env() | {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        done = subprocess.run(
            [sys.executable, "-m", "instructerc", *command], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
        )
    assert done.returncode == 2
    err = done.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"instructerc: error: cannot form the run's process group (MASTER_ADDR 127.0.0.1, MASTER_PORT {port}): "
    )
    assert "address already in use" in err[0]
