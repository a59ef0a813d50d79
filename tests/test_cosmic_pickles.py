"""COSMIC pickles are untrusted: every value is type-checked before it is used or named in a
message, text passes the CSV/JSONL readers' checks, and the split lists partition the dialogues.

Each test builds a tiny pickle in tmp_path; each bad one must give one InputError naming the
file and the field, never a traceback, a hang, or data accepted as something else.
"""

from __future__ import annotations

import copy
import pickle
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from instructerc.data.registry import DataSource, load_dialogues
from instructerc.data.safe_pickle import describe
from instructerc.errors import InputError

ONE_HOT = [[1, 0, 0, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0, 0]]
IEMOCAP: list[Any] = [
    {"Ses01F_impro01": ["F", "M"], "Ses05F_impro01": ["M"], "Ses01M_impro01": ["F"]},
    {"Ses01F_impro01": [2, 0], "Ses05F_impro01": [1], "Ses01M_impro01": [3]},
    {"Ses01F_impro01": ["Hello there.", "Hi!"], "Ses05F_impro01": ["Test."], "Ses01M_impro01": ["Dev."]},
    ["Ses01F_impro01"],
    ["Ses05F_impro01"],
    ["Ses01M_impro01"],
]
MELD: list[Any] = [
    {0: ONE_HOT, 1153: ONE_HOT[:1], 1039: ONE_HOT[:1]},
    {0: [0, 4], 1153: [6], 1039: [1]},
    {0: [0, 1], 1153: [2], 1039: [0]},
    {0: ["It\x92s fine.", "Oh."], 1153: ["Test."], 1039: ["Dev."]},
    [0],
    [1153],
    [1039],
]
SPEAKERS, LABELS, SENTENCES, TRAIN, TEST, DEV = range(6)  # IEMOCAP's field positions
MELD_TEST = 5


def write(folder: Path, data: Any, dataset: str = "iemocap") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{dataset}.pkl").write_bytes(pickle.dumps(data, protocol=2))
    return folder


def load(folder: Path, dataset: str = "iemocap", split: str = "train") -> list:
    return load_dialogues(DataSource(f"cosmic-{dataset}", path=folder), split)


def laughs(levels: int) -> list:
    """``x = [x, x]`` ``levels`` times: a few hundred bytes pickled (memo-shared), 2**levels strings as a repr."""
    nest: list = ["ha"]
    for _ in range(levels):
        nest = [nest, nest]
    return nest


def deep_pickle(where: int) -> bytes:
    """An IEMOCAP pickle whose field ``where`` (speakers, labels or sentences) holds 100,000 nested
    lists for its one utterance, written as opcodes (pickle.dumps itself would exhaust recursion)."""
    deep = b"]" * 100_000 + b"a" * 99_999
    values = [b"X\x01\x00\x00\x00M", b"K\x00", b"X\x02\x00\x00\x00ok"]
    values[where] = deep
    key = b"X\x01\x00\x00\x00d"
    body = b"".join(b"}" + key + b"]" + value + b"a" + b"s" for value in values)
    return b"\x80\x02(" + body + b"]" + key + b"a" + b"]" + b"]" + b"l."


def test_the_tiny_pickles_load(tmp_path: Path) -> None:
    """The control: the valid pickles every test below damages load as expected."""
    train = load(write(tmp_path / "i", IEMOCAP))
    assert [(u.speaker, u.text, u.emotion) for u in train[0].utterances] == [("F", "Hello there.", "neutral"), ("M", "Hi!", "happy")]
    test = load(write(tmp_path / "m", MELD, "meld"), "meld", "test")
    assert (test[0].id, test[0].utterances[0].speaker, test[0].utterances[0].emotion) == ("0", "Speaker_0", "anger")
    assert load(tmp_path / "m", "meld")[0].utterances[0].text == "It’s fine."


