"""Bad input: one line on stderr naming the file and the line or field, exit code 2, no traceback."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.jsonl import write_jsonl
from instructerc.errors import InputError

MELD_COLUMNS = [
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
]
GOOD_ROWS = [
    ["1", "Did you water the fern?", "Ann", "neutral", "neutral", "0", "0", "1", "1", "00:00:01,000", "00:00:02,000"],
    ["2", "It looks thirsty.", "Ben", "sadness", "negative", "0", "1", "1", "1", "00:00:02,000", "00:00:03,000"],
    ["3", "Splendid, a new leaf!", "Ann", "joy", "positive", "1", "0", "1", "1", "00:00:04,000", "00:00:05,000"],
]


def assert_input_error(result, *fragments: str) -> None:
    """Exit code 2, nothing on stdout, and exactly one stderr line that holds every fragment."""
    assert result.code == 2, result
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("instructerc: error: ")
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def write_meld_csvs(folder: Path, rows: dict[str, list[list[str]]] | None = None, columns: list[str] = MELD_COLUMNS) -> Path:
    """A small MELD-like folder: ``{train,dev,test}_sent_emo.csv`` (GOOD_ROWS unless ``rows`` says otherwise)."""
    folder.mkdir(exist_ok=True)
    for split in ("train", "dev", "test"):
        keep = [MELD_COLUMNS.index(c) for c in columns]
        with (folder / f"{split}_sent_emo.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows([row[i] for i in keep] for row in (rows or {}).get(split, GOOD_ROWS))
    return folder


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_meld_like_fixture_itself_loads(run_cli, tmp_path: Path) -> None:
    folder = write_meld_csvs(tmp_path / "meld")

    result = run_cli("data", "stats", "--dataset", "meld", "--data", folder)

    assert result.code == 0, result.err
    assert result.out.splitlines()[2].split()[:3] == ["train", "2", "3"]


# --- missing things -----------------------------------------------------------------------


def test_missing_folder(run_cli, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert_input_error(run_cli("data", "stats", "--dataset", "meld", "--data", missing), str(missing), "no such file or folder")


def test_missing_jsonl_file(run_cli, tmp_path: Path) -> None:
    missing = tmp_path / "gone.jsonl"
    assert_input_error(
        run_cli("data", "export", "--dataset", "jsonl", "--split", "test", "--data", missing, "--out", tmp_path / "o.jsonl"), str(missing)
    )


def test_missing_split_file_in_a_dataset_folder(run_cli, tmp_path: Path) -> None:
    folder = write_meld_csvs(tmp_path / "meld")
    (folder / "dev_sent_emo.csv").unlink()

    assert_input_error(run_cli("data", "stats", "--dataset", "meld", "--data", folder), str(folder), "dev_sent_emo.csv", "not found")


def test_missing_data_option(run_cli) -> None:
    assert_input_error(run_cli("data", "stats", "--dataset", "meld"), "field 'path'", "--data ")


def test_unknown_dataset_name(run_cli, tmp_path: Path) -> None:
    assert_input_error(
        run_cli("data", "stats", "--dataset", "meld2", "--data", tmp_path), "argument --dataset:", "unknown dataset 'meld2'", "cosmic-meld"
    )


def test_unknown_label_space(run_cli, tmp_path: Path) -> None:
    assert_input_error(
        run_cli("data", "stats", "--dataset", "meld", "--labels", "uime:rainbow", "--data", tmp_path), "argument --labels:", "rainbow"
    )


# --- CSV --------------------------------------------------------------------------------


def test_csv_missing_column(run_cli, tmp_path: Path) -> None:
    folder = write_meld_csvs(tmp_path / "meld", columns=[c for c in MELD_COLUMNS if c != "Emotion"])

    result = run_cli("data", "export", "--dataset", "meld", "--split", "dev", "--data", folder, "--out", tmp_path / "o.jsonl")

    assert_input_error(result, f"{folder / 'dev_sent_emo.csv'}:1", "field 'Emotion'", "missing column")


def test_csv_empty_utterance(run_cli, tmp_path: Path) -> None:
    rows = [GOOD_ROWS[0], [GOOD_ROWS[1][0], "   ", *GOOD_ROWS[1][2:]]]
    folder = write_meld_csvs(tmp_path / "meld", {"test": rows})

    result = run_cli("data", "export", "--dataset", "meld", "--split", "test", "--data", folder, "--out", tmp_path / "o.jsonl")

    assert_input_error(result, f"{folder / 'test_sent_emo.csv'}:3", "field 'Utterance'", "empty utterance text")


def test_csv_unknown_emotion(run_cli, tmp_path: Path) -> None:
    rows = [*GOOD_ROWS[:2], [GOOD_ROWS[2][0], GOOD_ROWS[2][1], "Ann", "happy", *GOOD_ROWS[2][4:]]]
    folder = write_meld_csvs(tmp_path / "meld", {"train": rows})

    result = run_cli("data", "stats", "--dataset", "meld", "--data", folder)

    assert_input_error(result, f"{folder / 'train_sent_emo.csv'}:4", "field 'Emotion'", "unknown emotion 'happy'", "label set meld")


def test_csv_not_utf8_names_the_line(run_cli, tmp_path: Path) -> None:
    folder = write_meld_csvs(tmp_path / "meld")
    test_csv = folder / "test_sent_emo.csv"
    test_csv.write_bytes(test_csv.read_bytes().replace(b"Splendid", b"Caf\xe9 splendid"))  # cp1252 e-acute

    result = run_cli("data", "export", "--dataset", "meld", "--split", "test", "--data", folder, "--out", tmp_path / "o.jsonl")

    assert_input_error(result, f"{test_csv}:4", "not UTF-8")


def test_csv_with_a_byte_order_mark_loads(run_cli, tmp_path: Path) -> None:
    """Spreadsheet programs start a UTF-8 CSV with a BOM; it must not become part of the first column's name."""
    folder = write_meld_csvs(tmp_path / "meld", columns=MELD_COLUMNS[1:])  # "Utterance", a required column, comes first
    for file in folder.iterdir():
        file.write_bytes(b"\xef\xbb\xbf" + file.read_bytes())

    assert run_cli("data", "stats", "--dataset", "meld", "--data", folder).code == 0


