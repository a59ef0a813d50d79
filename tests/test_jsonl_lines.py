"""How the JSONL reader splits a file into lines: on LF alone, so a CR inside a line is the JSON
whitespace it is and line numbers are the ones an editor shows; CRLF, a BOM and blank lines work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructerc.data.jsonl import iter_jsonl
from instructerc.errors import InputError

GOOD = json.dumps({"id": "a", "utterances": [{"speaker": "A", "text": "Fine weather."}]}).encode()
BAD = b'{"id": "b", "utterances": []}'


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def ids_and_lines(path: Path) -> list[tuple[int, str]]:
    return [(line, dialogue.id) for line, dialogue in iter_jsonl(path)]


def test_a_cr_between_tokens_does_not_split_a_line(tmp_path: Path) -> None:
    file = write_bytes(
        tmp_path / "in.jsonl", b'{"id":"a",\r"utterances":[{"speaker":"A",\r"text":"Hi."}]}\n' + GOOD.replace(b'"a"', b'"c"') + b"\n"
    )

    assert ids_and_lines(file) == [(1, "a"), (2, "c")]


def test_a_lone_cr_does_not_shift_the_line_numbers(tmp_path: Path) -> None:
    file = write_bytes(tmp_path / "in.jsonl", GOOD + b"\r\r\n" + b"\r\n" + BAD + b"\n")

    with pytest.raises(InputError) as caught:
        list(iter_jsonl(file))

    assert (caught.value.line, caught.value.field) == (3, "utterances")


def test_crlf_line_ends_bom_and_blank_lines_keep_working(tmp_path: Path) -> None:
    second = GOOD.replace(b'"a"', b'"b"')
    file = write_bytes(tmp_path / "in.jsonl", b"\xef\xbb\xbf" + GOOD + b"\r\n\r\n  \r\n" + second + b"\r\n\n")

    assert ids_and_lines(file) == [(1, "a"), (4, "b")]


def test_a_last_line_without_a_line_end_is_read(tmp_path: Path) -> None:
    file = write_bytes(tmp_path / "in.jsonl", b"\n" + GOOD)

    assert ids_and_lines(file) == [(2, "a")]


def test_not_utf8_still_names_its_line(tmp_path: Path) -> None:
    file = write_bytes(tmp_path / "in.jsonl", GOOD + b"\r\n" + b'{"utterances": [{"speaker": "A", "text": "na\xefve"}]}\n')

    with pytest.raises(InputError, match="not UTF-8") as caught:
        list(iter_jsonl(file))

    assert caught.value.line == 2


def test_a_folder_without_train_jsonl_takes_its_labels_from_the_splits_it_has(tmp_path: Path) -> None:
    from instructerc.data.jsonl import infer_label_set

    folder = tmp_path / "mine"
    folder.mkdir()
    for split, emotion in (("dev", "joy"), ("test", "anger")):
        (folder / f"{split}.jsonl").write_text(
            json.dumps({"id": split, "utterances": [{"speaker": "A", "text": "x", "emotion": emotion}]}) + "\n"
        )
    label_set = infer_label_set(folder)
    assert label_set is not None and sorted(label_set.labels) == ["anger", "joy"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="train.jsonl"):
        infer_label_set(empty)


def test_a_file_named_after_a_benchmark_does_not_make_its_dialogues_the_benchmarks(tmp_path: Path) -> None:
    from instructerc.data.jsonl import read_jsonl

    line = json.dumps({"id": "d", "utterances": [{"speaker": "A", "text": "x", "emotion": "joyful"}]}) + "\n"
    (tmp_path / "meld.jsonl").write_text(line)
    (tmp_path / "mine.jsonl").write_text(line)
    named = json.dumps({"id": "d", "dataset": "meld", "utterances": [{"speaker": "A", "text": "x", "emotion": "joy"}]}) + "\n"
    (tmp_path / "named.jsonl").write_text(named)
    assert [d.dataset for d in read_jsonl(tmp_path / "meld.jsonl", "test")] == ["jsonl:meld"]
    assert [d.dataset for d in read_jsonl(tmp_path / "mine.jsonl", "test")] == ["mine"]
    assert [d.dataset for d in read_jsonl(tmp_path / "named.jsonl", "test")] == ["meld"]