# -- 1. no value is expanded whole: a memo-shared nest takes no time, and names its type ---------
@pytest.mark.parametrize(
    ("field", "where"),
    [(SENTENCES, "iemocap['Ses01F_impro01'].sentences[0]"), (LABELS, "iemocap['Ses01F_impro01'].labels[0]")],
    ids=["sentence", "label"],
)
def test_a_nest_of_shared_lists_is_refused_by_its_type(tmp_path: Path, field: int, where: str) -> None:
    data = copy.deepcopy(IEMOCAP)
    data[field]["Ses01F_impro01"][0] = laughs(20)  # 2**20 strings once expanded; the probe's 40 took > 40 s
    folder = write(tmp_path, data)
    start = time.monotonic()

    with pytest.raises(InputError) as error:
        load(folder)

    assert time.monotonic() - start < 2
    assert error.value.field == where and error.value.path == str(folder / "iemocap.pkl")
    assert "a list of 2 items" in error.value.message and len(str(error.value)) < 300


def test_a_forty_level_nest_is_refused_at_once(tmp_path: Path) -> None:
    """The probe's 359-byte file: 2**40 strings as a repr (it ran > 40 s and took 1.3 GB)."""
    data = copy.deepcopy(IEMOCAP)
    data[SPEAKERS]["Ses01F_impro01"][0] = laughs(40)
    start = time.monotonic()
    with pytest.raises(InputError, match="speaker must be a name or a one-hot list"):
        load(write(tmp_path, data))
    assert time.monotonic() - start < 2


# -- 2. values that used to raise tracebacks ---------------------------------------------------
@pytest.mark.parametrize(
    ("where", "field", "message"),
    [
        (0, "iemocap['d'].speakers[0]", "got a list of 1 item"),
        (1, "iemocap['d'].labels[0]", "got a list of 1 item"),
        (2, "iemocap['d'].sentences[0]", "got a list of 1 item"),
    ],
    ids=["speaker", "label", "sentence"],
)
def test_values_nested_100000_deep_are_input_errors(tmp_path: Path, where: int, field: str, message: str) -> None:
    tmp_path.joinpath("iemocap.pkl").write_bytes(deep_pickle(where))
    with pytest.raises(InputError) as error:
        load(tmp_path)
    assert (error.value.field, error.value.path) == (field, str(tmp_path / "iemocap.pkl"))
    assert message in error.value.message


def huge(data: list, field: int) -> None:
    data[field]["Ses01F_impro01"][0] = 2**20000


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda d: huge(d, SENTENCES), "iemocap['Ses01F_impro01'].sentences[0]", "must be a string, got an integer of 20001 bits"),
        (lambda d: huge(d, LABELS), "iemocap['Ses01F_impro01'].labels[0]", "class id from 0 to 5, got an integer of 20001 bits"),
        (lambda d: huge(d, SPEAKERS), "iemocap['Ses01F_impro01'].speakers[0]", "got an integer of 20001 bits"),
        (lambda d: d.__setitem__(TRAIN, [2**20000]), "train[0]", "must be a string, got an integer of 20001 bits"),
        (lambda d: d.__setitem__(TRAIN, 5), "train", "must be a list of dialogue ids, got 5"),
        (lambda d: d[SPEAKERS].__setitem__("Ses01F_impro01", 7), "iemocap['Ses01F_impro01'].speakers", "must be a list"),
        (lambda d: d.__setitem__(SPEAKERS, list(d[SPEAKERS].values())), "speakers", "must be a dict"),
    ],
    ids=["huge-sentence", "huge-label", "huge-speaker", "huge-id", "train-ids-an-int", "speakers-an-int", "speakers-a-list"],
)
def test_wrong_types_are_one_input_error_naming_the_field(tmp_path: Path, change: Callable, field: str, message: str) -> None:
    data = copy.deepcopy(IEMOCAP)
    change(data)
    with pytest.raises(InputError) as error:
        load(write(tmp_path, data))
    assert (error.value.field, error.value.path) == (field, str(tmp_path / "iemocap.pkl"))
    assert message in error.value.message


def test_a_meld_id_that_is_text_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(MELD)
    for field in data[:4]:
        field["1153"] = field.pop(1153)
    data[MELD_TEST] = ["1153"]
    with pytest.raises(InputError, match="a meld dialogue id must be an integer, got '1153'") as error:
        load(write(tmp_path, data, "meld"), "meld", "test")
    assert error.value.field == "test[0]"


