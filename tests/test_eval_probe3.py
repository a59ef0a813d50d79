"""``evaluate`` and ``baseline`` outputs: a folder an earlier run filled, baselines trained on the
scored file, an ``--out`` that is a file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from instructerc.errors import InputError
from instructerc.evaluation.metrics import compute_metrics
from instructerc.evaluation.report import confusion_file, write_outputs
from instructerc.evaluation.results import EvaluationResult, SystemResult
from instructerc.labels.benchmarks import EMORYNLP, MELD


def scored(dataset: str, labels: tuple[str, ...], name: str = "llm", settings: dict | None = None) -> EvaluationResult:
    gold = [labels[i % len(labels)] for i in range(4)]
    system = SystemResult("llm" if name == "llm" else "baseline", {dataset: compute_metrics(gold, gold, labels)}, settings or {})
    return EvaluationResult("test", {"dataset": "jsonl", "labels": "original"}, {name: system})


def test_a_rerun_on_other_data_leaves_no_confusion_matrix_of_the_earlier_run(tmp_path: Path) -> None:
    write_outputs(scored("meld", MELD.labels), tmp_path)
    assert (tmp_path / confusion_file("llm", "meld")).is_file()

    write_outputs(scored("emorynlp", EMORYNLP.labels), tmp_path)

    pictures = sorted(p.name for p in tmp_path.glob("confusion-*.png"))
    assert pictures == [confusion_file("llm", "emorynlp")]


def test_matrices_of_baselines_read_from_the_same_folder_stay(tmp_path: Path) -> None:
    write_outputs(scored("meld", MELD.labels, name="majority"), tmp_path)
    llm = scored("meld", MELD.labels)
    imported = scored("meld", MELD.labels, name="majority", settings={"from": str(tmp_path)})

    write_outputs(llm.with_systems(imported.systems), tmp_path)

    pictures = sorted(p.name for p in tmp_path.glob("confusion-*.png"))
    assert pictures == sorted([confusion_file("llm", "meld"), confusion_file("majority", "meld")])


def test_the_report_links_a_matrix_whose_name_holds_a_colon_as_a_file(tmp_path: Path) -> None:
    """A file called meld.jsonl is scored as jsonl:meld: the link must not read as a URL whose
    scheme is 'confusion-llm-jsonl', which Markdown renderers drop or send elsewhere."""
    write_outputs(scored("jsonl:meld", MELD.labels), tmp_path)
    picture = confusion_file("llm", "jsonl:meld")
    assert (tmp_path / picture).is_file() and ":" in picture
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert f"[{picture}](./{picture})" in report


# -- baselines trained on the dialogues they are scored on ------------------------------------------
def test_baselines_trained_on_the_scored_file_say_so(tmp_path: Path, capsys) -> None:
    from instructerc.data.registry import DataSource
    from instructerc.evaluation.baselines import run_baselines
    from instructerc.evaluation.report import render_report
    from test_baselines import SMALL, FakeEncoder, write_folder

    folder = write_folder(tmp_path / "data", SMALL)
    shutil.copy(folder / "test.jsonl", folder / "train.jsonl")  # one file read as every split, as --data FILE.jsonl is

    result = run_baselines(
        DataSource("jsonl", path=folder, label_set="meld"), "test", encoder=FakeEncoder(), cache_dir=tmp_path / "cache", progress=False
    )

    assert {name: system.settings["trained_on"] for name, system in result.systems.items()} == {"majority": "test", "minilm-logreg": "test"}
    report = render_report(result)
    assert "majority: trained on the test split itself, so its figure here is optimistic" in report
    assert "MiniLM+LR: trained on the test split itself, so its figure here is optimistic" in report
    assert "the train split holds the same dialogues as the test split" in capsys.readouterr().err


def test_baselines_trained_on_a_separate_train_split_stay_plain(tmp_path: Path, capsys) -> None:
    from instructerc.data.registry import DataSource
    from instructerc.evaluation.baselines import run_baselines
    from instructerc.evaluation.report import render_report
    from test_baselines import SMALL, write_folder

    result = run_baselines(
        DataSource("jsonl", path=write_folder(tmp_path / "data", SMALL), label_set="meld"), "test", which=["majority"], progress=False
    )

    assert result.systems["majority"].settings["trained_on"] == "train"
    assert "optimistic" not in render_report(result) and "warning" not in capsys.readouterr().err


# -- an --out that names a file fails before any work --------------------------------------------
@pytest.mark.parametrize("below", [False, True])
def test_evaluate_refuses_an_out_that_is_a_file_before_loading_the_model(tmp_path: Path, below: bool) -> None:
    from instructerc.data.registry import DataSource
    from instructerc.evaluation.evaluate import evaluate_model

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"dataset": "meld", "utterances": [{"speaker": "A", "text": "Hi.", "emotion": "joy"}]}) + "\n")
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    out = taken / "sub" if below else taken

    # No model here: the output folder is checked first, so its error is the one given.
    with pytest.raises(InputError) as caught:
        evaluate_model(tmp_path / "no-model", DataSource("jsonl", path=data, label_set="meld"), "test", out, progress=False)
    assert caught.value.field == "out" and "is a file" in caught.value.message


def test_baseline_refuses_an_out_that_is_a_file_before_training(tmp_path: Path, run_cli) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"dataset": "meld", "utterances": [{"speaker": "A", "text": "Hi.", "emotion": "joy"}]}) + "\n")

    run = run_cli("baseline", "--dataset", "jsonl", "--data", data, "--split", "test", "--only", "majority", "--out", taken)

    assert run.code == 2 and "is a file; --out names the folder" in run.err
    assert taken.read_text() == "not a folder"


def test_a_generated_label_outside_the_named_dataset_is_null_for_predict_and_outside_for_scoring() -> None:
    # predict wrote the scorer's "<outside>" marker to users as if it were an emotion of the
    # dataset (generate mode has no scores to pick the best of the dataset's own classes from).
    from instructerc.evaluation.harness import original_emotion
    from instructerc.evaluation.metrics import OUTSIDE
    from instructerc.labels.prediction import Prediction
    from instructerc.labels.unified import INSTRUCTERC

    generated = Prediction(label="peaceful", generated="peaceful")  # MELD has no peaceful class
    assert original_emotion(INSTRUCTERC, "meld", generated, restrict=True) is None
    assert original_emotion(INSTRUCTERC, "meld", generated, restrict=False) == OUTSIDE
    inside = Prediction(label="joyful", generated="joyful")
    assert original_emotion(INSTRUCTERC, "meld", inside, restrict=True) == original_emotion(INSTRUCTERC, "meld", inside, restrict=False)


# -- generated labels the dataset lacks ------------------------------------------------------------
def test_the_report_shows_the_share_of_labels_outside_the_dataset_only_where_there_are_some() -> None:
    from instructerc.evaluation.metrics import OUTSIDE
    from instructerc.evaluation.report import render_report

    gold = ["joy", "anger", "joy", "anger"]
    outside = SystemResult("llm", {"meld": compute_metrics(gold, ["joy", OUTSIDE, "joy", "anger"], ("joy", "anger"))}, {})
    report = render_report(EvaluationResult("test", {"dataset": "uime", "labels": "uime"}, {"llm": outside}))
    header = next(line for line in report.splitlines() if line.startswith("| system"))
    row = next(line for line in report.splitlines() if line.startswith("| LLM"))
    assert header.endswith("outside the dataset's classes (test) |")
    assert row.endswith("| 0.00 | 25.00 |")  # none invalid, one of four outside

    assert "outside the dataset's classes" not in render_report(scored("meld", MELD.labels))
