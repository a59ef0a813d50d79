"""The CSV readers (MELD, EmoryNLP): a malformed row is one clear error naming its line, and a
row the JSONL reader would refuse is refused here too, so ``data export`` writes only files that
``predict`` reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructerc.data.emorynlp import read_emorynlp_csv
from instructerc.data.jsonl import read_jsonl
from instructerc.data.loader import read_csv_rows
from instructerc.data.meld import read_meld_csv
from instructerc.errors import InputError

MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
MELD_ROW = "1,Did you water the fern?,Ann,neutral,neutral,0,0,1,1,a,b\n"
EMORYNLP_HEADER = "Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode,Start_Time,End_Time\n"
EMORYNLP_ROW = "Hi.,\"['Ross Geller']\",Joyful,1,0,1,1,a,b\n"


def meld_folder(tmp_path: Path, test_rows: str) -> Path:
    """A MELD folder whose test CSV has ``test_rows`` after the header (train and dev: one good row)."""
    folder = tmp_path / "meld"
    folder.mkdir()
    for split in ("train", "dev"):
        (folder / f"{split}_sent_emo.csv").write_text(MELD_HEADER + MELD_ROW, encoding="utf-8")
    (folder / "test_sent_emo.csv").write_text(MELD_HEADER + test_rows, encoding="utf-8", newline="")
    return folder


def emorynlp_folder(tmp_path: Path, test_rows: str) -> Path:
    folder = tmp_path / "emorynlp"
    folder.mkdir()
    for split in ("train", "dev"):
        (folder / f"emorynlp_{split}_final.csv").write_text(EMORYNLP_HEADER + EMORYNLP_ROW, encoding="utf-8")
    (folder / "emorynlp_test_final.csv").write_text(EMORYNLP_HEADER + test_rows, encoding="utf-8", newline="")
    return folder


def meld_error(tmp_path: Path, test_rows: str) -> InputError:
    with pytest.raises(InputError) as caught:
        read_meld_csv(meld_folder(tmp_path, test_rows), "test")
    return caught.value


def emorynlp_error(tmp_path: Path, test_rows: str) -> InputError:
    with pytest.raises(InputError) as caught:
        read_emorynlp_csv(emorynlp_folder(tmp_path, test_rows), "test")
    return caught.value


def where(error: InputError) -> tuple[str | None, int | None, str | None]:
    return Path(error.path).name if error.path else None, error.line, error.field


# --- rows of the wrong length ---------------------------------------------------------------


def test_a_short_meld_row_is_an_input_error_naming_its_line(tmp_path: Path) -> None:
    error = meld_error(tmp_path, MELD_ROW + "2,Hi\n")

    assert where(error) == ("test_sent_emo.csv", 3, None)
    assert error.message == "row has 2 fields, expected 11"


def test_a_meld_row_with_an_extra_field_is_refused_not_cut(tmp_path: Path) -> None:
    error = meld_error(tmp_path, MELD_ROW.replace(",a,b\n", ",a,b,surplus\n"))

    assert where(error) == ("test_sent_emo.csv", 2, None)
    assert error.message == "row has 12 fields, expected 11"


def test_an_unterminated_quote_names_the_line_it_opens_on(tmp_path: Path) -> None:
    error = meld_error(tmp_path, MELD_ROW + '2,"Hi,Ben,joy,positive,0,1,1,1,a,b\n' + MELD_ROW.replace("1,", "3,", 1))

    assert where(error) == ("test_sent_emo.csv", 3, None)
    assert error.message == "row has 2 fields, expected 11 (it runs on to line 4: is a quote left open?)"


def test_a_short_emorynlp_row_is_an_input_error_naming_its_line(tmp_path: Path) -> None:
    error = emorynlp_error(tmp_path, EMORYNLP_ROW + EMORYNLP_ROW + "Yo.,\"['Ross Geller']\"\n")

    assert where(error) == ("emorynlp_test_final.csv", 4, None)
    assert error.message == "row has 2 fields, expected 9"


def test_rows_are_numbered_by_the_physical_line_they_start_on(tmp_path: Path) -> None:
    """Blank lines are skipped and a quoted field may hold a newline, as before; the line counts both."""
    file = tmp_path / "in.csv"
    file.write_text('a,b\n\n1,"two\nlines"\n\n3,4\n5\n', encoding="utf-8", newline="")
    rows = read_csv_rows(file, ("a", "b"))

    assert next(rows) == (3, {"a": "1", "b": "two\nlines"})
    assert next(rows) == (6, {"a": "3", "b": "4"})
    with pytest.raises(InputError, match=r"in\.csv:7: row has 1 fields, expected 2$"):
        next(rows)


def test_the_cli_prints_a_short_row_on_one_line_with_exit_code_2(run_cli, tmp_path: Path) -> None:
    folder = meld_folder(tmp_path, MELD_ROW + "2,Hi\n")

    result = run_cli("data", "export", "--dataset", "meld", "--split", "test", "--data", folder, "--out", tmp_path / "o.jsonl")

    assert (result.code, result.out) == (2, "")
    assert result.err == f"instructerc: error: {folder / 'test_sent_emo.csv'}:3: row has 2 fields, expected 11\n"
    assert not (tmp_path / "o.jsonl").exists()


# --- the checks the JSONL reader makes ------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ("2,Hi there,  ,joy,positive,0,1,1,1,a,b\n", "Speaker", "empty speaker"),
        ("2,Hi\x00 there,Ben,joy,positive,0,1,1,1,a,b\n", "Utterance", "a NUL character at character 3"),
        ("2,Hi there,Ben,joy,posi\x00tive,0,1,1,1,a,b\n", "Sentiment", "a NUL character at character 5"),
        ("2,Hi there,Ben,joy,positive, ,1,1,1,a,b\n", "Dialogue_ID", "empty value: it names the row's dialogue"),
    ],
)
def test_meld_rows_the_jsonl_reader_would_refuse_are_refused(tmp_path: Path, row: str, field: str, message: str) -> None:
    error = meld_error(tmp_path, MELD_ROW + row)

    assert where(error) == ("test_sent_emo.csv", 3, field)
    assert error.message == message


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ("Yo\x00.,\"['Ross Geller']\",Joyful,1,1,1,1,a,b\n", "Utterance", "a NUL character at character 3"),
        ("Yo.,\"['Ross Geller']\",Joyful,,1,1,1,a,b\n", "Scene_ID", "empty value: it names the row's dialogue"),
        ("Yo.,\"['Ross Geller']\",Joyful,1,1, ,1,a,b\n", "Season", "empty value: it names the row's dialogue"),
    ],
)
def test_emorynlp_rows_the_jsonl_reader_would_refuse_are_refused(tmp_path: Path, row: str, field: str, message: str) -> None:
    error = emorynlp_error(tmp_path, EMORYNLP_ROW + row)

    assert where(error) == ("emorynlp_test_final.csv", 3, field)
    assert error.message == message


def test_what_the_csv_readers_accept_the_jsonl_reader_reads_back(run_cli, tmp_path: Path) -> None:
    """Surrounding spaces in Speaker and Dialogue_ID are trimmed on export, as the JSONL reader trims them."""
    folder = meld_folder(tmp_path, MELD_ROW + "2,Splendid!, Ben ,joy,positive, 0 ,1,1,1,a,b\n")
    out = tmp_path / "test.jsonl"

    assert run_cli("data", "export", "--dataset", "meld", "--split", "test", "--data", folder, "--out", out).code == 0

    record = json.loads(out.read_text(encoding="utf-8"))
    assert (record["id"], [u["speaker"] for u in record["utterances"]]) == ("0", ["Ann", "Ben"])
    assert read_jsonl(out, "test") == read_meld_csv(folder, "test")
