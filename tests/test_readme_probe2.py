"""What README.md promises about the commands, checked where a probe found it did not hold."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_output_piped_into_a_reader_that_stops_is_no_traceback(unbuffered: str) -> None:
    # `instructerc ... | head -1`: the reader is gone before the command writes; with PYTHONUNBUFFERED
    # the print itself fails, without it the flush at exit does. Either was a traceback (or Python's
    # "Exception ignored" and status 120) instead of the quiet SIGPIPE exit every Unix tool gives.
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "instructerc", "data", "list"], stdout=write_end, stderr=subprocess.PIPE, env=env, timeout=60
        )
    finally:
        os.close(write_end)
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert done.returncode == 141


@pytest.mark.parametrize(("raw", "kind"), [("1.5", "the number 1.5"), ("true", "true"), ("null", "null"), ("[1]", "a list")])
def test_a_bad_id_is_refused_naming_what_an_id_may_be(tmp_path, raw: str, kind: str) -> None:
    # README: "an id may be a string or an integer"; the refusal said "must be a string", sending
    # users away from integer ids that work.
    from instructerc.data.jsonl import iter_jsonl
    from instructerc.errors import InputError

    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"id": 7, "utterances": [{"speaker": "A", "text": "hi"}]}\n'
        + f'{{"id": {raw}, "utterances": [{{"speaker": "A", "text": "hi"}}]}}\n'
    )
    with pytest.raises(InputError) as caught:
        list(iter_jsonl(path))
    assert caught.value.line == 2 and caught.value.field == "id"
    assert f"'id' must be a string or an integer, not {kind}" in str(caught.value)
