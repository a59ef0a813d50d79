"""``instructerc predict`` across processes writes what one process writes, byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instructerc.errors import InputError
from instructerc.inference.sharding import Shard, merge_parts, part_path
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir

TEXTS = ["Hi!", "Oh no, that is terrible.", "Great news!", "How are you?", "I am fine, thanks.", "So sad."]


def write_input(path: Path, count: int) -> Path:
    lines = []
    for i in range(count):
        utterances = [{"speaker": "AB"[j % 2], "text": TEXTS[(i + j) % len(TEXTS)]} for j in range(1 + i % 4)]
        lines.append(json.dumps({"id": f"d{i}", "utterances": utterances}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def predict(model: Path, source: Path, out: Path, processes: int, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(29600 + os.getpid() % 1000)]
    command = [sys.executable, *(launcher if processes > 1 else []), "-m", "instructerc", "predict"]
    command += ["--model", str(model), "--input", str(source), "--output", str(out), "--chunk-size", "3", "--no-progress", *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_two_processes_write_the_single_process_output_byte_for_byte(tmp_path):
    model = tiny_model_dir(tmp_path / "model", MELD, TemplateConfig(name="dialogue-stream", demonstration=False))
    source = write_input(tmp_path / "in.jsonl", 11)  # 4 chunks of at most 3: uneven shares
    one = predict(model, source, tmp_path / "one.jsonl", 1)
    two = predict(model, source, tmp_path / "two.jsonl", 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert [json.loads(line)["id"] for line in (tmp_path / "two.jsonl").read_text().splitlines()] == [f"d{i}" for i in range(11)]
    assert not list(tmp_path.glob(".two.jsonl.part-*"))  # the parts are removed
    assert two.stdout.count("wrote 11 dialogues") == 1


def test_parts_are_interleaved_by_chunk_and_a_short_part_is_an_error(tmp_path):
    out = tmp_path / "out.jsonl"
    part_path(out, Shard(0, 2)).write_text("a1\na2\nc1\n", encoding="utf-8")
    part_path(out, Shard(1, 2)).write_text("b1\nb2\n", encoding="utf-8")
    merge_parts(out, Shard(0, 2), [2, 2, 1])
    assert out.read_text(encoding="utf-8") == "a1\na2\nb1\nb2\nc1\n"

    part_path(out, Shard(0, 2)).write_text("a1\n", encoding="utf-8")
    part_path(out, Shard(1, 2)).write_text("b1\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="did not finish"):
        merge_parts(out, Shard(0, 2), [1, 1, 1])
    assert out.read_text(encoding="utf-8") == "a1\na2\nb1\nb2\nc1\n"  # the earlier output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # and the parts of the failed run are gone


def launch_without_agent(model: Path, source: Path, out: Path) -> list[subprocess.CompletedProcess]:
    """Two processes started by hand (as srun or a job script does): no launcher stops the others."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "instructerc", "predict", "--model", str(model), "--input", str(source), "--output", str(out)]
    command += ["--chunk-size", "3", "--no-progress"]
    base = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    processes = [
        subprocess.Popen(
            command,
            env={**base, "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    results = []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=120)
        finally:
            for other in processes:
                if other.poll() is None:
                    other.kill()
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def test_a_process_that_cannot_write_its_part_stops_every_process_with_one_line_each(tmp_path):
    # Launched by hand, no launcher stops process 0: it must notice that process 1 is gone.
    model = tiny_model_dir(tmp_path / "model", MELD, TemplateConfig(name="dialogue-stream", demonstration=False))
    source = write_input(tmp_path / "in.jsonl", 7)
    out = tmp_path / "out.jsonl"
    out.write_text("earlier\n", encoding="utf-8")
    part_path(out, Shard(1, 2)).mkdir()  # only process 1's part cannot be written
    first, second = launch_without_agent(model, source, out)
    assert (first.returncode, second.returncode) == (2, 2), first.stderr[-3000:] + second.stderr[-3000:]
    assert "Traceback" not in first.stderr + second.stderr
    assert second.stderr.strip().splitlines() == [
        f"instructerc: error: {part_path(out, Shard(1, 2))}: cannot write this process's part of the output: Is a directory"
    ]
    assert first.stderr.strip().splitlines() == [
        f"instructerc: error: {out}: stopped: another process ended before finishing (its error is above); the output was not written"
    ]
    assert out.read_text(encoding="utf-8") == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [part_path(out, Shard(1, 2)).name]


class StoppedWhileWaiting(Shard):
    """A process that gets Ctrl-C (or SIGTERM, as SystemExit) while it waits for the others."""

    def wait(self) -> None:
        raise KeyboardInterrupt

    def failed_ranks(self, failed: bool) -> list[int] | None:
        raise KeyboardInterrupt


@pytest.mark.parametrize("rank", [0, 1])
def test_a_process_stopped_while_waiting_removes_its_part(tmp_path, rank):
    out = tmp_path / "out.jsonl"
    own = part_path(out, Shard(rank, 2))
    own.write_text("a1\n", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        merge_parts(out, StoppedWhileWaiting(rank, 2), [1, 1])
    assert not own.exists() and not out.exists()


def test_long_utterances_in_both_shares_give_one_warning_with_the_total(tmp_path):
    model = tiny_model_dir(tmp_path / "model", MELD, TemplateConfig(name="dialogue-stream", demonstration=False))
    lines = [json.dumps({"id": f"t{i}", "utterances": [{"speaker": "A", "text": "long " * (600 + i)}]}) for i in range(6)]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    one = predict(model, source, tmp_path / "one.jsonl", 1)
    two = predict(model, source, tmp_path / "two.jsonl", 2)  # chunks of 3: each process cuts 3
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    warnings = [line for line in two.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "6 utterance(s) did not fit" in warnings[0]


class Scripted(Shard):
    """A shard whose barriers answer as given, as if the other processes had done so."""

    def __init__(self, rank: int, answers: list) -> None:
        super().__init__(rank, 2)
        object.__setattr__(self, "answers", answers)

    def statuses(self, status: int) -> list[int] | None:
        failed = self.answers.pop(0)  # the ranks that failed, or None: one is gone
        return None if failed is None else [int(rank in failed) for rank in range(self.world)]


@pytest.mark.parametrize(
    ("answers", "message"),
    [([None], "another process ended before finishing"), ([[], [0]], "process 0 of 2 failed"), ([[], None], "another process ended")],
)
def test_a_process_whose_peer_failed_or_vanished_stops_with_one_line_and_no_part(tmp_path, answers, message):
    out = tmp_path / "out.jsonl"
    part_path(out, Shard(1, 2)).write_text("b1\n", encoding="utf-8")
    with pytest.raises(InputError, match=message) as stopped:
        merge_parts(out, Scripted(1, answers), [1, 1])
    assert stopped.value.path == str(out)
    assert list(tmp_path.iterdir()) == []


def test_two_processes_generating_give_one_count_of_invalid_generations_for_the_whole_output(tmp_path):
    model = tiny_model_dir(tmp_path / "model", MELD, TemplateConfig(name="dialogue-stream", demonstration=False))
    source = write_input(tmp_path / "in.jsonl", 7)
    one = predict(model, source, tmp_path / "one.jsonl", 1, "--mode", "generate")
    two = predict(model, source, tmp_path / "two.jsonl", 2, "--mode", "generate")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    counts = [line for line in two.stdout.splitlines() if "generations are not a label" in line]
    assert counts == [line for line in one.stdout.splitlines() if "generations are not a label" in line]
    assert len(counts) == 1
