"""The raw IEMOCAP release layout, read from the tiny hand-written fixture in fixtures/iemocap_raw/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from instructerc.data.cosmic import read_fields
from instructerc.data.iemocap import COSMIC_DEV_DIALOGUES, split_of
from instructerc.data.registry import DataSource, load_dialogues
from instructerc.errors import InputError

RAW = Path(__file__).parent / "fixtures" / "iemocap_raw"

# What the fixture must load as: (speaker, text, emotion) per kept turn, in transcription order.
EXPECTED = {
    "train": {
        "Ses01F_impro02": [
            ("F", "Did the parcel with the paper lanterns arrive?", "neutral"),
            ("M", "It came this morning, soaked through by the rain.", "frustrated"),
            ("F", "Oh no. I folded every one of those by hand.", "sad"),
            # MXX0 (no evaluation), M001 (xxx) and F003 (not evaluated) are dropped
            ("F", "Wait, the ones at the bottom are still dry!", "happy"),
            ("M", "Then we can hang them on the balcony tonight!", "excited"),
        ],
        "Ses02F_impro01": [("F", "The bakery on the corner closed for good.", "neutral"), ("M", "I will miss their rye bread.", "sad")],
        "Ses03F_impro02": [
            ("F", "Who left the freezer door open all night?", "angry"),
            ("M", "I keep telling everyone to check it.", "frustrated"),
        ],
        "Ses04F_impro01": [
            ("F", "We finally got the garden gate to close!", "happy"),
            ("M", "Let's paint it blue this weekend!", "excited"),
        ],
    },
    "dev": {
        "Ses01M_impro01": [
            ("M", "Somebody parked a tractor across my driveway again.", "angry"),
            # F000 (fea) and M001 (oth) are dropped
            ("F", "The farmer down the lane borrowed our ladder last week.", "neutral"),
            ("M", "Ha, then he owes us a ride into town!", "happy"),
        ],
    },
    "test": {
        "Ses05F_impro01": [
            # F000 (sur) and M000 (dis) are dropped
            ("F", "It's sunflower yellow! I love it!", "excited"),
            ("M", "I'm glad it makes you smile.", "happy"),
            ("F", "Shame the cat walked through the tray, though.", "sad"),
            ("M", "Little yellow paw prints all down the hall.", "neutral"),
        ],
    },
}
KEPT_TURNS = {
    "Ses01F_impro02": ["F000", "M000", "F001", "F002", "M002"],
    "Ses01M_impro01": ["M000", "F001", "M002"],
    "Ses05F_impro01": ["F001", "M001", "F002", "M002"],
    **{dialogue: ["F000", "M000"] for dialogue in ("Ses02F_impro01", "Ses03F_impro02", "Ses04F_impro01")},
}


@pytest.mark.parametrize("split", EXPECTED)
def test_raw_release_splits_speakers_order_and_labels(split: str) -> None:
    dialogues = load_dialogues(DataSource("iemocap", path=RAW), split)

    assert {d.id: [(u.speaker, u.text, u.emotion) for u in d.utterances] for d in dialogues} == EXPECTED[split]
    assert {(d.dataset, d.split) for d in dialogues} == {("iemocap", split)}
    for dialogue in dialogues:
        assert [u.extra["turn"] for u in dialogue.utterances] == [f"{dialogue.id}_{t}" for t in KEPT_TURNS[dialogue.id]]


def test_happy_and_excited_stay_apart_and_dropped_codes_never_appear() -> None:
    emotions = {u.emotion for split in EXPECTED for d in load_dialogues(DataSource("iemocap", path=RAW), split) for u in d.utterances}
    assert emotions == {"neutral", "frustrated", "sad", "happy", "excited", "angry"}


def test_cli_stats_of_the_raw_release(run_cli) -> None:
    result = run_cli("data", "stats", "--dataset", "iemocap", "--data", RAW)

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "iemocap (labels: iemocap)"
    assert lines[1].split() == ["split", "dialogues", "utterances", "happy", "sad", "neutral", "angry", "excited", "frustrated"]
    assert [line.split() for line in lines[2:]] == [
        ["train", "4", "11", "2", "2", "2", "1", "2", "2"],
        ["dev", "1", "3", "1", "0", "1", "1", "0", "0"],
        ["test", "1", "4", "1", "1", "1", "0", "1", "0"],
    ]


def test_unified_labels_on_the_raw_release() -> None:
    dialogue = load_dialogues(DataSource("iemocap", path=RAW, labels="uime"), "train")[0]
    assert [u.emotion for u in dialogue.utterances] == ["neutral", "fear", "sad", "joyful", "excited"]
    assert [u.extra["original_emotion"] for u in dialogue.utterances] == ["neutral", "frustrated", "sad", "happy", "excited"]


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "IEMOCAP_full_release"
    shutil.copytree(RAW, copy)
    return copy


def test_the_release_folder_is_found_inside_a_data_root(tmp_path: Path) -> None:
    _copy(tmp_path)
    assert [d.id for d in load_dialogues(DataSource("iemocap", path=tmp_path), "test")] == ["Ses05F_impro01"]


def test_a_dialogue_with_no_kept_turn_is_left_out(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    evaluation = copy / "Session5" / "dialog" / "EmoEvaluation" / "Ses05F_impro01.txt"
    evaluation.write_text(
        evaluation.read_text()
        .replace("\texc\t", "\txxx\t")
        .replace("\thap\t", "\txxx\t")
        .replace("\tsad\t", "\txxx\t")
        .replace("\tneu\t", "\txxx\t")
    )

    assert load_dialogues(DataSource("iemocap", path=copy), "test") == []


def test_missing_emo_evaluation_names_the_transcription(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    (copy / "Session1" / "dialog" / "EmoEvaluation" / "Ses01M_impro01.txt").unlink()

    with pytest.raises(InputError, match="no EmoEvaluation file") as error:
        load_dialogues(DataSource("iemocap", path=copy), "dev")
    assert error.value.path == str(copy / "Session1" / "dialog" / "transcriptions" / "Ses01M_impro01.txt")


def test_empty_text_of_a_labelled_turn_names_the_line(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    transcript = copy / "Session1" / "dialog" / "transcriptions" / "Ses01M_impro01.txt"
    transcript.write_text(transcript.read_text().replace("Ha, then he owes us a ride into town!", "  "))

    with pytest.raises(InputError, match="empty utterance text") as error:
        load_dialogues(DataSource("iemocap", path=copy), "dev")
    assert (error.value.path, error.value.line) == (str(transcript), 5)


def test_split_rule() -> None:
    assert [split_of(d) for d in ("Ses01F_impro02", "Ses01M_impro01", "Ses04F_script02_1", "Ses05M_script01_1")] == [
        "train",
        "dev",
        "dev",
        "test",
    ]


def test_dev_dialogues_are_exactly_the_cosmic_validation_ids(data_root: Path) -> None:
    fields = read_fields(data_root / "cosmic" / "iemocap.pkl", "iemocap")
    assert set(fields["dev"]) == COSMIC_DEV_DIALOGUES
    assert {split_of(d) for d in fields["train"]} == {"train"}
    assert {split_of(d) for d in fields["test"]} == {"test"}


@pytest.mark.parametrize(("session", "split"), [(5, "test"), (3, "train"), (2, "dev")])
def test_a_release_missing_a_session_of_the_split_is_refused(run_cli, tmp_path: Path, session: int, split: str) -> None:
    """Globbing Session[1-5] read a release without Session5 as one with an empty test split (and
    without Session3 as a smaller train split), with exit 0."""
    copy = _copy(tmp_path)
    shutil.rmtree(copy / f"Session{session}")

    with pytest.raises(InputError, match=f"Session{session} has no transcriptions") as error:
        load_dialogues(DataSource("iemocap", path=copy), split)
    assert error.value.path == str(copy / f"Session{session}")

    result = run_cli("data", "stats", "--dataset", "iemocap", "--data", copy)
    assert (result.code, result.out) == (2, "")
    [line] = result.err.splitlines()
    assert line.startswith(f"instructerc: error: {copy / f'Session{session}'}: Session{session} has no transcriptions")


def test_a_session_not_drawn_on_by_the_split_may_be_missing(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    shutil.rmtree(copy / "Session2")

    assert [d.id for d in load_dialogues(DataSource("iemocap", path=copy), "test")] == ["Ses05F_impro01"]
