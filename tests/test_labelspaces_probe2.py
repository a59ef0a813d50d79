"""Label spaces end to end: JSONL gold in unified labels, files mixing benchmarks, round trips
through ``data export --labels uime``, and errors that point at an option that works."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.registry import DataSource, load_dialogues, unify
from instructerc.errors import InputError
from instructerc.evaluation.harness import check_scorable
from instructerc.labels.benchmarks import IEMOCAP, MELD
from instructerc.labels.unified import FEELING_WHEEL, INSTRUCTERC
from tiny import tiny_model_dir

UIME = INSTRUCTERC.label_set


@pytest.fixture(scope="module")
def uime_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("labelspaces") / "tiny-uime", UIME)


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def dialogue(name: str, dataset: str | None, *golds: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": name,
        "utterances": [{"speaker": "AB"[k % 2], "text": f"Line {k}.", "emotion": g} for k, g in enumerate(golds)],
    }
    if dataset is not None:
        record["dataset"] = dataset
    return record


# A MELD and an EmoryNLP dialogue in their own labels: 'Neutral' beside 'neutral', 'Sad' beside 'sadness'.
MIXED = [
    dialogue("m", "meld", "sadness", "neutral", "surprise"),
    dialogue("e", "emorynlp", "Sad", "Neutral", "Scared"),
    dialogue("i", "iemocap", "frustrated"),
]


def evaluate(run_cli, model: Path, data: Path, out: Path, *options: str):
    return run_cli(
        "evaluate", "--model", model, "--dataset", "jsonl", "--data", data, "--split", "test", "--out", out, "--no-progress", *options
    )


# -- --label-set NAME never makes a dialogue of another benchmark that dataset's ---------------------
def test_label_set_meld_refuses_a_dialogue_that_names_another_benchmark(run_cli, uime_model: Path, tmp_path: Path) -> None:
    """It was made MELD's: scored on MELD's classes and written back as "dataset": "meld"."""
    data = write_lines(tmp_path / "mixed.jsonl", [dialogue("m", "meld", "sadness"), dialogue("e", "emorynlp", "Sad", "Neutral")])

    result = evaluate(run_cli, uime_model, data, tmp_path / "eval", "--label-set", "meld")

    assert result.code == 2
    [line] = result.err.splitlines()
    assert f"{data}: field 'dataset'" in line and "dialogue 'e' names dataset 'emorynlp'" in line and "--labels uime" in line
    assert not (tmp_path / "eval").exists()


def test_labels_uime_reads_a_file_mixing_benchmarks_in_their_own_labels(tmp_path: Path) -> None:
    """One label set inferred over the file clashed ('Neutral' beside 'neutral') and refused it."""
    data = write_lines(tmp_path / "mixed.jsonl", MIXED)

    dialogues = {d.id: d for d in load_dialogues(DataSource("jsonl", path=data, labels="uime"), "test")}

    assert [u.emotion for u in dialogues["m"].utterances] == ["sad", "neutral", "powerful"]
    assert [u.emotion for u in dialogues["e"].utterances] == ["sad", "neutral", "fear"]
    assert [u.extra["original_emotion"] for u in dialogues["e"].utterances] == ["Sad", "Neutral", "Scared"]
    assert [u.emotion for u in dialogues["i"].utterances] == ["fear"]


def test_a_mixed_file_evaluated_with_labels_uime_is_scored_per_named_dataset(run_cli, uime_model: Path, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "mixed.jsonl", MIXED)
    out = tmp_path / "eval"

    result = evaluate(run_cli, uime_model, data, out, "--labels", "uime")

    assert result.code == 0, result.err
    by_dataset = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["systems"]["llm"]["by_dataset"]
    assert {d: m["count"] for d, m in by_dataset.items()} == {"meld": 3, "emorynlp": 3, "iemocap": 1}
    assert by_dataset["emorynlp"]["labels"] == ["Joyful", "Mad", "Peaceful", "Neutral", "Sad", "Powerful", "Scared"]


# -- gold in unified labels (--label-set uime) on dialogues that name their benchmark ----------------
def unified_gold_file(path: Path) -> Path:
    # 'fear' is IEMOCAP's frustrated in the paper's mapping; 'powerful' is MELD's surprise.
    return write_lines(
        path,
        [
            dialogue("m", "meld", "joyful", "sad", "powerful", "neutral"),
            dialogue("i", "iemocap", "fear", "excited"),
            dialogue("u", None, "mad"),
        ],
    )


def test_unified_gold_of_a_named_benchmark_keeps_its_datasets_label(tmp_path: Path) -> None:
    data = unified_gold_file(tmp_path / "unified.jsonl")

    dialogues = {d.id: d for d in load_dialogues(DataSource("jsonl", path=data, label_set="uime"), "test")}

    assert [u.emotion for u in dialogues["m"].utterances] == ["joyful", "sad", "powerful", "neutral"], "the gold stays as given"
    assert [u.extra["original_emotion"] for u in dialogues["m"].utterances] == ["joy", "sadness", "surprise", "neutral"]
    assert [u.extra["original_emotion"] for u in dialogues["i"].utterances] == ["frustrated", "excited"]
    assert "original_emotion" not in dialogues["u"].utterances[0].extra, "a dialogue of no benchmark is scored in the unified labels"


def test_evaluate_scores_unified_gold_on_each_named_datasets_classes(run_cli, uime_model: Path, tmp_path: Path) -> None:
    """Refused before, with a hint (--label-set meld) that could not read unified gold either."""
    data = unified_gold_file(tmp_path / "unified.jsonl")
    out = tmp_path / "eval"

    result = evaluate(run_cli, uime_model, data, out, "--label-set", "uime")

    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["data"]["label_set"] == "uime", "metrics.json names the gold's label set"
    assert "gold read as label set uime" in (out / "report.md").read_text(encoding="utf-8"), "and so does report.md"
    by_dataset = metrics["systems"]["llm"]["by_dataset"]
    assert by_dataset["meld"]["labels"] == list(MELD.labels) and by_dataset["meld"]["count"] == 4
    assert by_dataset["iemocap"]["labels"] == list(IEMOCAP.labels) and by_dataset["iemocap"]["count"] == 2
    assert by_dataset["unified"]["labels"] == list(UIME.labels), "named by its file"
    # By hand: a prediction is right where its dataset's label is the gold's original; a unified
    # label the dataset lacks is <outside>, an error.
    for record in read_jsonl(out / "predictions.jsonl"):
        if record.get("dataset") in ("meld", "iemocap"):
            utterances = record["utterances"]
            right = sum(u["predicted_original_emotion"] == u["original_emotion"] for u in utterances)
            assert by_dataset[record["dataset"]]["accuracy"] == pytest.approx(100 * right / len(utterances))


def test_a_unified_gold_the_named_dataset_lacks_is_refused_with_its_classes(run_cli, uime_model: Path, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "excited.jsonl", [dialogue("m", "meld", "excited", "joyful")])

    result = evaluate(run_cli, uime_model, data, tmp_path / "eval", "--label-set", "uime")

    assert result.code == 2
    assert "'excited' in 'meld' (accepted: " + ", ".join(MELD.labels) + ")" in result.err


# -- round trips through data export --labels uime ---------------------------------------------------
def test_an_export_in_unified_labels_round_trips_and_names_its_label_space(run_cli, uime_model: Path, tmp_path: Path) -> None:
    """Export in unified labels, evaluate the export: the same scores as the source read with
    --labels uime; read again with --labels uime, the error says the file is unified already."""
    source = write_lines(tmp_path / "mine.jsonl", MIXED)
    exported = tmp_path / "paper.jsonl"

    export = run_cli("data", "export", "--dataset", "jsonl", "--data", source, "--labels", "uime", "--split", "test", "--out", exported)
    twice = run_cli("data", "stats", "--dataset", "jsonl", "--data", exported, "--labels", "uime")
    direct = evaluate(run_cli, uime_model, source, tmp_path / "direct", "--labels", "uime")
    round_trip = evaluate(run_cli, uime_model, exported, tmp_path / "round-trip")

    assert export.code == 0 and "emotions in the unified labels uime (the dataset's own in original_emotion)" in export.out
    assert twice.code == 2 and "utterance 2: emotion 'powerful' is not a meld label" in twice.err
    assert "already unified (it keeps original_emotion): read it without --labels" in twice.err
    assert direct.code == 0 and round_trip.code == 0, direct.err + round_trip.err

    def scores(out: Path) -> dict:
        return json.loads((out / "metrics.json").read_text(encoding="utf-8"))["systems"]["llm"]["by_dataset"]

    assert scores(tmp_path / "round-trip") == scores(tmp_path / "direct")


def test_export_names_the_label_space_it_wrote(run_cli, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "mine.jsonl", [dialogue("m", None, "joy")])

    result = run_cli(
        "data", "export", "--dataset", "jsonl", "--data", data, "--label-set", "meld", "--split", "test", "--out", tmp_path / "x.jsonl"
    )

    assert result.code == 0 and "emotions in label set meld" in result.out


def test_unifying_a_dialogue_that_names_no_dataset_says_where_its_name_came_from(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "mine.jsonl", [dialogue("a", None, "joy")])

    with pytest.raises(InputError) as error:
        load_dialogues(DataSource("jsonl", path=data, labels="uime"), "test")

    assert error.value.field == "dataset" and '"dataset"' in error.value.message and "file's name" in error.value.message


# -- the hint of an unscorable gold names an option that reads it ------------------------------------
def test_unified_gold_for_a_model_of_its_own_labels_points_at_labels_original() -> None:
    """The hint was --label-set, which a benchmark refuses and which cannot undo unified labels."""
    unified = unify([Dialogue("d", "meld", "test", (Utterance("A", "Hi", "surprise"), Utterance("B", "Oh", "joy")))], INSTRUCTERC)

    with pytest.raises(InputError) as error:
        check_scorable(unified, MELD, Path("data"))

    message = error.value.message
    assert "'joyful', 'powerful'" in message and "--labels original" in message and "--label-set" not in message
    assert str(error.value).startswith("data: field 'emotion'")


def test_gold_of_a_named_benchmark_in_another_spelling_points_at_labels_uime() -> None:
    named = [Dialogue("d", "meld", "test", (Utterance("A", "Hi", "Sad"),))]

    with pytest.raises(InputError) as error:
        check_scorable(named, FEELING_WHEEL.label_set)

    assert "'Sad' in 'meld'" in error.value.message and "--labels uime" in error.value.message


def test_predict_warns_of_a_dataset_name_close_to_a_benchmark(run_cli, uime_model: Path, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "p.jsonl", [dialogue("a", "emory", "joy"), dialogue("b", "meld", "joy"), dialogue("c", "mine", "joy")])
    result = run_cli("predict", "--model", uime_model, "--input", source, "--output", tmp_path / "o.jsonl", "--no-progress")
    assert result.code == 0, result.err
    assert "warning: dataset 'emory' (did you mean 'emorynlp'?) is not one the model's" in result.err
    assert "'mine'" not in result.err and "'meld'" not in result.err
    records = {r["id"]: r for r in read_jsonl(tmp_path / "o.jsonl")}
    assert "predicted_original_emotion" in records["b"]["utterances"][0]
    assert "predicted_original_emotion" not in records["a"]["utterances"][0]
