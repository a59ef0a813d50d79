"""Running under a launcher: an incomplete or misspelled launcher environment is one clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from instructerc.errors import InputError
from instructerc.inference.sharding import READER_GONE, Shard, current_shard, done_alike, merge_parts, part_path

LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"WORLD_SIZE": "2"}, "RANK is not set while WORLD_SIZE is 2"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR is not set while WORLD_SIZE is 2"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be a whole number of at least 1, got 'two'"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE must be a whole number of at least 1, got '0'"),
        ({"WORLD_SIZE": "2", "RANK": "x", "MASTER_ADDR": "h"}, "RANK must be a whole number of at least 0, got 'x'"),
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "h"}, r"RANK \(2\) must be below WORLD_SIZE \(2\)"),
    ],
)
def test_a_broken_launcher_environment_is_named_before_any_process_group_is_formed(monkeypatch, environment, message):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InputError, match=message):
        current_shard()


@pytest.mark.parametrize("world", ["", "1"])
def test_an_empty_or_single_world_is_one_process(monkeypatch, world):
    monkeypatch.setenv("WORLD_SIZE", world)
    shard, device = current_shard()
    assert (shard.world, shard.main, device) == (1, True, None)


def test_predict_with_world_size_exported_alone_exits_with_one_line_and_keeps_the_output(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "utterances": [{"speaker": "A", "text": "Hi!"}]}) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n", encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if name not in LAUNCHER_VARIABLES}
    command = [sys.executable, "-m", "instructerc", "predict", "--model", str(tmp_path), "--input", str(source), "--output", str(out)]
    done = subprocess.run(command + ["--no-progress"], capture_output=True, text=True, env={**env, "WORLD_SIZE": "2"}, timeout=120)
    assert done.returncode == 2
    line = "instructerc: error: environment variable RANK is not set while WORLD_SIZE is 2: start the processes with torchrun"
    assert done.stderr.strip().splitlines() == [line + " or accelerate launch"]
    assert out.read_text(encoding="utf-8") == "previous\n"


class Answering(Shard):
    """A shard whose barriers answer as given, as if the other processes had done so; it
    records what this process told them."""

    def __init__(self, rank: int, answers: list) -> None:
        super().__init__(rank, 2)
        object.__setattr__(self, "answers", answers)
        object.__setattr__(self, "told", [])

    def failed_ranks(self, failed: bool) -> list[int] | None:
        self.told.append(failed)
        return self.answers.pop(0)


def bad_input() -> None:
    raise InputError("not valid JSON", path="in.jsonl", line=2)


def test_input_that_fails_in_every_process_is_said_by_the_first_and_the_others_wait_for_it_silently(tmp_path):
    with pytest.raises(InputError, match="not valid JSON"):
        done_alike(Answering(0, [[0, 1]]), bad_input, tmp_path / "out.jsonl")
    later = Answering(1, [[0, 1], None])
    with pytest.raises(SystemExit) as stopped:
        done_alike(later, bad_input, tmp_path / "out.jsonl")
    assert stopped.value.code == 2
    assert later.told == [True, False]  # it waited for process 0 to leave before exiting


def test_input_that_fails_in_one_process_only_is_said_there_and_stops_the_others(tmp_path):
    with pytest.raises(InputError, match="not valid JSON"):
        done_alike(Answering(1, [[1]]), bad_input, tmp_path / "out.jsonl")
    with pytest.raises(InputError, match="process 1 of 2 failed") as stopped:
        done_alike(Answering(0, [[1]]), lambda: 7, tmp_path / "out.jsonl")
    assert stopped.value.path == str(tmp_path / "out.jsonl")
    assert done_alike(Answering(0, [[]]), lambda: 7, tmp_path / "out.jsonl") == 7


def test_a_malformed_line_under_a_launcher_is_one_error_line_and_every_process_fails(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "utterances": [{"speaker": "A", "text": "Hi!"}]}\n{bad\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n", encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29400 + os.getpid() % 500)]
    command = launcher + ["-m", "instructerc", "predict", "--model", str(tmp_path), "--input", str(source), "--output", str(out)]
    done = subprocess.run(command + ["--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("instructerc: error:")]
    assert errors == [f"instructerc: error: {source}:2: not valid JSON (Expecting property name enclosed in double quotes at column 2)"]
    assert "exitcode  : 0" not in done.stderr  # no process of the run reports success
    assert out.read_text(encoding="utf-8") == "previous\n"


class ReaderGone(Shard):
    """Process 1 of 2, told at the second barrier that process 0's stdout reader stopped reading."""

    def statuses(self, status: int) -> list[int] | None:
        return [READER_GONE, status] if self.answered else [0, status]

    def failed_ranks(self, failed: bool) -> list[int] | None:
        object.__setattr__(self, "answered", True)
        return []

    answered = False


def test_a_process_whose_first_process_lost_its_stdout_reader_ends_silently_as_that_one_does(tmp_path, capsys):
    out = tmp_path / "stdout"
    part_path(out, Shard(1, 2)).write_text("b1\n", encoding="utf-8")
    with pytest.raises(SystemExit) as stopped:
        merge_parts(out, ReaderGone(1, 2), [1, 1])
    assert stopped.value.code == 141  # the shell's status for SIGPIPE, as `predict ... | head` gives with one process
    assert list(tmp_path.iterdir()) == []


def test_predict_to_stdout_under_a_launcher_piped_into_head_ends_every_process_silently(tmp_path):
    from instructerc.labels.benchmarks import MELD
    from instructerc.prompts.templates import TemplateConfig
    from tiny import tiny_model_dir

    model = tiny_model_dir(tmp_path / "model", MELD, TemplateConfig(name="dialogue-stream", demonstration=False))
    source = tmp_path / "in.jsonl"
    line = json.dumps({"id": "a", "utterances": [{"speaker": "A", "text": "Hi! " * 20}] * 3})
    source.write_text((line + "\n") * 200, encoding="utf-8")  # more than a pipe's buffer
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29900 + os.getpid() % 90)]
    command = launcher + ["-m", "instructerc", "predict", "--model", str(model), "--input", str(source), "--output", "/dev/stdout"]
    script = " ".join(f"'{part}'" for part in command + ["--no-progress", "--chunk-size", "100"]) + " | head -c 10 > /dev/null"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert "instructerc: error" not in done.stderr, done.stderr[-3000:]
    assert "exitcode  : 141" in done.stderr  # the launcher's report: the reader left
    assert not list(tmp_path.glob(".instructerc-*"))