# -- 3. values that used to be accepted as something else --------------------------------------
@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda d: d[SENTENCES]["Ses01F_impro01"].__setitem__(0, 12345), "sentences[0]", "must be a string, got 12345"),
        (lambda d: d[SENTENCES].__setitem__("Ses01F_impro01", "ab"), "sentences", "must be a list (one item per utterance), got 'ab'"),
        (lambda d: d[LABELS]["Ses01F_impro01"].__setitem__(0, True), "labels[0]", "class id from 0 to 5, got True"),
        (lambda d: d[LABELS]["Ses01F_impro01"].__setitem__(0, 6), "labels[0]", "class id from 0 to 5, got 6"),
        (lambda d: d[LABELS]["Ses01F_impro01"].__setitem__(0, 2.0), "labels[0]", "got 2.0"),
    ],
    ids=["sentence-an-int", "sentences-a-string", "label-true", "label-out-of-range", "label-a-float"],
)
def test_values_of_the_wrong_type_are_not_converted(tmp_path: Path, change: Callable, field: str, message: str) -> None:
    data = copy.deepcopy(IEMOCAP)
    change(data)
    with pytest.raises(InputError) as error:
        load(write(tmp_path, data))
    assert error.value.field == f"iemocap['Ses01F_impro01'].{field}"
    assert message in error.value.message


@pytest.mark.parametrize(("split", "key"), [("test", 5), ("dev", 1038), ("dev", 1153), ("train", 1039)])
def test_a_meld_id_outside_its_split_range_is_refused(tmp_path: Path, split: str, key: int) -> None:
    """Test id 5 became dialogue -1148; a dev id of 1153 would be test dialogue 0's."""
    data = copy.deepcopy(MELD)
    position = {"train": 4, "test": 5, "dev": 6}[split]
    old = data[position][0]
    for field in data[:4]:
        field[key] = field.pop(old)
    data[position] = [key]
    with pytest.raises(InputError, match=f"MELD {split} id {key} is outside the {split} range") as error:
        load(write(tmp_path, data, "meld"), "meld", split)
    assert error.value.field == f"{split}[0]"


def test_a_one_hot_speaker_must_hold_one_1_among_0s(tmp_path: Path) -> None:
    for name, speaker in {"two": [1, 1, 0], "bools": [True, False], "floats": [1.0, 0.0], "empty": []}.items():
        data = copy.deepcopy(MELD)
        data[0][0] = [speaker, ONE_HOT[1]]
        with pytest.raises(InputError, match="speaker must be a name or a one-hot list") as error:
            load(write(tmp_path / name, data, "meld"), "meld")
        assert error.value.field == "meld[0].speakers[0]"


# -- 4. the split lists partition the dialogues ------------------------------------------------
def test_dev_ids_taken_from_test_are_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(IEMOCAP)
    data[DEV] = ["Ses05F_impro01", "Ses01M_impro01"]
    with pytest.raises(InputError, match="1 dialogue id\\(s\\) in both the dev and the test ids: 'Ses05F_impro01'") as error:
        load(write(tmp_path, data))
    assert error.value.field == "test"


def test_an_id_in_train_and_test_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(IEMOCAP)
    data[TRAIN] = ["Ses01F_impro01", "Ses05F_impro01"]
    with pytest.raises(InputError, match="in both the train and the test ids: 'Ses05F_impro01'"):
        load(write(tmp_path, data), split="dev")


def test_an_id_listed_twice_in_one_split_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(IEMOCAP)
    data[TRAIN] = ["Ses01F_impro01", "Ses01F_impro01"]
    with pytest.raises(InputError, match="1 dialogue id\\(s\\) listed more than once: 'Ses01F_impro01'") as error:
        load(write(tmp_path, data))
    assert error.value.field == "train"


def test_a_dialogue_in_no_split_is_refused_with_a_count(tmp_path: Path) -> None:
    """The real pickles have none: every dialogue of every field is in exactly one split."""
    data = copy.deepcopy(IEMOCAP)
    for field in data[:3]:
        field["Ses02F_impro01"] = field["Ses01F_impro01"]
    with pytest.raises(InputError, match="1 dialogue\\(s\\) in none of the train, dev and test ids: 'Ses02F_impro01'") as error:
        load(write(tmp_path, data))
    assert error.value.field == "speakers"


