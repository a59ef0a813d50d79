"""Session 20, data: names and labels in one form whatever text-direction controls they carry,
raw control characters and CSV headers named clearly, an empty COSMIC split refused, and the
shared benchmark CSV reader and unified tables reading exactly as before."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.emorynlp import read_emorynlp_csv
from instructerc.data.jsonl import infer_label_set, read_jsonl, write_jsonl
from instructerc.data.meld import read_meld_csv
from instructerc.data.registry import DataSource, load_dialogues
from instructerc.data.text import canonical_label, canonical_speaker
from instructerc.errors import InputError
from instructerc.labels.unified import FEELING_WHEEL, INSTRUCTERC

# U+202E (right-to-left override) left open reverses what follows it on the line; U+2066/U+2069
# isolate; U+200F is a right-to-left mark. Each shows "Ann" as "Ann".
LOOK_LIKE_ANN = ["Ann", "Ann\u202e", "\u2066Ann\u2069", "A\u202enn", "\u200fAnn", "An\u202a\u202cn"]

MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
EMORYNLP_HEADER = "Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode,Start_Time,End_Time\n"


def write_lines(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def dialogue(*turns: tuple[str, str], **utterance_keys: Any) -> dict[str, Any]:
    return {"id": "d1", "utterances": [{"speaker": s, "text": t, **utterance_keys} for s, t in turns]}


def meld_csv(tmp_path: Path, header: str, rows: str) -> Path:
    folder = tmp_path / "meld"
    folder.mkdir()
    (folder / "test_sent_emo.csv").write_text(header + rows, encoding="utf-8", newline="")
    return folder


# -- bidi controls in speaker names and labels -----------------------------------------------------


def test_names_that_differ_only_by_direction_controls_are_one_speaker(tmp_path: Path) -> None:
    file = write_lines(tmp_path / "d.jsonl", [dialogue(*[(name, f"turn {k}") for k, name in enumerate(LOOK_LIKE_ANN)])])

    [read] = read_jsonl(file, "test")

    assert read.speakers == ("Ann",)


def test_a_name_is_written_back_without_direction_controls(tmp_path: Path) -> None:
    # Written back raw, the override reversed the rest of the output line in any viewer.
    file = write_lines(tmp_path / "d.jsonl", [dialogue(("Bob\u202e", "Hi"), ("Ann", "Hello"))])
    out = tmp_path / "out.jsonl"

    write_jsonl(read_jsonl(file, "test"), out)

    assert "\u202e" not in out.read_text(encoding="utf-8")
    assert json.loads(out.read_text(encoding="utf-8"))["utterances"][0]["speaker"] == "Bob"


def test_a_direction_control_between_letter_and_accent_does_not_keep_them_apart() -> None:
    assert canonical_speaker("Jose\u202e\u0301") == canonical_speaker("Jos\u00e9") == "Jos\u00e9"


def test_a_name_of_direction_controls_only_is_an_empty_speaker(run_cli, tmp_path: Path) -> None:
    file = write_lines(tmp_path / "d.jsonl", [dialogue(("Ann", "Hi"), ("\u202e\u2066", "Hello"))])

    result = run_cli("data", "stats", "--dataset", "jsonl", "--data", file)

    assert result.code != 0
    assert result.err.strip() == f"instructerc: error: {file}:1: field 'utterances[1].speaker': empty speaker"


@pytest.mark.parametrize("name", ["\u2063", "\u2063\u2064", "\u202e\u2063"])
def test_a_name_no_character_of_which_is_seen_is_an_empty_speaker(tmp_path: Path, name: str) -> None:
    # U+2063 (invisible separator) was no white space and not trimmed: a speaker shown as nothing.
    file = write_lines(tmp_path / "d.jsonl", [dialogue((name, "Hi"))])

    with pytest.raises(InputError, match=r":1: field 'utterances\[0\]\.speaker': empty speaker"):
        read_jsonl(file, "test")


def test_an_emotion_with_a_direction_control_is_the_same_label(tmp_path: Path) -> None:
    file = write_lines(
        tmp_path / "d.jsonl",
        [
            {
                "id": "d1",
                "utterances": [{"speaker": "A", "text": "x", "emotion": "joy"}, {"speaker": "B", "text": "y", "emotion": "joy\u202e"}],
            }
        ],
    )

    label_set = infer_label_set(file)

    assert label_set is not None and label_set.labels == ("joy",)
    assert [u.emotion for u in read_jsonl(file, "test")[0].utterances] == ["joy", "joy"]


@pytest.mark.parametrize("key", ["emotion", "dataset"])
def test_an_emotion_or_dataset_of_invisible_characters_is_refused(tmp_path: Path, key: str) -> None:
    record = dialogue(("Ann", "Hi"), emotion="\u2063") if key == "emotion" else {**dialogue(("Ann", "Hi")), "dataset": "\u2063"}
    file = write_lines(tmp_path / "d.jsonl", [record])

    with pytest.raises(InputError, match=r":1: field '[^']*" + key + "'"):
        read_jsonl(file, "test")


def test_a_dialogue_built_in_python_gets_the_same_speakers_as_from_a_file() -> None:
    from instructerc.inference.predictor import checked_dialogue

    built = Dialogue("d", "x", "test", tuple(Utterance(name, "hi") for name in LOOK_LIKE_ANN))

    assert checked_dialogue(built, "dialogues[0]").speakers == ("Ann",)


def test_meld_and_emorynlp_speakers_fold_direction_controls(tmp_path: Path) -> None:
    meld = meld_csv(tmp_path, MELD_HEADER, "1,Hi.,Ross\u202e,joy,positive,0,0,1,1,a,b\n2,Yo.,Ross,joy,positive,0,1,1,1,a,b\n")
    assert read_meld_csv(meld, "test")[0].speakers == ("Ross",)

    folder = tmp_path / "emorynlp"
    folder.mkdir()
    (folder / "emorynlp_test_final.csv").write_text(EMORYNLP_HEADER + "Hi.,\"['\u202e']\",Joyful,1,0,1,1,a,b\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"emorynlp_test_final\.csv:2: field 'Speaker': empty speaker"):
        read_emorynlp_csv(folder, "test")


def test_utterance_text_keeps_its_direction_controls(tmp_path: Path) -> None:
    # Text is the user's, read as sent: only names and labels are folded.
    file = write_lines(tmp_path / "d.jsonl", [dialogue(("Ann", "\u202eolleh"))])

    assert read_jsonl(file, "test")[0].utterances[0].text == "\u202eolleh"
    assert canonical_label(" joy\u200f ") == "joy"


# -- JSON lines with raw control characters ---------------------------------------------------------


def test_a_raw_tab_in_a_string_is_named_with_its_escape(tmp_path: Path) -> None:
    file = tmp_path / "d.jsonl"
    file.write_text('{"id": "a", "utterances": [{"speaker": "A", "text": "x\ty"}]}\n', encoding="utf-8")

    with pytest.raises(InputError) as caught:
        read_jsonl(file, "test")

    message = str(caught.value)
    assert ":1: not valid JSON: the control character U+0009 at column 55 is raw inside a string (write it \\t)" in message
    assert "at at" not in message


@pytest.mark.parametrize("line", [b'{"id": "a", "utterances": [{"speaker": "A", "text": "x\x00"}]}', b"\x00\x00"])
def test_a_raw_nul_is_named_as_such(tmp_path: Path, line: bytes) -> None:
    # Was "Invalid control character at at column 53" or "Expecting value at column 1".
    file = tmp_path / "d.jsonl"
    file.write_bytes(b'{"id": "b", "utterances": [{"speaker": "A", "text": "x"}]}\n' + line + b"\n")

    with pytest.raises(InputError, match=r"d\.jsonl:2: not valid JSON: a NUL character at column \d+, which no text holds"):
        read_jsonl(file, "test")


# -- benchmark CSV headers and empty COSMIC splits --------------------------------------------------


def test_a_csv_header_name_with_spaces_around_it_is_the_column(tmp_path: Path) -> None:
    header = MELD_HEADER.replace("Emotion,", " Emotion ,").replace("Speaker,", "Speaker ,")
    folder = meld_csv(tmp_path, header, "1,Hi.,Ross,joy,positive,0,0,1,1,a,b\n")

    [read] = read_meld_csv(folder, "test")

    assert read.utterances[0].emotion == "joy" and read.speakers == ("Ross",)


def test_a_column_named_in_other_case_is_named_with_the_rename(tmp_path: Path) -> None:
    folder = meld_csv(tmp_path, MELD_HEADER.replace("Emotion", "emotion"), "1,Hi.,Ross,joy,positive,0,0,1,1,a,b\n")

    with pytest.raises(
        InputError, match=r"test_sent_emo\.csv:1: field 'Emotion': missing column 'Emotion' .*rename 'emotion' to 'Emotion'"
    ):
        read_meld_csv(folder, "test")


@pytest.mark.parametrize(("separator", "named"), [(";", "';'"), ("\t", "tabs")])
def test_a_csv_saved_with_another_separator_says_so(tmp_path: Path, separator: str, named: str) -> None:
    folder = meld_csv(tmp_path, MELD_HEADER.replace(",", separator), "1;Hi.;Ross;joy;positive;0;0;1;1;a;b\n".replace(";", separator))

    with pytest.raises(InputError, match=f"its fields are separated by {named}: save it as CSV with commas"):
        read_meld_csv(folder, "test")


def test_a_column_given_twice_once_with_a_space_is_refused(tmp_path: Path) -> None:
    folder = meld_csv(tmp_path, MELD_HEADER.replace("\n", ",Emotion \n"), "1,Hi.,Ross,joy,positive,0,0,1,1,a,b,anger\n")

    with pytest.raises(InputError, match="column 'Emotion' appears twice"):
        read_meld_csv(folder, "test")


def test_an_empty_csv_says_it_has_no_header(tmp_path: Path) -> None:
    folder = meld_csv(tmp_path, "", "")

    with pytest.raises(InputError, match=r"test_sent_emo\.csv:1: no header row"):
        read_meld_csv(folder, "test")


def test_an_empty_cosmic_split_is_refused_naming_its_field(tmp_path: Path) -> None:
    # Read as 0 dialogues with a warning only, where a CSV of the header alone is an error.
    data: list[Any] = [
        {"Ses01F_impro01": ["F", "M"], "Ses05F_impro01": ["M"]},
        {"Ses01F_impro01": [2, 0], "Ses05F_impro01": [1]},
        {"Ses01F_impro01": ["Hello there.", "Hi!"], "Ses05F_impro01": ["Test."]},
        ["Ses01F_impro01"],
        ["Ses05F_impro01"],
        [],
    ]
    (tmp_path / "iemocap.pkl").write_bytes(pickle.dumps(data, protocol=2))

    with pytest.raises(InputError, match=r"iemocap\.pkl: field 'dev': no dialogue ids: the iemocap dev split would be empty"):
        load_dialogues(DataSource("cosmic-iemocap", path=tmp_path), "dev")
    assert len(load_dialogues(DataSource("cosmic-iemocap", path=tmp_path), "train")) == 1


# -- shared code: the same results as the tables and readers it replaced ------------------------------


PAPER_MAPPING = {
    "iemocap": {"happy": "joyful", "sad": "sad", "neutral": "neutral", "angry": "mad", "excited": "excited", "frustrated": "fear"},
    "meld": {
        "neutral": "neutral",
        "surprise": "powerful",
        "fear": "fear",
        "sadness": "sad",
        "joy": "joyful",
        "disgust": "disgust",
        "anger": "mad",
    },
    "emorynlp": {
        "Joyful": "joyful",
        "Mad": "mad",
        "Peaceful": "peaceful",
        "Neutral": "neutral",
        "Sad": "sad",
        "Powerful": "powerful",
        "Scared": "fear",
    },
}
WHEEL_CHANGES = {
    "iemocap": {"frustrated": "frustrated"},
    "meld": {"surprise": "surprise", "fear": "scared"},
    "emorynlp": {"Scared": "scared"},
}


def ordered(forward: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(dataset, list(table.items())) for dataset, table in forward.items()]


def test_the_unified_tables_are_the_mappings_documented() -> None:
    # Built from one rule now (lower-cased unless renamed): the same tables, in the same order.
    assert ordered(INSTRUCTERC.forward) == ordered(PAPER_MAPPING)
    wheel = {dataset: {**table, **WHEEL_CHANGES[dataset]} for dataset, table in PAPER_MAPPING.items()}
    assert ordered(FEELING_WHEEL.forward) == ordered(wheel)


def test_both_benchmark_csvs_keep_their_dialogue_keys_order_and_extra_columns(tmp_path: Path) -> None:
    meld = meld_csv(tmp_path, MELD_HEADER, "2,Yo.,Bob,anger,negative,07,1,1,2,c,d\n1,Hi.,Ann,joy,positive,7,0,1,2,a,b\n")
    [read] = read_meld_csv(meld, "test")
    assert (read.id, read.dataset, [u.text for u in read.utterances]) == ("7", "meld", ["Hi.", "Yo."])
    assert dict(read.utterances[0].extra) == {"sentiment": "positive", "season": "1", "episode": "2", "start_time": "a", "end_time": "b"}

    folder = tmp_path / "emorynlp"
    folder.mkdir()
    rows = "Yo.,\"['Ann', 'Bob']\",Mad,03,2,1,2,c,d\nHi.,\"['Ann']\",Joyful,3,1,01,2,a,b\n"
    (folder / "emorynlp_test_final.csv").write_text(EMORYNLP_HEADER + rows, encoding="utf-8")
    [read] = read_emorynlp_csv(folder, "test")
    assert (read.id, read.speakers, [u.emotion for u in read.utterances]) == ("1_2_3", ("Ann", "Ann, Bob"), ["Joyful", "Mad"])
    assert dict(read.utterances[1].extra) == {"start_time": "c", "end_time": "d"}


# -- what a value is, in messages ------------------------------------------------------------------


@pytest.mark.parametrize(("line", "kind"), [('"hello"', "a string"), ("42", "a number"), ("null", "null"), ("true", "true")])
def test_a_line_that_is_not_an_object_says_what_it_is(tmp_path: Path, line: str, kind: str) -> None:
    file = tmp_path / "d.jsonl"
    file.write_text(line + "\n", encoding="utf-8")

    with pytest.raises(InputError, match=f"d\\.jsonl:1: a line must be a JSON object, not {kind}$"):
        read_jsonl(file, "test")


@pytest.mark.parametrize("original", ["", " \u200b"])
def test_an_empty_original_emotion_is_called_empty_not_an_object(tmp_path: Path, original: str) -> None:
    # Was "'original_emotion' must be a non-empty string, not an object".
    record = {"id": "a", "dataset": "meld", "utterances": [{"speaker": "A", "text": "x", "emotion": "joy", "original_emotion": original}]}
    file = write_lines(tmp_path / "d.jsonl", [record])

    with pytest.raises(InputError, match=r"original_emotion': 'original_emotion' must be a non-empty string, not an empty string$"):
        read_jsonl(file, "test")
