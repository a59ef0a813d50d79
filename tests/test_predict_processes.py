"""``instructerc predict`` across processes writes what one process writes, byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def predict(model: Path, source: Path, out: Path, processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(29600 + os.getpid() % 1000)]
    command = [sys.executable, *(launcher if processes > 1 else []), "-m", "instructerc", "predict"]
    command += ["--model", str(model), "--input", str(source), "--output", str(out), "--chunk-size", "3", "--no-progress"]
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
