"""Session 21, data: a pickle cannot change the numpy stand-ins shared by every later load, a
pickle cut short is named as such (not as unsafe), a CSV quote left open is named at the row that
opened it, compressed text files are named by their compression, a run of spaces inside a label
or a name is one space, and COSMIC speaker names are read in the one form of every other reader."""

from __future__ import annotations

import bz2
import csv
import json
import lzma
import pickle
from pathlib import Path
from typing import Any

import pytest

from instructerc.data import safe_pickle
from instructerc.data.jsonl import infer_label_set, read_jsonl, write_jsonl
from instructerc.data.meld import read_meld_csv
from instructerc.data.registry import DataSource, label_set_of, load_dialogues
from instructerc.data.safe_pickle import load_data_pickle
from instructerc.errors import InputError
from instructerc.labels.benchmarks import BENCHMARK_LABEL_SETS
from instructerc.labels.label_set import LabelSet
from instructerc.labels.unified import MAPPINGS
from test_cosmic_pickles import IEMOCAP  # the same tiny COSMIC pickle

MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"


def write_lines(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def turns(*pairs: tuple[str, str], dialogue_id: str = "d1") -> dict[str, Any]:
    """A dialogue whose utterances are (speaker, emotion) pairs."""
    return {"id": dialogue_id, "utterances": [{"speaker": s, "text": f"turn {k}", "emotion": e} for k, (s, e) in enumerate(pairs)]}


def load_bytes(tmp_path: Path, raw: bytes) -> Any:
    file = tmp_path / "data.pkl"
    file.write_bytes(raw)
    return load_data_pickle(file)


# -- the numpy stand-ins are sealed ----------------------------------------------------------------
# BUILD (b) with the state (None, {name: value}) sets attributes on the object below it; on the
# stand-in function itself that object is shared by every load in the process.
SET_DEFAULTS = b"\x80\x02cnumpy.core.multiarray\nscalar\nN}X\x0c\x00\x00\x00__defaults__K\x01K\x02\x86s\x86b."
SET_DICT = b"\x80\x02cnumpy.core.multiarray\nscalar\n}X\x03\x00\x00\x00fooK\x01sb."
SET_CLASS_INIT = b"\x80\x02cnumpy\ndtype\nN}X\x08\x00\x00\x00__init__cnumpy.core.multiarray\nscalar\ns\x86b."


@pytest.mark.parametrize("payload", [SET_DEFAULTS, SET_DICT, SET_CLASS_INIT], ids=["slot-state", "dict-state", "class"])
def test_a_pickle_cannot_set_attributes_on_a_numpy_stand_in(tmp_path: Path, payload: bytes) -> None:
    function, cls = safe_pickle._numpy_scalar_stand_in, safe_pickle._NumpyDtypeStandIn
    before = (function.__defaults__, dict(function.__dict__), cls.__init__)

    with pytest.raises(InputError, match="may not set the state of a numpy function or type"):
        load_bytes(tmp_path, payload)

    assert (function.__defaults__, dict(function.__dict__), cls.__init__) == before


def test_a_numpy_stand_in_cannot_be_instantiated_without_its_arguments(tmp_path: Path) -> None:
    # NEWOBJ (0x81) built a dtype stand-in with no code, handed on as data.
    with pytest.raises(InputError, match="NEWOBJ class argument must be a type"):
        load_bytes(tmp_path, b"\x80\x02cnumpy\ndtype\n)\x81.")


def test_numpy_scalars_still_decode_through_the_sealed_stand_ins(tmp_path: Path) -> None:
    # numpy.dtype('i4') called, its state set (byte order '<'), then scalar(dtype, raw bytes).
    dtype = b"cnumpy\ndtype\nX\x02\x00\x00\x00i4\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    raw = b"\x80\x02cnumpy.core.multiarray\nscalar\n" + dtype + b"C\x04\x07\x01\x00\x00\x86R."

    assert load_bytes(tmp_path, raw) == 263


# -- a pickle cut short ----------------------------------------------------------------------------
@pytest.mark.parametrize(("protocol", "keep"), [(4, 0.5), (4, 0.999), (2, -1), (0, -1)])
def test_a_pickle_cut_short_is_named_as_such(tmp_path: Path, protocol: int, keep: float) -> None:
    data = [{f"Ses01F_impro{k:02}": ["text " * 20] * 30 for k in range(40)}, ["x"] * 100]
    raw = pickle.dumps(data, protocol=protocol)
    cut = raw[:keep] if keep < 0 else raw[: int(len(raw) * keep)]

    with pytest.raises(InputError) as error:
        load_bytes(tmp_path, cut)

    assert "cut short" in error.value.message and "unsafe" not in error.value.message
    assert error.value.path == str(tmp_path / "data.pkl") and "\n" not in str(error.value)


def test_an_empty_pickle_is_called_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="invalid pickle: the file is empty"):
        load_bytes(tmp_path, b"")