def test_emorynlp_csv_bad_speaker_literal(run_cli, tmp_path: Path) -> None:
    header = "Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode,Start_Time,End_Time\n"
    folder = tmp_path / "emorynlp"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        write_text(folder / f"emorynlp_{split}_final.csv", header + "Hi.,\"['Ross Geller']\",Joyful,1,0,1,1,a,b\n")
    write_text(folder / "emorynlp_test_final.csv", header + "Hi.,\"['Ross Geller']\",Joyful,1,0,1,1,a,b\nYo.,Ross Geller,Mad,1,1,1,1,a,b\n")

    result = run_cli("data", "stats", "--dataset", "emorynlp", "--data", folder)

    assert_input_error(result, f"{folder / 'emorynlp_test_final.csv'}:3", "field 'Speaker'")


# --- JSONL ------------------------------------------------------------------------------

GOOD_LINE = json.dumps({"id": "d1", "utterances": [{"speaker": "A", "text": "Fine weather.", "emotion": "neutral"}]})


def _export_jsonl(run_cli, file: Path, *options: str):
    return run_cli(
        "data", "export", "--dataset", "jsonl", "--split", "test", "--data", file, "--out", file.with_suffix(".out.jsonl"), *options
    )


def test_jsonl_line_not_json(run_cli, tmp_path: Path) -> None:
    file = write_text(tmp_path / "in.jsonl", GOOD_LINE + "\n\n" + '{"utterances": [\n')

    assert_input_error(_export_jsonl(run_cli, file), f"{file}:3", "not valid JSON")


def test_jsonl_line_without_utterances(run_cli, tmp_path: Path) -> None:
    file = write_text(tmp_path / "in.jsonl", GOOD_LINE + "\n" + json.dumps({"id": "d2", "turns": []}) + "\n")

    assert_input_error(_export_jsonl(run_cli, file), f"{file}:2", "field 'utterances'", "missing 'utterances'")


def test_jsonl_empty_utterance_text(run_cli, tmp_path: Path) -> None:
    record = {"utterances": [{"speaker": "A", "text": "Hi."}, {"speaker": "B", "text": " \t "}]}
    file = write_text(tmp_path / "in.jsonl", json.dumps(record) + "\n")

    assert_input_error(_export_jsonl(run_cli, file), f"{file}:1", "field 'utterances[1].text'", "empty utterance text")


def test_jsonl_unknown_emotion_for_the_label_set(run_cli, tmp_path: Path) -> None:
    record = {"utterances": [{"speaker": "A", "text": "Hi.", "emotion": "joy"}, {"speaker": "B", "text": "Oh.", "emotion": "happy"}]}
    file = write_text(tmp_path / "in.jsonl", GOOD_LINE + "\n" + json.dumps(record) + "\n")

    result = _export_jsonl(run_cli, file, "--label-set", "meld")

    assert_input_error(result, f"{file}:2", "field 'utterances[1].emotion'", "unknown emotion 'happy'", "label set meld")


def test_jsonl_unknown_label_set_name(run_cli, tmp_path: Path) -> None:
    file = write_text(tmp_path / "in.jsonl", GOOD_LINE + "\n")
    assert_input_error(_export_jsonl(run_cli, file, "--label-set", "medl"), "argument --label-set:", "unknown label set 'medl'")


@pytest.mark.parametrize(
    ("emotions", "fragment"), [(["joy", "Joy"], "'Joy' is 'joy' (line 1) in another case"), (["joy", ""], "empty emotion")]
)
def test_jsonl_emotions_that_are_no_label_set(run_cli, tmp_path: Path, emotions: list[str], fragment: str) -> None:
    record = {"utterances": [{"speaker": "A", "text": "x", "emotion": e} for e in emotions]}
    file = write_text(tmp_path / "in.jsonl", json.dumps(record) + "\n")

    assert_input_error(_export_jsonl(run_cli, file), str(file), "emotion", fragment)


