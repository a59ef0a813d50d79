"""Damaged raw IEMOCAP trees: each gives one InputError naming the file (and line), never a traceback,
and no turn or dialogue disappears without a rule that says so (see the module docstring of
instructerc.data.iemocap). Each test damages a copy of the fixture in tests/fixtures/iemocap_raw/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from instructerc.data.registry import DataSource, load_dialogues
from instructerc.errors import InputError

RAW = Path(__file__).parent / "fixtures" / "iemocap_raw"
DEV = "Ses01M_impro01"  # the fixture's dev dialogue: 5 transcription lines, 3 kept turns


def tree(tmp_path: Path) -> Path:
    copy = tmp_path / "IEMOCAP_full_release"
    shutil.copytree(RAW, copy)
    return copy


def transcript(root: Path, dialogue: str = DEV) -> Path:
    return root / "Session1" / "dialog" / "transcriptions" / f"{dialogue}.txt"


def evaluation(root: Path, dialogue: str = DEV) -> Path:
    return root / "Session1" / "dialog" / "EmoEvaluation" / f"{dialogue}.txt"


def replace(file: Path, old: bytes, new: bytes) -> None:
    content = file.read_bytes()
    assert old in content, (old, file)
    file.write_bytes(content.replace(old, new))


def dev(root: Path) -> list:
    return load_dialogues(DataSource("iemocap", path=root), "dev")


def refused(root: Path, match: str) -> InputError:
    with pytest.raises(InputError, match=match) as error:
        dev(root)
    assert "\n" not in str(error.value)
    return error.value


# -- lines that are skipped by design still are ------------------------------------------------
def test_lines_that_are_not_turns_are_still_skipped(tmp_path: Path) -> None:
    root = tree(tmp_path)
    expected = [(u.speaker, u.text) for u in dev(root)[0].utterances]
    file = transcript(root)
    file.write_text("M: Yeah.\n\n[NOISE]\nSes01M_impro0 ok\n" + file.read_text() + "F: Mm.\n")

    assert [(u.speaker, u.text) for u in dev(root)[0].utterances] == expected


# -- 6. a turn line that does not parse, an evaluation that does not parse, an unknown code -----
@pytest.mark.parametrize(
    "damaged",
    [b"Ses01M_impro01_M002 [009.1000-010.7000] Ha,", b"Ses01M_impro01_M002 [9.1-]: Ha,", b"Ses01M_impro01_M002: Ha,"],
    ids=["no-colon", "bad-times", "no-times"],
)
def test_a_turn_of_the_dialogue_that_does_not_parse_names_its_line(tmp_path: Path, damaged: bytes) -> None:
    root = tree(tmp_path)
    replace(transcript(root), b"Ses01M_impro01_M002 [009.1000-010.7000]: Ha,", damaged)

    error = refused(root, "a turn of Ses01M_impro01 that does not parse")
    assert (error.path, error.line) == (str(transcript(root)), 5)


def test_an_evaluation_line_that_does_not_parse_names_its_line(tmp_path: Path) -> None:
    """Spaces for tabs: every code was lost, and the whole dialogue with them."""
    root = tree(tmp_path)
    replace(evaluation(root), b"[0.8000 - 3.1000]\tSes01M_impro01_M000\tang\t", b"[0.8000 - 3.1000] Ses01M_impro01_M000 ang ")

    error = refused(root, "an evaluation line that does not parse")
    assert (error.path, error.line) == (str(evaluation(root)), 3)


def test_an_evaluation_with_no_turn_is_refused(tmp_path: Path) -> None:
    root = tree(tmp_path)
    evaluation(root).write_text("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n")

    error = refused(root, "no evaluated turn")
    assert error.path == str(evaluation(root))


def test_an_unknown_emotion_code_names_its_line(tmp_path: Path) -> None:
    root = tree(tmp_path)
    replace(evaluation(root), b"\tSes01M_impro01_M002\thap\t", b"\tSes01M_impro01_M002\tjoy\t")

    error = refused(root, "unknown emotion code 'joy' \\(expected one of: hap, sad, neu, ang, exc, fru, dis, fea, oth, sur, xxx\\)")
    assert (error.path, error.line) == (str(evaluation(root)), 27)


def test_an_evaluation_of_another_dialogues_turns_is_refused(tmp_path: Path) -> None:
    """A copied EmoEvaluation file: no turn of the transcription was evaluated, so all were dropped."""
    root = tree(tmp_path)
    shutil.copy(evaluation(root, "Ses01F_impro02"), evaluation(root))

    error = refused(root, "turn 'Ses01F_impro02_F002' is not a turn name of Ses01M_impro01")
    assert (error.path, error.line) == (str(evaluation(root)), 3)


# -- 7. a turn name without _<speaker> ----------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "file", "line"),
    [("SesM002", evaluation, 27), ("Ses01M_impro01_X002", evaluation, 27), ("Ses01M_impro01_", evaluation, 27)],
    ids=["no-underscore", "speaker-x", "empty-suffix"],
)
def test_a_turn_name_without_a_speaker_names_its_line(tmp_path: Path, name: str, file, line: int) -> None:
    root = tree(tmp_path)
    replace(evaluation(root), b"\tSes01M_impro01_M002\t", f"\t{name}\t".encode())
    replace(transcript(root), b"Ses01M_impro01_M002 ", f"{name} ".encode())

    error = refused(root, f"turn '{name}' is not a turn name of Ses01M_impro01: expected Ses01M_impro01_ then the speaker")
    assert (error.path, error.line) == (str(file(root)), line)


def test_an_unevaluated_turn_without_a_speaker_is_refused_in_the_transcription(tmp_path: Path) -> None:
    root = tree(tmp_path)
    replace(transcript(root), b"Ses01M_impro01_F000 ", b"Ses01M_impro01_Q000 ")

    error = refused(root, "turn 'Ses01M_impro01_Q000' is not a turn name")
    assert (error.path, error.line) == (str(transcript(root)), 2)


# -- 8. a folder or a broken link where a file should be ----------------------------------------
def test_a_folder_named_like_a_transcription_names_its_path(tmp_path: Path) -> None:
    root = tree(tmp_path)
    folder = transcript(root, "Ses01F_impro09")
    folder.mkdir()
    shutil.copy(evaluation(root), evaluation(root, "Ses01F_impro09"))

    with pytest.raises(InputError, match="is a folder") as error:
        load_dialogues(DataSource("iemocap", path=root), "train")
    assert error.value.path == str(folder)


def test_a_broken_link_in_place_of_a_transcription_names_its_path(tmp_path: Path) -> None:
    root = tree(tmp_path)
    link = transcript(root, "Ses01F_impro09")
    link.symlink_to(tmp_path / "nowhere.txt")

    with pytest.raises(InputError, match="a symbolic link to nothing") as error:
        load_dialogues(DataSource("iemocap", path=root), "train")
    assert error.value.path == str(link)


@pytest.mark.parametrize("kind", ["folder", "link"])
def test_a_folder_or_broken_link_in_place_of_an_evaluation_names_its_path(tmp_path: Path, kind: str) -> None:
    root = tree(tmp_path)
    evaluation(root).unlink()
    if kind == "folder":
        evaluation(root).mkdir()
    else:
        evaluation(root).symlink_to(tmp_path / "nowhere.txt")

    error = refused(root, "is a folder" if kind == "folder" else "a symbolic link to nothing")
    assert error.path == str(evaluation(root))


# -- 9. text: UTF-8 and no NUL, in every line that is used -------------------------------------
@pytest.mark.parametrize(
    ("damaged", "message"),
    [
        (b"ride into t\x92own!", "not UTF-8 text \\(byte 0x92 at character 75\\)"),
        (b"ride into t\x00own!", "a NUL character at character 75"),
    ],
    ids=["cp1252-byte", "nul"],
)
def test_a_kept_turn_must_be_utf8_without_nul(tmp_path: Path, damaged: bytes, message: str) -> None:
    root = tree(tmp_path)
    replace(transcript(root), b"ride into town!", damaged)

    error = refused(root, message)
    assert (error.path, error.line) == (str(transcript(root)), 5)


def test_an_evaluation_line_must_be_utf8(tmp_path: Path) -> None:
    root = tree(tmp_path)
    replace(evaluation(root), b"\tSes01M_impro01_M002\thap\t", b"\tSes01M_impro01_M002\thap\xff\t")

    error = refused(root, "not UTF-8 text \\(byte 0xff")
    assert (error.path, error.line) == (str(evaluation(root)), 27)


def test_a_bad_byte_in_a_line_never_used_is_tolerated(tmp_path: Path) -> None:
    """An evaluator's note or a line that is no turn is never read: a stray byte there does not block the release."""
    root = tree(tmp_path)
    expected = [(u.speaker, u.text, u.emotion) for u in dev(root)[0].utterances]
    replace(evaluation(root), b"(annoyed)", b"(caf\xe9)")
    file = transcript(root)
    file.write_bytes(b"M: caf\xe9\n" + file.read_bytes())

    assert [(u.speaker, u.text, u.emotion) for u in dev(root)[0].utterances] == expected


# -- the CLI: one line, exit 2 -----------------------------------------------------------------
def test_the_cli_prints_one_line_for_a_damaged_turn(run_cli, tmp_path: Path) -> None:
    root = tree(tmp_path)
    replace(transcript(root), b"Ses01M_impro01_M002 [009.1000-010.7000]:", b"Ses01M_impro01_M002 [009.1000-010.7000]")

    result = run_cli("data", "stats", "--dataset", "iemocap", "--data", root)

    assert (result.code, result.out) == (2, "")
    assert result.err.splitlines() == [
        f"instructerc: error: {transcript(root)}:5: a turn of Ses01M_impro01 that does not parse (expected <turn> [<start>-<end>]: <text>)"
    ]
