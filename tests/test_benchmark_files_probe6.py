"""Benchmark CSVs that are damaged or not what they claim: each is one error naming the file, the
line and the field (exit 2), never a dialogue split in two, an empty split or a column read from
the wrong copy without a word."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from instructerc.data.emorynlp import read_emorynlp_csv
from instructerc.data.meld import read_meld_csv
from instructerc.data.registry import DataSource, load_dialogues
from instructerc.errors import InputError

MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
EMORYNLP_HEADER = "Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode,Start_Time,End_Time\n"


def meld_row(dialogue: str, utterance: str, text: str = "Hi.") -> str:
    return f"1,{text},Ann,neutral,neutral,{dialogue},{utterance},1,1,a,b\n"


def emorynlp_row(scene: str, utterance: str, season: str = "1") -> str:
    return f"Hi.,\"['Ross Geller']\",Joyful,{scene},{utterance},{season},1,a,b\n"


def benchmark_folder(folder: Path, file_name: str, good: str, test: str) -> Path:
    """A benchmark folder whose test CSV is ``test``; train and dev hold ``good`` (a header and
    one good row). ``file_name`` spells a split's file, e.g. ``{split}_sent_emo.csv``."""
    folder.mkdir()
    for split in ("train", "dev"):
        (folder / file_name.format(split=split)).write_text(good, encoding="utf-8")
    (folder / file_name.format(split="test")).write_text(test, encoding="utf-8", newline="")
    return folder


def meld_folder(tmp_path: Path, test: str) -> Path:
    return benchmark_folder(tmp_path / "meld", "{split}_sent_emo.csv", MELD_HEADER + meld_row("0", "0"), test)


def emorynlp_folder(tmp_path: Path, test: str) -> Path:
    return benchmark_folder(tmp_path / "emorynlp", "emorynlp_{split}_final.csv", EMORYNLP_HEADER + emorynlp_row("1", "1"), test)


def refused(read, folder: Path) -> InputError:
    with pytest.raises(InputError) as caught:
        read(folder, "test")
    assert "\n" not in str(caught.value)
    return caught.value


def where(error: InputError) -> tuple[str | None, int | None, str | None]:
    return Path(error.path).name if error.path else None, error.line, error.field


# --- dialogue keys and utterance positions are whole numbers, in one spelling ---------------------


def test_a_zero_padded_dialogue_id_is_the_same_dialogue(tmp_path: Path) -> None:
    """A spreadsheet's re-save writes 01 for 1: as text it made a second dialogue of one turn."""
    folder = meld_folder(
        tmp_path, MELD_HEADER + meld_row("1", "0", "First.") + meld_row("01", "1", "Second.") + meld_row(" 1 ", "2", "Third.")
    )

    [dialogue] = read_meld_csv(folder, "test")

    assert (dialogue.id, [u.text for u in dialogue.utterances]) == ("1", ["First.", "Second.", "Third."])


@pytest.mark.parametrize("value", ["1.0", "d1", "-1", "1_0", "\u0661", "+1"])
def test_a_dialogue_id_that_is_not_a_whole_number_is_refused(tmp_path: Path, value: str) -> None:
    """``1.0`` beside ``1`` split a dialogue in two; ``d1`` is no MELD file's; ``int()`` reads
    ``1_0`` as ten and Arabic-Indic digits as digits."""
    error = refused(read_meld_csv, meld_folder(tmp_path, MELD_HEADER + meld_row("1", "0") + meld_row(value, "1")))

    assert where(error) == ("test_sent_emo.csv", 3, "Dialogue_ID")
    assert error.message == f"Dialogue_ID '{value}' is not a whole number (0, 1, 2, ...)"


@pytest.mark.parametrize("value", ["-1", "1_0", "2.0"])
def test_an_utterance_id_that_is_not_a_whole_number_is_refused(tmp_path: Path, value: str) -> None:
    error = refused(read_meld_csv, meld_folder(tmp_path, MELD_HEADER + meld_row("1", "0") + meld_row("1", value)))

    assert where(error) == ("test_sent_emo.csv", 3, "Utterance_ID")
    assert error.message == f"Utterance_ID '{value}' is not a whole number (0, 1, 2, ...)"


