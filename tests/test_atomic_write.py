"""``atomic_write`` keeps symlinks and special files: a link's target gets the content, a pipe is written to."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from instructerc.errors import InputError
from instructerc.files import atomic_write

LINE = json.dumps({"id": "d1", "utterances": [{"speaker": "A", "text": "Fine weather.", "emotion": "neutral"}]})


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_symlink_is_followed_and_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real" / "out.jsonl"
    real.parent.mkdir()
    real.write_text("old\n", encoding="utf-8")
    link = tmp_path / "link.jsonl"
    link.symlink_to(Path("real") / "out.jsonl")  # relative, as `ln -s` makes it

    with atomic_write(link) as handle:
        handle.write("new\n")

    assert link.is_symlink() and os.readlink(link) == str(Path("real") / "out.jsonl")
    assert real.read_text(encoding="utf-8") == "new\n"
    assert leftovers(tmp_path) == [] and leftovers(real.parent) == []


def test_a_dangling_symlink_gets_its_target_written(tmp_path: Path) -> None:
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "later" / "out.jsonl")

    with atomic_write(link) as handle:
        handle.write("new\n")

    assert link.is_symlink() and (tmp_path / "later" / "out.jsonl").read_text(encoding="utf-8") == "new\n"


def test_a_failed_write_through_a_symlink_leaves_the_target_and_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    real.write_text("old\n", encoding="utf-8")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)

    with pytest.raises(RuntimeError), atomic_write(link) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")

    assert link.is_symlink() and real.read_text(encoding="utf-8") == "old\n" and leftovers(tmp_path) == []


def test_a_fifo_is_written_to_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()

    with atomic_write(fifo) as handle:
        handle.write("through the pipe\n")
    reader.join(timeout=10)

    assert received == [b"through the pipe\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and leftovers(tmp_path) == []


def test_a_socket_is_refused_with_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "s"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        with pytest.raises(InputError, match="a socket, not a file") as error, atomic_write(path) as handle:
            handle.write("x")
    finally:
        server.close()

    assert error.value.path == str(path) and stat.S_ISSOCK(os.stat(path).st_mode)


def test_data_export_through_a_symlink_fills_its_target(run_cli, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text(LINE + "\n", encoding="utf-8")
    real = tmp_path / "real.jsonl"
    real.write_text("old\n", encoding="utf-8")
    link = tmp_path / "out.jsonl"
    link.symlink_to(real.name)

    result = run_cli("data", "export", "--dataset", "jsonl", "--split", "test", "--data", data, "--out", link)

    assert result.code == 0, result.err
    assert link.is_symlink() and json.loads(real.read_text(encoding="utf-8"))["id"] == "d1"
