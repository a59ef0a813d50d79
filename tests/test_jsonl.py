"""The user JSONL format: export, read back, keep unknown keys, folders and unified labels."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.jsonl import write_jsonl
from instructerc.data.registry import DataSource, label_set_of, load_dialogues
from instructerc.labels.benchmarks import MELD
from instructerc.labels.unified import INSTRUCTERC


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize(("name", "label_set"), [("meld", "meld"), ("cosmic-emorynlp", "emorynlp")])
def test_export_then_load_gives_back_the_same_dialogues(data_root: Path, run_cli, tmp_path: Path, name: str, label_set: str) -> None:
    out = tmp_path / "test.jsonl"
    original = load_dialogues(DataSource(name, path=data_root), "test")

    result = run_cli("data", "export", "--dataset", name, "--split", "test", "--out", out, "--data", data_root)

    assert (result.code, result.err) == (0, "")
    assert f"wrote {len(original)} dialogues ({sum(len(d) for d in original)} utterances)" in result.out
    loaded = load_dialogues(DataSource("jsonl", path=out, label_set=label_set), "test")
    assert loaded == original


def test_export_keeps_real_meld_text_and_extra_columns(data_root: Path, run_cli, tmp_path: Path) -> None:
    out = tmp_path / "meld.jsonl"
    run_cli("data", "export", "--dataset", "meld", "--split", "test", "--out", out, "--data", data_root)

    first = read_lines(out)[0]
    assert (first["id"], first["dataset"]) == ("0", "meld")
    assert set(first["utterances"][0]) == {"speaker", "text", "emotion", "sentiment", "season", "episode", "start_time", "end_time"}
    assert "\\u" not in out.read_text(encoding="utf-8"), "text is written as UTF-8, not escaped"


def test_export_writes_a_file_with_the_usual_permissions(data_root: Path, run_cli, tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    out = tmp_path / "meld.jsonl"
    run_cli("data", "export", "--dataset", "meld", "--split", "dev", "--out", out, "--data", data_root)

    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


RECORDS = [
    {
        "id": "d1",
        "dataset": "meld",
        "topic": {"name": "lanterns", "tags": ["paper", "red"]},
        "rating": 4.5,
        "utterances": [
            {"speaker": "Ann", "text": "The lanterns came!", "emotion": "joy", "turn": 0, "notes": None},
            {"speaker": "Ben", "text": "Soaked, though.", "emotion": "sadness", "audio": {"start": 1.5, "end": 2.0}},
        ],
    },
    {"id": "d2", "dataset": "meld", "utterances": [{"speaker": "Cy", "text": "Eh.", "emotion": "neutral"}]},
]


def test_unknown_keys_are_kept_on_dialogues_and_utterances(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", RECORDS)

    first = load_dialogues(DataSource("jsonl", path=source, label_set="meld"), "test")[0]

    assert first.extra == {"topic": {"name": "lanterns", "tags": ["paper", "red"]}, "rating": 4.5}
    assert first.utterances[0].extra == {"turn": 0, "notes": None}
    assert first.utterances[1].extra == {"audio": {"start": 1.5, "end": 2.0}}


def test_unknown_keys_are_written_back_unchanged(run_cli, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "out.jsonl"

    result = run_cli("data", "export", "--dataset", "jsonl", "--label-set", "meld", "--split", "test", "--data", source, "--out", out)

    assert result.code == 0
    assert read_lines(out) == RECORDS


def test_verbalizers_and_case_are_read_as_canonical_labels(tmp_path: Path) -> None:
    source = write_lines(
        tmp_path / "in.jsonl",
        [
            {
                "utterances": [
                    {"speaker": "A", "text": "x", "emotion": "Joyful"},
                    {"speaker": "B", "text": "y", "emotion": " ANGER "},
                ]
            }
        ],
    )

    dialogue = load_dialogues(DataSource("jsonl", path=source, label_set="meld"), "test")[0]

    assert [u.emotion for u in dialogue.utterances] == ["joy", "anger"]


def test_unlabelled_dialogues_load_and_export_without_emotions(run_cli, tmp_path: Path) -> None:
    source = write_lines(
        tmp_path / "chat.jsonl",
        [
            {"utterances": [{"speaker": "A", "text": "Hello there."}, {"speaker": "B", "text": "Hi.", "emotion": None}]},
            {"utterances": [{"speaker": "A", "text": "Bye."}]},
        ],
    )

    dialogues = load_dialogues(DataSource("jsonl", path=source), "test")

    assert [d.id for d in dialogues] == ["line-1", "line-2"]
    assert {d.dataset for d in dialogues} == {"chat"}, "the dataset defaults to the file name"
    assert all(u.emotion is None for d in dialogues for u in d.utterances)
    assert label_set_of(DataSource("jsonl", path=source)) is None

    stats = run_cli("data", "stats", "--dataset", "jsonl", "--data", source)
    assert stats.code == 0
    assert stats.out.splitlines()[0] == "jsonl (unlabelled)"
    assert stats.out.split()[-2:] == ["2", "3"]  # chat.jsonl: 2 dialogues, 3 utterances

    out = tmp_path / "out.jsonl"
    assert run_cli("data", "export", "--dataset", "jsonl", "--split", "test", "--data", source, "--out", out).code == 0
    assert all("emotion" not in u for record in read_lines(out) for u in record["utterances"])


def utterance(text: str, emotion: str) -> dict[str, str]:
    return {"speaker": "A", "text": text, "emotion": emotion}


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mydata"
    folder.mkdir()
    write_lines(
        folder / "train.jsonl",
        [
            {"id": "t1", "utterances": [utterance("a", "calm"), utterance("b", "upset")]},
            {"id": "t2", "utterances": [utterance("c", "calm")]},
        ],
    )
    write_lines(folder / "dev.jsonl", [{"id": "v1", "utterances": [utterance("d", "upset")]}])
    write_lines(folder / "test.jsonl", [{"id": "s1", "utterances": [utterance("e", "calm"), utterance("f", "calm")]}])
    return folder


def test_a_folder_of_three_split_files(run_cli, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    source = DataSource("jsonl", path=folder)

    assert label_set_of(source).labels == ("calm", "upset"), "inferred from train, sorted"
    for split, ids in (("train", ["t1", "t2"]), ("dev", ["v1"]), ("valid", ["v1"]), ("test", ["s1"])):
        dialogues = load_dialogues(source, split)
        assert [d.id for d in dialogues] == ids
        assert {(d.dataset, d.split) for d in dialogues} == {("mydata", "dev" if split == "valid" else split)}

    result = run_cli("data", "stats", "--dataset", "jsonl", "--data", folder)
    rows = [line.split() for line in result.out.splitlines()[2:]]
    assert rows == [["train", "2", "3", "2", "1"], ["dev", "1", "1", "0", "1"], ["test", "1", "2", "2", "0"]]


def test_a_folder_rejects_an_emotion_its_train_file_lacks(tmp_path: Path) -> None:
    from instructerc.errors import InputError

    folder = _folder(tmp_path)
    write_lines(folder / "dev.jsonl", [{"id": "v1", "utterances": [{"speaker": "A", "text": "x", "emotion": "giddy"}]}])

    with pytest.raises(InputError, match="unknown emotion 'giddy'") as error:
        load_dialogues(DataSource("jsonl", path=folder), "dev")
    assert error.value.path == str(folder / "dev.jsonl") and error.value.line == 1


def test_export_with_uime_labels_writes_unified_and_original_emotions(data_root: Path, run_cli, tmp_path: Path) -> None:
    out = tmp_path / "uime.jsonl"

    result = run_cli("data", "export", "--dataset", "meld", "--labels", "uime", "--split", "test", "--out", out, "--data", data_root)

    assert result.code == 0
    utterances = [u for record in read_lines(out) for u in record["utterances"]]
    assert len(utterances) == 2610
    assert all(u["emotion"] in INSTRUCTERC.label_set for u in utterances)
    assert all(u["original_emotion"] in MELD for u in utterances)
    assert all(u["emotion"] == INSTRUCTERC.to_unified("meld", u["original_emotion"]) for u in utterances)
    assert sum(u["emotion"] == "powerful" for u in utterances) == 281  # MELD surprise (README)

    back = load_dialogues(DataSource("jsonl", path=out, label_set="uime"), "test")
    assert back == load_dialogues(DataSource("meld", path=data_root, labels="uime"), "test")


def test_exported_uime_file_cannot_be_unified_twice(data_root: Path, run_cli, tmp_path: Path) -> None:
    """A file already in unified labels, read as ``--labels uime``, is an input error, not a crash."""
    out = tmp_path / "uime.jsonl"
    run_cli("data", "export", "--dataset", "meld", "--labels", "uime", "--split", "dev", "--out", out, "--data", data_root)

    result = run_cli("data", "stats", "--dataset", "jsonl", "--labels", "uime", "--data", out)

    assert result.code == 2
    assert "is not a meld label" in result.err and "Traceback" not in result.err


def test_write_jsonl_of_hand_built_dialogues_round_trips(tmp_path: Path) -> None:
    dialogue = Dialogue(
        id="x1",
        dataset="mine",
        split="test",
        utterances=(Utterance("Zoë", "Ça va? “Yes” — fine.", "calm", {"k": [1, 2]}), Utterance("Al", "…", None)),
        extra={"source": "hand"},
    )
    out = tmp_path / "mine.jsonl"

    assert write_jsonl([dialogue], out) == 1
    assert load_dialogues(DataSource("jsonl", path=out, label_set=["calm"]), "test") == [dialogue]


def test_a_benchmark_named_in_any_case_is_that_benchmark(tmp_path: Path) -> None:
    """A dataset spelled "MELD" missed MELD's scoring and predicted_original_emotion, which match the name exactly."""
    from instructerc.data.jsonl import iter_jsonl
    from instructerc.errors import InputError

    def line(index: int, name: str) -> str:
        return json.dumps({"id": str(index), "dataset": name, "utterances": [{"speaker": "A", "text": "hi"}]}) + "\n"

    path = tmp_path / "mine.jsonl"
    path.write_text("".join(line(i, n) for i, n in enumerate(["MELD", " EmoryNLP ", "iemocap", "Custom"])), encoding="utf-8")
    assert [d.dataset for _, d in iter_jsonl(path)] == ["meld", "emorynlp", "iemocap", "Custom"]
    path.write_text(line(0, "  "), encoding="utf-8")
    with pytest.raises(InputError, match="'dataset' must be a non-empty string"):
        list(iter_jsonl(path))
