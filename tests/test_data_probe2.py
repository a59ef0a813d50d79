"""Inputs a user could send to ``instructerc data`` and ``prompts``, each once silently misread."""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instructerc.data.registry import DataSource, load_dialogues
from instructerc.errors import InputError
from test_cosmic_pickles import IEMOCAP, ONE_HOT, write

MELD_COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season", "Episode"]
MELD_ROWS = [
    ["1", "Did you water the fern?", "Ann", "neutral", "neutral", "0", "0", "1", "1"],
    ["2", "It looks thirsty.", "Ben", "sadness", "negative", "0", "1", "1", "1"],
    ["3", "Splendid, a new leaf!", "Ann", "joy", "positive", "1", "0", "1", "1"],
]


def test_the_iemocap_pickle_given_as_emorynlp_is_refused(tmp_path: Path) -> None:
    file = write(tmp_path, IEMOCAP, "iemocap") / "iemocap.pkl"
    with pytest.raises(InputError, match="emorynlp pickle speakers are one-hot lists, got 'F'") as error:
        load_dialogues(DataSource("cosmic-emorynlp", path=file), "train")
    assert error.value.path == str(file) and error.value.field == "emorynlp['Ses01F_impro01'].speakers[0]"


def test_the_emorynlp_pickle_given_as_iemocap_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(IEMOCAP)
    data[0] = {key: ONE_HOT[: len(value)] for key, value in data[0].items()}
    file = write(tmp_path, data, "emorynlp") / "emorynlp.pkl"
    with pytest.raises(InputError, match="iemocap pickle speakers are names") as error:
        load_dialogues(DataSource("cosmic-iemocap", path=file), "train")
    assert error.value.field == "iemocap['Ses01F_impro01'].speakers[0]"
    assert [u.speaker for u in load_dialogues(DataSource("cosmic-emorynlp", path=file), "train")[0].utterances] == [
        "Speaker_0",
        "Speaker_1",
    ]


def meld_folder(folder: Path, rows: list[list[str]] = MELD_ROWS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        with (folder / f"{split}_sent_emo.csv").open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([MELD_COLUMNS, *rows])
    return folder


def test_export_to_stdout_is_only_the_dialogues(tmp_path: Path) -> None:
    """``--out /dev/stdout | next-tool``: the summary line goes to stderr, not into the JSONL stream."""
    folder = meld_folder(tmp_path / "meld")
    argv = ["data", "export", "--dataset", "meld", "--data", str(folder), "--split", "test", "--out", "/dev/stdout"]
    process = subprocess.run([sys.executable, "-m", "instructerc", *argv], capture_output=True, text=True, timeout=60, check=False)
    assert process.returncode == 0, process.stderr
    assert [json.loads(line)["id"] for line in process.stdout.splitlines()] == ["0", "1"]
    assert "wrote 2 dialogues (3 utterances) to /dev/stdout" in process.stderr


@pytest.mark.parametrize(("dataset", "label_set"), [("meld", "emorynlp"), ("cosmic-iemocap", "uime"), ("uime", "meld")])
def test_a_label_set_a_benchmark_does_not_have_is_refused(run_cli, tmp_path: Path, dataset: str, label_set: str) -> None:
    """--label-set is JSONL's: given for a benchmark it was ignored, and the data read in its own labels."""
    result = run_cli("data", "stats", "--dataset", dataset, "--data", meld_folder(tmp_path / "meld"), "--label-set", label_set)
    assert result.code == 2 and result.out == ""
    [line] = result.err.splitlines()
    assert "--label-set is for JSONL data" in line


def test_a_label_set_a_benchmark_has_is_accepted(run_cli, tmp_path: Path) -> None:
    folder = meld_folder(tmp_path / "meld")
    assert run_cli("data", "stats", "--dataset", "meld", "--data", folder, "--label-set", "meld").code == 0
    result = run_cli("data", "stats", "--dataset", "meld", "--data", folder, "--labels", "uime", "--label-set", "uime")
    assert result.code == 0 and result.out.startswith("meld (labels: uime)")


def test_old_meld_copies_with_cp1252_control_characters_read_as_the_current_ones(tmp_path: Path) -> None:
    """MELD's CSVs before its November 2020 fix were UTF-8 holding cp1252 quotes as C1 controls
    (``\\x92`` for ``’``) and non-breaking spaces: repaired, not passed to the model."""
    old = [row[:1] + [row[1].replace("you", "you\x92ve\xa0got")] + row[2:] for row in MELD_ROWS]
    current = [row[:1] + [row[1].replace("you", "you’ve got")] + row[2:] for row in MELD_ROWS]
    read = [
        load_dialogues(DataSource("meld", path=meld_folder(tmp_path / name, rows)), "train")
        for name, rows in (("old", old), ("new", current))
    ]
    assert read[0] == read[1]
    assert read[0][0].utterances[0].text == "Did you’ve got water the fern?"


def test_a_row_given_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    """A pasted-twice row made its dialogue one turn longer, the order between the two a guess."""
    folder = meld_folder(tmp_path / "meld", [*MELD_ROWS, MELD_ROWS[1]])
    with pytest.raises(InputError, match="Utterance_ID 1 of dialogue '0' is also on line 3") as error:
        load_dialogues(DataSource("meld", path=folder), "dev")
    assert (error.value.path, error.value.line, error.value.field) == (str(folder / "dev_sent_emo.csv"), 5, "Utterance_ID")


def test_a_csv_that_cannot_be_opened_is_one_line(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No read permission (tests run as root here, so the refusal is simulated) was a traceback."""
    folder = meld_folder(tmp_path / "meld")
    opened = Path.open

    def refuse_dev(path: Path, *args, **kwargs):
        if path.name == "dev_sent_emo.csv":
            raise PermissionError(13, "Permission denied", str(path))
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse_dev)
    result = run_cli("data", "stats", "--dataset", "meld", "--data", folder)
    assert result.code == 2 and result.out == ""
    assert result.err == f"instructerc: error: {folder / 'dev_sent_emo.csv'}: cannot read: Permission denied\n"


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"id": "a", "utterances": [{"speaker": "A", "text": "Hi.", "emotion": "joy"}]}, "dataset"),
        ({"id": "a", "dataset": "meld", "utterances": [{"speaker": "A", "text": "Hi.", "emotion": "happy"}]}, "emotion"),
    ],
    ids=["no-mapping-for-its-dataset", "not-a-label-of-its-dataset"],
)
def test_jsonl_the_unified_labels_cannot_take_names_the_file(run_cli, tmp_path: Path, record: dict, field: str) -> None:
    file = tmp_path / "mine.jsonl"
    file.write_text(json.dumps(record) + "\n", encoding="utf-8")
    result = run_cli("data", "stats", "--dataset", "jsonl", "--data", file, "--labels", "uime")
    assert result.code == 2 and result.out == ""
    assert result.err.startswith(f"instructerc: error: {file}: field '{field}': dialogue 'a'")


def test_a_pipe_as_a_data_file_is_named_as_such_not_missing(tmp_path: Path) -> None:
    from instructerc.data.loader import require_file

    pipe = tmp_path / "pipe.jsonl"
    os.mkfifo(pipe)
    with pytest.raises(InputError, match="is not a regular file"):
        require_file(pipe)
    with pytest.raises(InputError, match="file not found"):
        require_file(tmp_path / "missing.jsonl")