def test_a_split_id_missing_from_a_field_is_named(tmp_path: Path) -> None:
    data = copy.deepcopy(IEMOCAP)
    del data[SENTENCES]["Ses05F_impro01"]
    with pytest.raises(InputError, match="1 dialogue\\(s\\) of the test ids are missing here: 'Ses05F_impro01'") as error:
        load(write(tmp_path, data))
    assert error.value.field == "sentences"


def test_the_real_pickles_partition_their_dialogues(data_root: Path) -> None:
    """Each split of each real pickle loads, and the split tables are the README's."""
    counts = {
        dataset: [len(load(data_root / "cosmic", dataset, split)) for split in ("train", "dev", "test")]
        for dataset in ("iemocap", "meld", "emorynlp")
    }
    assert counts == {"iemocap": [108, 12, 31], "meld": [1038, 114, 280], "emorynlp": [659, 89, 79]}


# -- 5. text passes the checks of the CSV and JSONL readers ------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (SPEAKERS, "", "empty speaker"),
        (SPEAKERS, "   ", "empty speaker"),
        (SPEAKERS, "F\x00", "a NUL character at character 2"),
        (SENTENCES, "bad \x00 text", "a NUL character at character 5"),
        (SENTENCES, "bad \ud800 text", r"a lone surrogate \(U\+D800\)"),
        (SENTENCES, " \t ", "empty utterance text"),
    ],
    ids=["empty-speaker", "blank-speaker", "nul-speaker", "nul-text", "surrogate-text", "blank-text"],
)
def test_text_is_checked_as_the_csv_and_jsonl_readers_do(tmp_path: Path, field: int, value: str, message: str) -> None:
    data = copy.deepcopy(IEMOCAP)
    data[field]["Ses01F_impro01"][0] = value
    with pytest.raises(InputError, match=message) as error:
        load(write(tmp_path, data))
    name = {SPEAKERS: "speakers", SENTENCES: "sentences"}[field]
    assert error.value.field == f"iemocap['Ses01F_impro01'].{name}[0]"
    assert error.value.line is None and str(error.value).startswith(f"{tmp_path / 'iemocap.pkl'}: field")


def test_an_id_with_a_nul_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(IEMOCAP)
    for field in data[:3]:
        field["Ses01F\x00"] = field.pop("Ses01F_impro01")
    data[TRAIN] = ["Ses01F\x00"]
    with pytest.raises(InputError, match="a NUL character at character 7") as error:
        load(write(tmp_path, data))
    assert error.value.field == "train[0]"


# -- the CLI: one line, exit 2 -----------------------------------------------------------------
def test_the_cli_prints_one_line_for_the_probes_nest(run_cli, tmp_path: Path) -> None:
    data = copy.deepcopy(IEMOCAP)
    data[SENTENCES]["Ses01F_impro01"][0] = laughs(40)
    folder = write(tmp_path / "cosmic", data)

    result = run_cli("data", "stats", "--dataset", "cosmic-iemocap", "--data", tmp_path)

    assert (result.code, result.out) == (2, "")
    assert result.err.splitlines() == [
        f"instructerc: error: {folder / 'iemocap.pkl'}: field 'iemocap['Ses01F_impro01'].sentences[0]': "
        "utterance text must be a string, got a list of 2 items"
    ]


# -- describe: bounded in time and length ------------------------------------------------------
def test_describe_names_untrusted_values_in_bounded_length() -> None:
    assert describe("Ses01F_impro01") == "'Ses01F_impro01'"
    assert describe("x" * 10_000) == "'" + "x" * 40 + "'..."
    assert describe("a\nb\x00") == "'a\\nb\\x00'"
    assert describe(2**20000) == "an integer of 20001 bits"
    assert describe([0, 1, 0]) == "[0, 1, 0]"
    assert describe(laughs(60)) == "a list of 2 items"
    assert describe(None) == "a NoneType"
