"""Errors met before a run's process group exists (a mistyped option, a missing extra) are said
once under a multi-process launcher, by the process of RANK 0, and the last words of a failing run
are not lost to the launcher stopping the process about to say them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from instructerc import extras
from instructerc.cli.main import main
from instructerc.inference.sharding import wait_to_be_stopped
from test_s19_launchers import LAUNCHER_VARIABLES, free_port, our_lines, single_process_env, torchrun

SILENT_ERROR = "instructerc predict: error: the following arguments are required: --input"


def torchrun_code(code: str, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """Two processes of ``python -c code ARGUMENTS`` under torchrun (for what ``-m instructerc`` cannot set up)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    command = launcher + ["--no-python", sys.executable, "-c", code, *arguments]
    return subprocess.run(command, capture_output=True, text=True, env=single_process_env(), timeout=300, cwd=cwd)


def without(modules: tuple[str, ...]) -> str:
    """A program running the CLI on its arguments where ``modules`` cannot be imported."""
    return (
        f"import sys\nsys.modules.update(dict.fromkeys({modules!r}))\nfrom instructerc.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    )


def both_exited_with(done: subprocess.CompletedProcess, status: int) -> bool:
    """The run failed with ``status`` and no process finished as if all was well (the launcher
    lists the processes it did not stop itself)."""
    return done.returncode != 0 and f"exitcode  : {status} " in done.stderr and "exitcode  : 0" not in done.stderr


# -- under torchrun: said once ----------------------------------------------------------------------


def test_a_mistyped_option_under_torchrun_is_said_once(tmp_path):
    done = torchrun("predict", "--inptu", "in.jsonl", "--output", "out.jsonl", cwd=tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("instructerc predict: error:")]
    assert errors == [f"{SILENT_ERROR}; unrecognized arguments: --inptu (did you mean --input?)"], done.stderr[-3000:]
    assert done.stderr.count("usage: instructerc predict") == 1
    assert both_exited_with(done, 2), done.stderr[-3000:]


def test_a_missing_extra_under_torchrun_is_said_once(tmp_path):
    done = torchrun_code(without(("numpy", "transformers")), "predict", "--input", "in.jsonl", "--output", "out.jsonl", cwd=tmp_path)
    assert our_lines(done) == [
        "instructerc: error: predict needs the 'train' extra (not installed: numpy, transformers): "
        "pip install torch (the build for your hardware, see README), then pip install 'instructerc[train]'"
    ], done.stderr[-3000:]
    assert both_exited_with(done, 2), done.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []


def test_a_library_of_an_extra_missing_at_its_import_under_torchrun_is_said_once(tmp_path):
    # Not checked up front: train imports accelerate to form its group, and main names the extra.
    (tmp_path / "recipe.yaml").write_text("{}\n", encoding="utf-8")
    done = torchrun_code(without(("accelerate",)), "train", "recipe.yaml", "--no-progress", cwd=tmp_path)
    lines = our_lines(done)
    assert len(lines) == 1 and lines[0].startswith("instructerc: error: train needs the 'train' extra (not installed: accelerate)"), (
        done.stderr[-3000:]
    )
    assert both_exited_with(done, 2), done.stderr[-3000:]


# What makes the first process slow between ending its process group and saying its error (a
# loaded machine): without the wait, the other process left when the group ended, and the
# launcher stopped this one with SIGTERM before it said why ("instructerc: terminated (SIGTERM)").
SLOW_END = """import os, sys, time
import torch.distributed as dist
end = dist.destroy_process_group
def slow_end(*args, **kwargs):
    end(*args, **kwargs)
    if os.environ["RANK"] == "0":
        time.sleep(2)
dist.destroy_process_group = slow_end
if sys.argv[1] == "--fail-in-0":
    del sys.argv[1]
    if os.environ["RANK"] == "0":
        from instructerc.cli import predict_commands
        from instructerc.errors import InputError
        def fails_here(args):
            raise InputError("fails in process 0 alone", path=args.input)
        predict_commands._checked_input = fails_here
from instructerc.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_first_process_says_why_even_when_slow_to_end_its_group(tmp_path):
    missing = tmp_path / "no-such-input.jsonl"
    done = torchrun_code(SLOW_END, "predict", "--input", str(missing), "--output", "out.jsonl", "--model", str(tmp_path), cwd=tmp_path)
    lines = our_lines(done)
    assert len(lines) == 1 and lines[0].startswith(f"instructerc: error: {missing}: "), done.stderr[-3000:]
    assert "terminated" not in done.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_a_failure_of_the_first_process_alone_is_said_before_the_others_stop(tmp_path, tiny_data):
    # The other process did not fail: it stops naming process 0, whose error must be there.
    arguments = ("--input", str(tiny_data / "dev.jsonl"), "--output", "out.jsonl", "--model", str(tmp_path))
    done = torchrun_code(SLOW_END, "--fail-in-0", "predict", *arguments, cwd=tmp_path)
    assert our_lines(done) == [
        f"instructerc: error: {tiny_data / 'dev.jsonl'}: fails in process 0 alone",
        "instructerc: error: out.jsonl: stopped: process 0 of 2 failed (its error is above); the output was not written",
    ], done.stderr[-3000:]
    assert "terminated" not in done.stderr


# -- one process of a launched run, in this process ---------------------------------------------------


@pytest.fixture
def launched(monkeypatch):
    """This process as one of two a launcher started (no agent: nothing waits), before any group."""
    for name in (*LAUNCHER_VARIABLES, "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


@pytest.mark.parametrize(("rank", "said"), [("0", True), ("1", False)])
def test_an_option_error_is_said_by_rank_0_alone(launched, capsys, rank, said):
    launched.setenv("RANK", rank)
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--output", "out.jsonl"])
    assert stop.value.code == 2
    assert (f"{SILENT_ERROR}\n" in capsys.readouterr().err) is said


@pytest.mark.parametrize(("rank", "said"), [("0", True), ("1", False)])
def test_a_missing_extra_is_said_by_rank_0_alone(launched, capsys, rank, said, tmp_path):
    launched.setenv("RANK", rank)
    launched.setattr(extras, "missing_modules", lambda extra: ["numpy"])
    assert main(["predict", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")]) == 2
    line = "instructerc: error: predict needs the 'train' extra (not installed: numpy): pip install torch"
    err = capsys.readouterr().err.splitlines()
    assert (len(err) == 1 and err[0].startswith(line)) if said else err == []


def test_a_broken_launcher_environment_is_said_by_every_process(launched, capsys):
    # Each process's own environment: not left to another.
    launched.setenv("RANK", "7")
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--output", "out.jsonl"])
    assert stop.value.code == 2 and f"{SILENT_ERROR}\n" in capsys.readouterr().err


@pytest.mark.parametrize(("rank", "said"), [("0", True), ("1", False)])
def test_a_process_stopped_before_its_group_says_so_only_in_rank_0(launched, capsys, rank, said):
    # Process 0 failed first (a missing extra) and the launcher stopped process 1 while it was
    # still importing: it said "terminated" after process 0's error.
    from instructerc.cli.main import Terminated, _terminated, terminated

    launched.setenv("RANK", rank)
    with pytest.raises(Terminated) as stop:
        _terminated(signal.SIGTERM, None)
    assert terminated(stop.value) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == ("instructerc: terminated (SIGTERM)\n" if said else "")


def test_a_silent_process_under_an_agent_returns_once_stopped_and_says_nothing(monkeypatch, capsys):
    # The SIGTERM the launcher sends once the first process has said why: taken by the wait, not
    # by the CLI's handler (which would say "terminated"), and the handlers are put back.
    import time

    from instructerc.cli.main import terminate_as_exit

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run")
    monkeypatch.setattr(time, "sleep", lambda seconds: signal.raise_signal(signal.SIGTERM))
    with terminate_as_exit():
        handler = signal.getsignal(signal.SIGTERM)
        wait_to_be_stopped(seconds=600)
        assert signal.getsignal(signal.SIGTERM) is handler
    assert capsys.readouterr().err == ""