def test_jsonl_emotion_that_is_not_a_label_of_its_dataset_when_unified(run_cli, tmp_path: Path) -> None:
    record = {"id": "d9", "dataset": "meld", "utterances": [{"speaker": "A", "text": "x", "emotion": "happy"}]}
    file = write_text(tmp_path / "in.jsonl", json.dumps(record) + "\n")

    assert_input_error(_export_jsonl(run_cli, file, "--labels", "uime"), "field 'emotion'", "dialogue 'd9'", "not a meld label")


def test_jsonl_dataset_the_unified_mapping_does_not_cover(run_cli, tmp_path: Path) -> None:
    file = write_text(tmp_path / "in.jsonl", GOOD_LINE + "\n")  # dataset defaults to the file name, "in"

    assert_input_error(_export_jsonl(run_cli, file, "--labels", "uime"), "field 'dataset'", "from 'in'")


def test_jsonl_duplicate_dialogue_id(run_cli, tmp_path: Path) -> None:
    file = write_text(tmp_path / "in.jsonl", GOOD_LINE + "\n" + GOOD_LINE + "\n")
    assert_input_error(_export_jsonl(run_cli, file), str(file), "field 'id'", "'d1' appears twice")


def test_jsonl_not_utf8_names_the_line(run_cli, tmp_path: Path) -> None:
    file = tmp_path / "in.jsonl"
    file.write_bytes(GOOD_LINE.encode() + b"\n" + b'{"utterances": [{"speaker": "A", "text": "na\xefve"}]}\n')

    assert_input_error(_export_jsonl(run_cli, file), f"{file}:2", "not UTF-8")


# --- output -----------------------------------------------------------------------------


def test_export_to_an_unwritable_place(run_cli, tmp_path: Path) -> None:
    folder = write_meld_csvs(tmp_path / "meld")
    blocker = write_text(tmp_path / "plain-file", "not a folder")
    out = blocker / "o.jsonl"

    assert_input_error(
        run_cli("data", "export", "--dataset", "meld", "--split", "test", "--data", folder, "--out", out), str(out), "is a file"
    )


def test_failed_export_leaves_the_earlier_output_byte_identical(run_cli, tmp_path: Path) -> None:
    folder = write_meld_csvs(tmp_path / "meld")
    out = tmp_path / "out" / "test.jsonl"
    assert run_cli("data", "export", "--dataset", "meld", "--split", "test", "--data", folder, "--out", out).code == 0
    before = out.read_bytes()
    write_meld_csvs(folder, {"test": [GOOD_ROWS[0], [*GOOD_ROWS[1][:3], "grumpy", *GOOD_ROWS[1][4:]]]})

    result = run_cli("data", "export", "--dataset", "meld", "--split", "test", "--data", folder, "--out", out)

    assert_input_error(result, "test_sent_emo.csv:3", "unknown emotion 'grumpy'")
    assert out.read_bytes() == before
    assert os.listdir(out.parent) == ["test.jsonl"], "no temporary file is left behind"


def test_writing_that_fails_midway_leaves_the_earlier_output_byte_identical(tmp_path: Path) -> None:
    out = tmp_path / "test.jsonl"
    out.write_bytes(b'{"earlier": "content"}\n')
    dialogue = Dialogue(id="d", dataset="x", split="test", utterances=(Utterance("A", "hi"),))

    def dialogues_then_failure():
        yield dialogue
        yield dialogue
        raise InputError("the input broke after two dialogues", path="somewhere.csv", line=7)

    with pytest.raises(InputError, match="after two dialogues"):
        write_jsonl(dialogues_then_failure(), out)

    assert out.read_bytes() == b'{"earlier": "content"}\n'
    assert os.listdir(tmp_path) == ["test.jsonl"]


# --- a real process ---------------------------------------------------------------------


def _run_process(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "instructerc", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_process_exit_code_and_no_traceback_for_bad_jsonl(tmp_path: Path) -> None:
    file = write_text(tmp_path / "in.jsonl", GOOD_LINE + "\n" + "{not json}\n")

    process = _run_process("data", "export", "--dataset", "jsonl", "--split", "test", "--data", file, "--out", tmp_path / "o.jsonl")

    assert process.returncode == 2
    assert process.stdout == ""
    assert process.stderr.splitlines() == [process.stderr.strip()]
    assert f"{file}:2" in process.stderr and "not valid JSON" in process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_process_exit_code_and_no_traceback_for_a_missing_folder(tmp_path: Path) -> None:
    process = _run_process("data", "stats", "--dataset", "cosmic-iemocap", "--data", tmp_path / "absent")

    assert process.returncode == 2
    assert process.stderr.strip() == f"instructerc: error: {tmp_path / 'absent'}: no such file or folder"