def test_a_bad_opcode_inside_the_file_is_not_called_cut_short(tmp_path: Path) -> None:
    with pytest.raises(InputError) as error:
        load_bytes(tmp_path, b"\x80\x02\xff" + b"N" * 50 + b".")
    assert "cut short" not in error.value.message and "opcode" in error.value.message


def test_a_cut_cosmic_pickle_is_named_cut_short_by_the_loader(tmp_path: Path) -> None:
    raw = pickle.dumps(IEMOCAP, protocol=4)
    (tmp_path / "iemocap.pkl").write_bytes(raw[:-3])

    with pytest.raises(InputError, match="cut short by an interrupted download or copy"):
        load_dialogues(DataSource("cosmic-iemocap", path=tmp_path), "train")


# -- a CSV quote left open -------------------------------------------------------------------------
def meld_rows(count: int) -> list[str]:
    return [f"{k},Hello there number {k},Ann,joy,positive,{k // 10},{k % 10},1,1,a,b\n" for k in range(count)]


def test_a_csv_quote_left_open_is_named_at_the_row_that_opens_it(tmp_path: Path) -> None:
    # The quote runs on until the field passes the csv module's size limit, thousands of lines on.
    rows = meld_rows(8000)
    rows[3] = rows[3].replace("Hello", '"Hello')  # the fourth row: line 5
    (tmp_path / "test_sent_emo.csv").write_text(MELD_HEADER + "".join(rows), encoding="utf-8")

    with pytest.raises(InputError) as error:
        read_meld_csv(tmp_path, "test")

    assert error.value.line == 5
    assert "is a quote left open?" in error.value.message and f"{csv.field_size_limit():,}" in error.value.message


def test_a_field_over_the_size_limit_on_one_line_names_its_line_without_a_quote(tmp_path: Path) -> None:
    rows = meld_rows(5)
    rows[2] = rows[2].replace("Hello", "H" * (csv.field_size_limit() + 10))
    (tmp_path / "test_sent_emo.csv").write_text(MELD_HEADER + "".join(rows), encoding="utf-8")

    with pytest.raises(InputError) as error:
        read_meld_csv(tmp_path, "test")

    assert error.value.line == 4 and "longer than" in error.value.message and "quote" not in error.value.message


# -- compressed text files -------------------------------------------------------------------------
LINE = (json.dumps(turns(("Ann", "joy"))) + "\n").encode()


@pytest.mark.parametrize(("pack", "named"), [(bz2.compress, "bzip2-compressed"), (lzma.compress, "xz-compressed")])
def test_a_compressed_jsonl_file_is_named_by_its_compression(run_cli, tmp_path: Path, pack: Any, named: str) -> None:
    file = tmp_path / "dialogues.jsonl"
    file.write_bytes(pack(LINE))

    result = run_cli("data", "stats", "--dataset", "jsonl", "--data", file)

    assert result.code != 0
    assert (
        result.err.strip()
        == f"instructerc: error: {file}: {named}, not text: decompress it first ({'bunzip2' if 'bz' in named else 'unxz'})"
    )


def test_a_compressed_meld_csv_is_named_by_its_compression(tmp_path: Path) -> None:
    (tmp_path / "test_sent_emo.csv").write_bytes(bz2.compress((MELD_HEADER + "".join(meld_rows(3))).encode()))

    with pytest.raises(InputError, match="bzip2-compressed, not text"):
        read_meld_csv(tmp_path, "test")


def test_text_that_starts_with_the_letters_of_a_magic_number_is_still_text(tmp_path: Path) -> None:
    file = tmp_path / "d.jsonl"
    file.write_text("BZh,7z\n", encoding="utf-8")

    with pytest.raises(InputError, match="not valid JSON"):
        read_jsonl(file, "test")


# -- spaces inside labels and names ----------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["very\u00a0happy", "very  happy", "very\u3000happy", "very\u202f\u2009happy"])
def test_a_label_spelled_with_other_spaces_is_the_same_label(tmp_path: Path, spelling: str) -> None:
    file = write_lines(tmp_path / "d.jsonl", [turns(("Ann", "very happy"), ("Bob", spelling))])

    assert infer_label_set(file).labels == ("very happy",)
    [dialogue] = read_jsonl(file, "test")
    assert [u.emotion for u in dialogue.utterances] == ["very happy", "very happy"]


def test_a_name_spelled_with_a_no_break_space_is_the_same_speaker_and_written_back_plain(tmp_path: Path) -> None:
    file = write_lines(tmp_path / "d.jsonl", [turns(("Ann Lee", "joy"), ("Ann\u00a0Lee", "joy"), ("Ann  Lee", "joy"))])
    out = tmp_path / "out.jsonl"

    write_jsonl(read_jsonl(file, "test"), out)

    assert read_jsonl(out, "test")[0].speakers == ("Ann Lee",)
    assert "\u00a0" not in out.read_text(encoding="utf-8")


def test_a_label_set_refuses_two_labels_that_differ_only_in_spaces() -> None:
    with pytest.raises(ValueError, match="duplicate labels"):
        LabelSet.from_names("user", ["very happy", "very\u00a0happy"])


