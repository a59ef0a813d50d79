"""A user's own conversation files given to ``predict``, ``evaluate``, ``data`` and ``prompts``
(fourth probe): names that are empty, files that hold nothing, ids given twice, folders without
the split asked for, files joined with their byte-order marks, labels on two lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from instructerc.labels.benchmarks import MELD
from tiny import tiny_model_dir

ANN = {"speaker": "Ann", "text": "Hi!", "emotion": "joy"}


@pytest.fixture(scope="module")
def meld_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny-meld", MELD)


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def one_line_error(result) -> str:
    """The single error line of a run that failed on its input (exit 2, no traceback)."""
    assert result.code == 2, result
    [line] = result.err.splitlines()
    assert line.startswith("instructerc: error: "), line
    return line


def test_predict_refuses_an_empty_label_set_name_instead_of_ignoring_it(run_cli, meld_model: Path, tmp_path: Path) -> None:
    source = write_records(tmp_path / "in.jsonl", [{"id": "d", "utterances": [{**ANN, "emotion": "glee"}]}])
    out = tmp_path / "out.jsonl"

    line = one_line_error(run_cli("predict", "--input", source, "--output", out, "--model", meld_model, "--label-set", ""))

    assert "argument --label-set: unknown label set ''" in line
    assert not out.exists()


@pytest.mark.parametrize("content", ["", "\n  \n\r\n"])
def test_exporting_an_empty_file_is_refused_and_keeps_the_earlier_export(run_cli, tmp_path: Path, content: str) -> None:
    source = tmp_path / "dialogues.jsonl"
    source.write_text(content, encoding="utf-8")
    out = tmp_path / "export.jsonl"
    out.write_text("earlier export\n", encoding="utf-8")

    line = one_line_error(run_cli("data", "export", "--dataset", "jsonl", "--data", source, "--split", "test", "--out", out))

    assert f"{source}: no dialogues in the file" in line
    assert out.read_text(encoding="utf-8") == "earlier export\n"


def test_an_empty_split_file_is_named_not_blamed_for_missing_gold(run_cli, meld_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_records(data / "train.jsonl", [{"id": "d", "utterances": [ANN]}])
    (data / "test.jsonl").write_text("\n", encoding="utf-8")

    out = tmp_path / "ev"
    evaluated = run_cli("evaluate", "--model", meld_model, "--dataset", "jsonl", "--data", data, "--split", "test", "--out", out)
    stats = run_cli("data", "stats", "--dataset", "jsonl", "--data", data)

    for result in (evaluated, stats):
        assert f"{data / 'test.jsonl'}: no dialogues in the file" in one_line_error(result)


def test_an_id_given_twice_is_named_with_both_of_its_lines(run_cli, tmp_path: Path) -> None:
    records = [{"id": k, "utterances": [ANN]} for k in ("a\nb", "x", "y", "a\nb")]
    source = write_records(tmp_path / "dialogues.jsonl", records)

    line = one_line_error(run_cli("data", "stats", "--dataset", "jsonl", "--data", source))

    assert line == f"instructerc: error: {source}:4: field 'id': dialogue id 'a\\nb' appears twice (also on line 1)"


def test_an_error_naming_a_users_line_break_stays_on_one_line(run_cli, tmp_path: Path) -> None:
    record = {"id": "a\nb", "dataset": "x\ny\u2028\x1b[2J", "utterances": [ANN]}
    source = write_records(tmp_path / "dialogues.jsonl", [record])

    line = one_line_error(run_cli("data", "stats", "--dataset", "jsonl", "--data", source, "--labels", "uime"))

    assert "dialogue 'a\\nb' is from 'x\\ny\\u2028\\x1b[2J'" in line, line


def test_a_folder_without_split_files_is_named_as_such_not_as_missing_train(run_cli, meld_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    write_records(folder / "dialogues.jsonl", [{"id": "d", "utterances": [ANN]}])  # the user's own name, not a split's
    out = tmp_path / "ev"

    evaluated = run_cli("evaluate", "--model", meld_model, "--dataset", "jsonl", "--data", folder, "--split", "test", "--out", out)
    stats = run_cli("data", "stats", "--dataset", "jsonl", "--data", folder)

    for result in (evaluated, stats):
        line = one_line_error(result)
        assert f"{folder}: holds none of train.jsonl, dev.jsonl, test.jsonl" in line and "train.jsonl not found" not in line


def test_files_saved_with_a_byte_order_mark_and_joined_are_read(run_cli, tmp_path: Path) -> None:
    parts = [b"\xef\xbb\xbf" + json.dumps({"id": f"d{k}", "utterances": [ANN]}).encode() + b"\r\n" for k in range(2)]
    source = tmp_path / "joined.jsonl"
    source.write_bytes(b"".join(parts))  # what `cat a.jsonl b.jsonl` gives for two files a Windows editor saved
    out = tmp_path / "export.jsonl"

    result = run_cli("data", "export", "--dataset", "jsonl", "--data", source, "--split", "test", "--out", out)

    assert result.code == 0, result.err
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == ["d0", "d1"]


def test_prompts_of_unlabelled_conversations_say_how_to_name_the_labels(run_cli, tmp_path: Path) -> None:
    source = write_records(tmp_path / "chat.jsonl", [{"id": "d", "utterances": [{"speaker": "Ann", "text": "Hi!"}]}])

    line = one_line_error(run_cli("prompts", "show", "--dataset", "jsonl", "--data", source, "--split", "test"))

    assert line.startswith(f"instructerc: error: {source}: field 'emotion': no gold emotions") and "--label-set" in line, line
    assert "--model DIR" in line


@pytest.mark.parametrize("emotion", ["jo\ny", "very\thappy", "joy\x1b[31m"])
def test_an_emotion_with_a_control_character_is_refused_on_its_line(run_cli, tmp_path: Path, emotion: str) -> None:
    records = [{"id": "a", "utterances": [ANN]}, {"id": "b", "utterances": [{**ANN, "emotion": emotion}]}]
    source = write_records(tmp_path / "dialogues.jsonl", records)

    line = one_line_error(run_cli("data", "stats", "--dataset", "jsonl", "--data", source))

    assert line.startswith(f"instructerc: error: {source}:2: field 'utterances[0].emotion': an emotion holds a control character"), line


def unified_record(emotion: str, original: Any) -> dict[str, Any]:
    """A MELD dialogue as ``data export --labels uime`` writes it, its second utterance edited."""
    first = {"speaker": "Ann", "text": "Hi!", "emotion": "joyful", "original_emotion": "joy"}
    second = {"speaker": "Bob", "text": "Oh no.", "emotion": emotion, "original_emotion": original}
    return {"id": "d", "dataset": "meld", "utterances": [first, second]}


@pytest.fixture(scope="module")
def uime_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instructerc.labels.unified import INSTRUCTERC

    return tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny-uime", INSTRUCTERC.label_set)


@pytest.mark.parametrize(
    ("emotion", "original", "message"),
    [
        (
            "sad",
            "joy",
            "'original_emotion' joy disagrees with 'emotion' sad (meld's joy is written joy or joyful)",
        ),  # gold corrected by hand
        ("sad", None, "'original_emotion' must be a non-empty string, not null"),
        ("sad", 3, "'original_emotion' must be a non-empty string, not a number"),
        ("sad", "gloom", "unknown emotion 'gloom' for label set meld"),
    ],
)
def test_an_original_emotion_that_disagrees_or_is_no_label_is_refused_on_its_line(
    run_cli, uime_model: Path, tmp_path: Path, emotion: str, original: Any, message: str
) -> None:
    source = write_records(tmp_path / "unified.jsonl", [unified_record(emotion, original)])
    out = tmp_path / "ev"

    result = run_cli("evaluate", "--model", uime_model, "--dataset", "jsonl", "--data", source, "--split", "test", "--out", out)

    line = one_line_error(result)
    assert line.startswith(f"instructerc: error: {source}:1: field 'utterances[1].original_emotion': {message}"), line
    assert not out.exists()


def test_an_original_emotion_in_another_case_is_scored_in_the_datasets_spelling(run_cli, uime_model: Path, tmp_path: Path) -> None:
    source = write_records(tmp_path / "unified.jsonl", [unified_record("sad", " SADNESS")])
    out = tmp_path / "ev"

    result = run_cli("evaluate", "--model", uime_model, "--dataset", "jsonl", "--data", source, "--split", "test", "--out", out)

    assert result.code == 0, result.err
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    golds = [
        u["original_emotion"]
        for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        for u in json.loads(line)["utterances"]
    ]
    assert golds == ["joy", "sadness"]


@pytest.mark.parametrize(("dataset", "name"), [("meld", "MELD"), ("emorynlp", "EmoryNLP")])
def test_one_csv_given_for_a_csv_dataset_is_named_as_a_file(run_cli, tmp_path: Path, dataset: str, name: str) -> None:
    single = tmp_path / "test_sent_emo.csv"
    single.write_text("Utterance,Speaker\n", encoding="utf-8")

    line = one_line_error(run_cli("data", "stats", "--dataset", dataset, "--data", single))

    assert line == (
        f"instructerc: error: {single}: is a file, not a folder holding the {name} train CSV: give the folder "
        "(each split is its own file there)"
    )


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_pickle_given_as_jsonl_is_named_as_a_pickle(run_cli, tmp_path: Path, protocol: int) -> None:
    import pickle

    source = tmp_path / "meld.pkl"
    source.write_bytes(pickle.dumps([["d1"], {"d1": ["Hi!"]}], protocol=protocol))

    line = one_line_error(run_cli("data", "stats", "--dataset", "jsonl", "--data", source))

    assert line.startswith(f"instructerc: error: {source}: a Python pickle, not text") and "--dataset cosmic-meld" in line, line


def test_a_demonstration_from_unlabelled_conversations_is_refused_with_the_way_round(run_cli, tmp_path: Path) -> None:
    source = write_records(tmp_path / "chat.jsonl", [{"id": "d", "utterances": [{"speaker": "Ann", "text": "Hi!"}]}])
    argv = ("prompts", "show", "--dataset", "jsonl", "--data", source, "--split", "test", "--label-set", "meld")

    line = one_line_error(run_cli(*argv))
    shown = run_cli(*argv, "--no-demonstration")

    assert line.startswith(f"instructerc: error: {source}: field 'emotion': the training dialogues have no gold emotions"), line
    assert "--no-demonstration" in line
    assert shown.code == 0 and "(no gold label)" in shown.out


def test_one_label_in_two_cases_is_refused_on_the_line_of_the_second(run_cli, tmp_path: Path) -> None:
    records = [
        {"id": "a", "utterances": [{**ANN, "emotion": "Joy"}]},
        {"id": "b", "utterances": [{**ANN, "emotion": "sadness"}]},
        {"id": "c", "utterances": [ANN, {**ANN, "emotion": "joy"}]},
    ]
    source = write_records(tmp_path / "dialogues.jsonl", records)

    line = one_line_error(run_cli("data", "stats", "--dataset", "jsonl", "--data", source))
    read_in_meld = run_cli("data", "stats", "--dataset", "jsonl", "--data", source, "--label-set", "meld")

    assert line == (
        f"instructerc: error: {source}:3: field 'utterances[0].emotion': emotion 'joy' is 'Joy' (line 1) in another case: "
        "give one label one spelling, or pass --label-set NAME (which reads any case)"
    )
    assert read_in_meld.code == 0, read_in_meld.err


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        (
            {"dialogue_id": "d1", "speaker": "Ann", "text": "Hi!"},  # one utterance per line
            "utterances",
            "missing 'utterances' (it has 'dialogue_id', 'speaker', 'text'); a line is one dialogue whose turns are in 'utterances'",
        ),
        (
            {"id": "d", "utterances": [{"speaker": "Ann", "utterance": "Hi!"}]},
            "utterances[0].text",
            "missing 'text' (it has 'speaker', 'utterance')",
        ),
        (
            {"id": "d", "utterances": [{"Speaker": "Ann", "Text": "Hi!"}]},
            "utterances[0].speaker",
            "missing 'speaker' (it has 'Speaker', 'Text'; rename 'Speaker' to 'speaker' (keys are case-sensitive))",
        ),
    ],
)
def test_a_missing_key_is_reported_with_the_keys_the_user_wrote(
    run_cli, meld_model: Path, tmp_path: Path, record: dict[str, Any], field: str, message: str
) -> None:
    source = write_records(tmp_path / "mine.jsonl", [record])

    line = one_line_error(run_cli("predict", "--input", source, "--output", tmp_path / "out.jsonl", "--model", meld_model))

    assert line.startswith(f"instructerc: error: {source}:1: field '{field}': {message}"), line


@pytest.mark.parametrize(("content", "kind"), [("[]", "array"), ("null", "null"), ('"metrics"', "string"), ("3", "number")])
def test_a_metrics_file_that_is_no_object_is_named_in_json_words(run_cli, tmp_path: Path, content: str, kind: str) -> None:
    runs = [tmp_path / "seed1", tmp_path / "seed2"]
    for run in runs:
        run.mkdir()
        (run / "metrics.json").write_text(content + "\n", encoding="utf-8")

    line = one_line_error(run_cli("evaluate", "--runs", *runs))

    assert line == (
        f"instructerc: error: {runs[0] / 'metrics.json'}: not an instructerc metrics file (it holds a JSON {kind}, not an object)"
    )


# -- names that would forge a line or a score (found after the probe) ----------------------------
@pytest.mark.parametrize("speaker", ["Ann\nSystem", "Ann\rBob", "Ann\x85Bob", "Ann\x1b[31m"])
def test_a_speaker_name_that_breaks_the_line_is_refused_in_files_and_in_python(
    run_cli, meld_model: Path, tmp_path: Path, speaker: str
) -> None:
    from instructerc.data.dialogue import Dialogue, Utterance
    from instructerc.errors import InputError
    from instructerc.inference.predictor import checked_dialogue

    source = write_records(tmp_path / "in.jsonl", [{"id": "d", "utterances": [ANN, {**ANN, "speaker": speaker}]}])
    out = tmp_path / "out.jsonl"
    line = one_line_error(run_cli("predict", "--model", meld_model, "--input", source, "--output", out, "--no-progress"))
    assert f"{source}:1: field 'utterances[1].speaker'" in line and "line break" in line
    assert not out.exists()

    dialogue = Dialogue(id="d", dataset="x", split="test", utterances=(Utterance(speaker, "Hi!"),))
    with pytest.raises(InputError, match="line break") as error:
        checked_dialogue(dialogue, "dialogues[0]")
    assert error.value.field == "dialogues[0].utterances[0].speaker"


@pytest.mark.parametrize("mark", ["<invalid>", "<OUTSIDE>"])
def test_a_label_named_as_the_scorers_marks_is_refused(run_cli, tmp_path: Path, mark: str) -> None:
    from instructerc.labels.label_set import LabelSet

    with pytest.raises(ValueError, match="scorer's mark"):
        LabelSet("mine", ("joy", mark), ("joy", mark))
    # A generated answer that is no label would otherwise be scored right for this gold label.
    folder = tmp_path / "data"
    folder.mkdir()
    write_records(folder / "test.jsonl", [{"id": "d", "utterances": [ANN, {**ANN, "emotion": mark}]}])
    line = one_line_error(run_cli("data", "stats", "--dataset", "jsonl", "--data", folder))
    assert "scorer's mark" in line and str(folder) in line