@pytest.mark.parametrize(
    ("row", "field"), [(emorynlp_row("1.0", "2"), "Scene_ID"), (emorynlp_row("1", "2", season="S1"), "Season")], ids=["scene", "season"]
)
def test_an_emorynlp_scene_key_that_is_not_a_whole_number_is_refused(tmp_path: Path, row: str, field: str) -> None:
    error = refused(read_emorynlp_csv, emorynlp_folder(tmp_path, EMORYNLP_HEADER + emorynlp_row("1", "1") + row))

    assert where(error) == ("emorynlp_test_final.csv", 3, field)


def test_a_zero_padded_emorynlp_scene_is_the_same_scene(tmp_path: Path) -> None:
    folder = emorynlp_folder(tmp_path, EMORYNLP_HEADER + emorynlp_row("1", "1") + emorynlp_row("01", "2", season="01"))

    assert [(d.id, len(d)) for d in read_emorynlp_csv(folder, "test")] == [("1_1_1", 2)]


# --- a file that holds no split, or a column twice ---------------------------------------------


@pytest.mark.parametrize(
    ("read", "make", "header"), [(read_meld_csv, meld_folder, MELD_HEADER), (read_emorynlp_csv, emorynlp_folder, EMORYNLP_HEADER)]
)
def test_a_csv_of_the_header_only_is_refused(tmp_path: Path, read, make, header: str) -> None:
    """It read as a split of no dialogue: stats printed zeros and exit 0."""
    error = refused(read, make(tmp_path, header + "\r\n"))

    assert error.message.startswith("no rows below the header")
    assert where(error)[0] is not None and where(error)[1:] == (None, None)


def test_the_cli_refuses_an_empty_split_in_one_line(run_cli, tmp_path: Path) -> None:
    folder = meld_folder(tmp_path, MELD_HEADER)

    result = run_cli("data", "stats", "--dataset", "meld", "--data", folder)

    assert (result.code, result.out) == (2, "")
    assert result.err.splitlines() == [
        f"instructerc: error: {folder / 'test_sent_emo.csv'}: no rows below the header: the meld test split would be empty"
    ]


def test_a_column_named_twice_is_refused(tmp_path: Path) -> None:
    """Two Emotion columns: the row was read from the last one (here Sentiment's values), and the
    error blamed an 'unknown emotion' on line 2."""
    header = MELD_HEADER.replace("Sentiment", "Emotion")

    error = refused(read_meld_csv, meld_folder(tmp_path, header + meld_row("0", "0")))

    assert where(error) == ("test_sent_emo.csv", 1, "Emotion")
    assert error.message == "column 'Emotion' appears twice in the header: keep one"


def test_unnamed_columns_of_trailing_commas_are_still_accepted(tmp_path: Path) -> None:
    folder = meld_folder(tmp_path, MELD_HEADER.rstrip("\n") + ",,\n" + meld_row("0", "0").rstrip("\n") + ",,\n")

    assert len(read_meld_csv(folder, "test")) == 1


# --- links in a file's place ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["loop", "dangling"])
def test_a_broken_link_in_a_csvs_place_names_the_link(tmp_path: Path, kind: str) -> None:
    """It was reported as 'MELD test CSV not found (looked for ...)' about a name that is there."""
    folder = meld_folder(tmp_path, MELD_HEADER + meld_row("0", "0"))
    link = folder / "test_sent_emo.csv"
    link.unlink()
    os.symlink(link.name if kind == "loop" else "gone.csv", link)

    error = refused(read_meld_csv, folder)

    assert error.path == str(link)
    assert ("symlink loop" if kind == "loop" else "which does not exist") in error.message


def test_a_symlink_loop_in_a_pickles_place_names_the_link(tmp_path: Path) -> None:
    os.symlink("meld.pkl", tmp_path / "meld.pkl")

    with pytest.raises(InputError, match="symlink loop") as caught:
        load_dialogues(DataSource("cosmic-meld", path=tmp_path), "test")
    assert caught.value.path == str(tmp_path / "meld.pkl")


def test_a_pickle_of_a_class_reference_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """The loader's unpickler refuses every global: a pickle that calls a function is not loaded."""
    marker = tmp_path / "ran"
    (tmp_path / "meld.pkl").write_bytes(pickle.dumps(_Touch(str(marker))))

    with pytest.raises(InputError, match="refused to load global"):
        load_dialogues(DataSource("cosmic-meld", path=tmp_path), "test")
    assert not marker.exists()


class _Touch:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))