def test_a_label_set_reads_a_label_in_any_spacing() -> None:
    # A label set saved by an earlier version with a no-break space still reads the plain spelling.
    saved = LabelSet.from_names("user", ["very\u00a0happy", "sad"])

    assert saved.canonical("very happy") == saved.canonical("VERY  HAPPY") == "very\u00a0happy"


def test_a_tab_inside_an_emotion_is_still_refused(tmp_path: Path) -> None:
    file = write_lines(tmp_path / "d.jsonl", [turns(("Ann", "very\thappy"))])

    with pytest.raises(InputError, match="control character"):
        read_jsonl(file, "test")


# -- COSMIC speaker names ----------------------------------------------------------------------------
def test_a_cosmic_speaker_name_is_read_in_the_form_jsonl_reads_it(tmp_path: Path) -> None:
    data = [dict(field) if isinstance(field, dict) else field for field in IEMOCAP]
    data[0]["Ses01F_impro01"] = ["\ufeffF\u200b", "M\u202e"]
    (tmp_path / "iemocap.pkl").write_bytes(pickle.dumps(data, protocol=2))

    [dialogue] = load_dialogues(DataSource("cosmic-iemocap", path=tmp_path), "train")

    assert dialogue.speakers == ("F", "M")


# -- the unified mappings against the data README --------------------------------------------------
README_UNIFIED = ("joyful", "sad", "neutral", "mad", "excited", "fear", "disgust", "peaceful", "powerful")


@pytest.mark.parametrize("mapping", list(MAPPINGS.values()), ids=list(MAPPINGS))
@pytest.mark.parametrize("dataset", list(BENCHMARK_LABEL_SETS))
def test_predicted_original_emotion_inverts_every_benchmark_label(mapping: Any, dataset: str) -> None:
    """Each label of the benchmark, predicted with all the mass, maps back to itself; and with
    every score tied, the answer is the dataset's class that comes first in unified order, as the
    predicted label itself does."""
    labels = mapping.label_set.labels
    for original in BENCHMARK_LABEL_SETS[dataset].labels:
        unified = mapping.to_unified(dataset, original)
        scores = {label: float(label == unified) for label in labels}
        assert mapping.to_original(dataset, unified) == original
        assert mapping.best_original(dataset, scores) == original
    first = next(label for label in labels if mapping.to_original(dataset, label) is not None)
    assert mapping.best_original(dataset, dict.fromkeys(labels, 0.5)) == mapping.to_original(dataset, first)
    if mapping.name == "instructerc":
        assert set(labels) == set(README_UNIFIED)  # the paper's 9-label unified training


# -- a user's own list of labels -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("labels", "said"), [(["joy", "Joy"], "duplicate labels"), (["joy ", "sad"], "unpadded"), ([], "is empty")], ids=["case", "pad", "none"]
)
def test_a_list_of_labels_that_is_no_label_set_is_refused_when_the_source_is_made(tmp_path: Path, labels: list[str], said: str) -> None:
    with pytest.raises(InputError, match=said) as error:
        DataSource("jsonl", path=tmp_path / "not-read-yet.jsonl", label_set=labels)
    assert error.value.field == "label_set"


def test_a_list_of_labels_given_as_a_generator_is_read_once_for_every_use(tmp_path: Path) -> None:
    file = write_lines(tmp_path / "d.jsonl", [turns(("Ann", "JOY"))])
    source = DataSource("jsonl", path=file, label_set=(label for label in ["joy", "sad"]))

    assert label_set_of(source).labels == label_set_of(source).labels == ("joy", "sad")
    assert [u.emotion for u in load_dialogues(source, "test")[0].utterances] == ["joy"]


# -- a text file given in place of a pickle --------------------------------------------------------
def test_a_csv_given_as_a_cosmic_pickle_is_named_a_text_file(run_cli, tmp_path: Path) -> None:
    file = tmp_path / "test_sent_emo.csv"
    file.write_text(MELD_HEADER + "".join(meld_rows(3)), encoding="utf-8")

    result = run_cli("data", "stats", "--dataset", "cosmic-meld", "--data", file)

    assert result.code != 0 and len(result.err.strip().splitlines()) == 1
    assert result.err.startswith(f"instructerc: error: {file}: not a pickle but a text file (a CSV or JSONL file?)")
    assert "unsafe" not in result.err


def test_a_text_pickle_that_would_run_code_is_still_refused_as_such(tmp_path: Path) -> None:
    # Protocol 0 is printable text: being text must not hide the refusal.
    with pytest.raises(InputError, match="refused to load global 'os.system'"):
        load_bytes(tmp_path, b"cos\nsystem\n(S'echo hi'\ntR.")


def test_a_protocol_0_pickle_of_data_still_loads(tmp_path: Path) -> None:
    assert load_bytes(tmp_path, pickle.dumps({"a": ["x", 1, 2.5]}, protocol=0)) == {"a": ["x", 1, 2.5]}
