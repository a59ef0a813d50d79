"""``instructerc evaluate``: honest scores, every output file, unified scoring, seed aggregation."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.evaluation.metrics import INVALID, OUTSIDE, compute_metrics
from instructerc.evaluation.report import md_cell
from instructerc.evaluation.results import EvaluationResult, SystemResult
from instructerc.evaluation.scoring import score_by_dataset
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import EMORYNLP, MELD
from instructerc.labels.prediction import Prediction
from instructerc.labels.unified import INSTRUCTERC
from tiny import tiny_model_dir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXTS = ["Hi! How are you?", "I am fine, thanks.", "Oh no, that is terrible.", "Great news!"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"meld": tiny_model_dir(root / "tiny-meld", MELD), "uime": tiny_model_dir(root / "tiny-uime", INSTRUCTERC.label_set)}


def labelled_dialogues(split: str, count: int, labels: tuple[str, ...], dataset: str = "meld") -> list[dict[str, Any]]:
    return [
        {
            "id": f"{split}{i}",
            "dataset": dataset,
            "utterances": [
                {
                    "speaker": "Ann" if j % 2 == 0 else "Bob",
                    "text": TEXTS[(i + j) % len(TEXTS)],
                    "emotion": labels[(i * 3 + j) % len(labels)],
                }
                for j in range(1 + i % 3)
            ],
        }
        for i in range(count)
    ]


def write_folder(folder: Path, labels: tuple[str, ...] = MELD.labels, dataset: str = "meld") -> Path:
    """A JSONL data folder: train/dev/test.jsonl, every utterance labelled."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 12), ("dev", 4), ("test", 6)):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in labelled_dialogues(split, count, labels, dataset)), encoding="utf-8"
        )
    return folder


@pytest.fixture(scope="module")
def meld_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "meld-like")


def evaluate(run_cli, model: Path, data: Path, out: Path, *more: Any):
    return run_cli(
        "evaluate",
        "--model",
        model,
        "--dataset",
        "jsonl",
        "--data",
        data,
        "--label-set",
        "meld",
        "--split",
        "test",
        "--out",
        out,
        "--no-progress",
        *more,
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def table_titles(report: str) -> list[str]:
    return [line for line in report.splitlines() if line.startswith("## ") or line.startswith("### ")]


# -- score mode ---------------------------------------------------------------------------------
def test_score_mode_is_never_invalid_and_its_probabilities_sum_to_one(models: dict[str, Path]) -> None:
    predictor = Predictor.from_directory(models["meld"])
    dialogues = [
        Dialogue(f"d{i}", "meld", "test", tuple(Utterance(s, t) for s, t in zip(("Ann", "Bob", "Ann"), TEXTS[i : i + 3]))) for i in range(2)
    ]

    predictions = [p for ps in predictor.predict(dialogues, mode="score") for p in ps]

    assert len(predictions) == sum(len(d) for d in dialogues)
    for prediction in predictions:
        assert prediction.label in MELD.labels
        assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)


def test_evaluate_writes_metrics_predictions_png_and_report(run_cli, models: dict[str, Path], meld_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"

    result = evaluate(run_cli, models["meld"], meld_data, out)

    assert result.code == 0, result.err
    for phrase in ("weighted F1", "macro F1", "accuracy", "invalid 0.00%"):
        assert phrase in result.out
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    llm = metrics["systems"]["llm"]
    assert (metrics["split"], llm["settings"]["mode"], llm["settings"]["paper_parsing"]) == ("test", "score", False)
    meld = llm["by_dataset"]["meld"]
    assert meld["invalid_rate"] == 0.0
    assert meld["columns"] == list(MELD.labels)
    assert set(meld["per_class"]["joy"]) == {"precision", "recall", "f1", "support"}
    assert 0.0 <= meld["weighted_f1"] <= 100.0
    written = read_jsonl(out / "predictions.jsonl")
    utterances = [u for d in written for u in d["utterances"]]
    assert len(utterances) == meld["count"]
    assert all(u["emotion"] in MELD.labels and sum(u["emotion_scores"].values()) == pytest.approx(1.0, abs=1e-5) for u in utterances)
    correct = sum(u["emotion"] == u["predicted_emotion"] for u in utterances)
    assert meld["accuracy"] == pytest.approx(100 * correct / len(utterances))
    picture = out / "confusion-llm-meld.png"
    assert picture.stat().st_size > 0 and picture.read_bytes()[:8] == PNG_SIGNATURE
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| weighted F1 (test) |" in report and "LLM tiny-meld (score mode)" in report
    assert "paper parsing" not in report


def test_default_output_folder_is_inside_the_model_and_names_the_mode(
    run_cli, models: dict[str, Path], meld_data: Path, tmp_path: Path
) -> None:
    args = (
        "evaluate",
        "--model",
        models["meld"],
        "--dataset",
        "jsonl",
        "--data",
        meld_data,
        "--label-set",
        "meld",
        "--split",
        "valid",
        "--no-progress",
    )

    assert run_cli(*args).code == 0
    assert run_cli(*args, "--mode", "generate").code == 0

    assert (models["meld"] / "eval-jsonl-meld-like-dev" / "metrics.json").is_file()
    assert (models["meld"] / "eval-jsonl-meld-like-dev-generate" / "metrics.json").is_file()


# -- generate mode ------------------------------------------------------------------------------
def test_generate_mode_counts_invalid_outputs_in_their_own_column(
    run_cli, models: dict[str, Path], meld_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "generate"

    assert evaluate(run_cli, models["meld"], meld_data, out, "--mode", "generate").code == 0

    meld = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["systems"]["llm"]["by_dataset"]["meld"]
    utterances = [u for d in read_jsonl(out / "predictions.jsonl") for u in d["utterances"]]
    invalid = sum(u["predicted_emotion"] is None for u in utterances)
    assert invalid > 0, "an untrained model generates no labels"
    assert meld["invalid_rate"] == pytest.approx(100 * invalid / len(utterances))
    assert meld["columns"][-1] == INVALID
    assert sum(row[-1] for row in meld["confusion"]) == invalid
    assert (out / "confusion-llm-meld.png").read_bytes()[:8] == PNG_SIGNATURE
    assert f"column {md_cell(INVALID)}" in (out / "report.md").read_text(encoding="utf-8")  # shown, not read as an HTML tag


def test_paper_parsing_snaps_generations_and_every_table_says_so(run_cli, models: dict[str, Path], meld_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "paper"

    result = evaluate(run_cli, models["meld"], meld_data, out, "--mode", "generate", "--paper-parsing")

    assert result.code == 0, result.err
    assert "(paper parsing)" in result.out
    llm = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["systems"]["llm"]
    assert llm["settings"]["paper_parsing"] is True
    assert llm["by_dataset"]["meld"]["invalid_rate"] == 0.0
    assert all(u["predicted_emotion"] in MELD.labels for d in read_jsonl(out / "predictions.jsonl") for u in d["utterances"])
    titles = table_titles((out / "report.md").read_text(encoding="utf-8"))
    assert len(titles) == 2 and all("paper parsing" in title for title in titles)


def test_paper_parsing_without_generate_mode_is_refused(run_cli, models: dict[str, Path], meld_data: Path, tmp_path: Path) -> None:
    result = evaluate(run_cli, models["meld"], meld_data, tmp_path / "x", "--paper-parsing")

    assert result.code == 2 and "--mode generate" in result.err


# -- unified labels -----------------------------------------------------------------------------
def test_unified_predictions_map_back_to_each_datasets_own_classes() -> None:
    utterances = (
        Utterance("A", "x", "powerful", {"original_emotion": "surprise"}),
        Utterance("B", "y", "joyful", {"original_emotion": "joy"}),
        Utterance("A", "z", "neutral", {"original_emotion": "neutral"}),
    )
    meld = Dialogue("m", "meld", "test", utterances)
    emory = Dialogue("e", "emorynlp", "test", (Utterance("A", "w", "peaceful", {"original_emotion": "Peaceful"}),))
    predictions = [[Prediction("powerful"), Prediction("excited"), Prediction(None)], [Prediction("peaceful")]]

    results = score_by_dataset([meld, emory], predictions, INSTRUCTERC.label_set)

    assert results["meld"].labels == list(MELD.labels) and results["emorynlp"].labels == list(EMORYNLP.labels)
    assert results["meld"].columns[: len(MELD)] == list(MELD.labels) and set(results["meld"].columns[len(MELD) :]) == {OUTSIDE, INVALID}
    assert results["meld"].accuracy == pytest.approx(100 / 3)
    assert results["meld"].confusion[MELD.labels.index("surprise")][MELD.labels.index("surprise")] == 1
    assert results["meld"].confusion[MELD.labels.index("joy")][results["meld"].columns.index(OUTSIDE)] == 1, (
        "excited is no MELD class: an error of its own"
    )
    assert results["emorynlp"].accuracy == 100.0


def test_a_unified_model_is_scored_on_the_original_classes(run_cli, models: dict[str, Path], meld_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "unified"

    result = run_cli(
        "evaluate",
        "--model",
        models["uime"],
        "--dataset",
        "jsonl",
        "--data",
        meld_data,
        "--label-set",
        "meld",
        "--labels",
        "uime",
        "--split",
        "test",
        "--out",
        out,
        "--no-progress",
    )

    assert result.code == 0, result.err
    llm = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["systems"]["llm"]
    assert llm["settings"]["unified"] is True
    assert llm["by_dataset"]["meld"]["labels"] == list(MELD.labels)
    for utterance in (u for d in read_jsonl(out / "predictions.jsonl") for u in d["utterances"]):
        assert utterance["predicted_emotion"] in INSTRUCTERC.label_set.labels
        expected = INSTRUCTERC.to_original("meld", utterance["predicted_emotion"]) or OUTSIDE
        assert utterance["predicted_original_emotion"] == expected
        assert utterance["original_emotion"] in MELD.labels
    assert md_cell(OUTSIDE) in (out / "report.md").read_text(encoding="utf-8")


def test_predict_answers_a_dialogue_that_names_its_dataset_in_that_datasets_classes(
    run_cli, models: dict[str, Path], meld_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "predictions.jsonl"

    result = run_cli("predict", "--model", models["uime"], "--input", meld_data / "test.jsonl", "--output", out, "--no-progress")

    assert result.code == 0, result.err
    for utterance in (u for d in read_jsonl(out) for u in d["utterances"]):
        scores = utterance["emotion_scores"]
        best = max(MELD.labels, key=lambda label: scores[INSTRUCTERC.to_unified("meld", label)])
        assert utterance["predicted_original_emotion"] == best
        assert utterance["predicted_emotion"] == max(scores, key=scores.get)


def test_the_best_original_label_ignores_unified_labels_the_dataset_lacks() -> None:
    scores = {"peaceful": 0.5, "mad": 0.3, "joyful": 0.2}  # MELD has no class mapped to peaceful
    assert INSTRUCTERC.best_original("meld", scores) == "anger"
    assert INSTRUCTERC.best_original("emorynlp", scores) == "Peaceful"


@pytest.mark.parametrize("tied", ["neutral", "powerful", "sad"])
def test_a_tie_maps_back_to_the_predicted_label_as_the_prediction_breaks_it(tied: str) -> None:
    # joyful comes first in the unified order, so it is the predicted label of a tie.
    scores = {label: 0.0 for label in INSTRUCTERC.label_set.labels} | {"joyful": 0.4, tied: 0.4, "mad": 0.2}
    predicted = max(INSTRUCTERC.label_set.labels, key=lambda label: scores[label])
    assert predicted == "joyful"
    assert INSTRUCTERC.best_original("meld", scores) == INSTRUCTERC.to_original("meld", predicted) == "joy"


def test_data_in_other_classes_than_the_model_is_refused(run_cli, models: dict[str, Path], tmp_path: Path) -> None:
    data = write_folder(tmp_path / "emory-like", EMORYNLP.labels, dataset="emorynlp")

    result = run_cli(
        "evaluate",
        "--model",
        models["meld"],
        "--dataset",
        "jsonl",
        "--data",
        data,
        "--label-set",
        "emorynlp",
        "--split",
        "test",
        "--out",
        tmp_path / "o",
    )

    assert result.code == 2
    assert (
        "not classes this model (label set meld) is scored on" in result.err
        and "'Joyful'" in result.err
        and "accepted: neutral" in result.err
    )


# -- baselines beside the LLM, and several runs -------------------------------------------------
def fake_result(split: str, accuracy_hits: int, kind: str = "llm", mode: str = "score") -> EvaluationResult:
    gold = ["joy", "joy", "anger", "neutral"]
    predicted = gold[:accuracy_hits] + ["sadness"] * (len(gold) - accuracy_hits)
    system = SystemResult(
        kind,
        {"meld": compute_metrics(gold, predicted, MELD.labels)},
        {"mode": mode, "paper_parsing": False} if kind == "llm" else {"label": "joy"},
    )
    return EvaluationResult(split, {"dataset": "meld", "labels": "original"}, {"llm" if kind == "llm" else "majority": system})


def test_runs_are_aggregated_into_mean_and_standard_deviation(run_cli, tmp_path: Path) -> None:
    for name, hits in (("seed1", 2), ("seed2", 3), ("seed3", 4)):
        (tmp_path / name).mkdir()
        fake_result("test", hits).save(tmp_path / name)

    result = run_cli(
        "evaluate", "--runs", tmp_path / "seed1", tmp_path / "seed2", tmp_path / "seed3" / "metrics.json", "--out", tmp_path / "agg"
    )

    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "agg" / "aggregate.json").read_text(encoding="utf-8"))
    accuracy = summary["systems"]["llm"]["by_dataset"]["meld"]["accuracy"]
    assert accuracy["mean"] == pytest.approx(75.0)
    assert accuracy["std"] == pytest.approx(statistics.stdev([50.0, 75.0, 100.0]))
    assert summary["n"] == 3 and "weighted_f1" in summary["systems"]["llm"]["by_dataset"]["meld"]
    assert "75.00 ± 25.00" in result.out
    assert "(test split, 3 runs)" in (tmp_path / "agg" / "aggregate.md").read_text(encoding="utf-8")


def test_runs_of_different_splits_or_modes_are_not_aggregated(run_cli, tmp_path: Path) -> None:
    for name, split, mode in (("a", "test", "score"), ("b", "dev", "score"), ("c", "test", "generate")):
        (tmp_path / name).mkdir()
        fake_result(split, 2, mode=mode).save(tmp_path / name)

    split_clash = run_cli("evaluate", "--runs", tmp_path / "a", tmp_path / "b")
    mode_clash = run_cli("evaluate", "--runs", tmp_path / "a", tmp_path / "c")

    assert split_clash.code == 2 and "dev split, not test" in split_clash.err
    assert mode_clash.code == 2 and "aggregate like with like" in mode_clash.err
    assert run_cli("evaluate", "--runs", tmp_path / "a", tmp_path / "a" / "metrics.json").code == 2, "the same run twice"


def test_baselines_from_a_folder_join_the_report_only_on_the_same_split(
    run_cli, models: dict[str, Path], meld_data: Path, tmp_path: Path
) -> None:
    from instructerc.data.registry import DataSource
    from instructerc.evaluation.baselines import run_baselines

    source = DataSource("jsonl", path=meld_data, label_set="meld")
    for split in ("test", "dev"):
        (tmp_path / f"base-{split}").mkdir()
        run_baselines(source, split, which=["majority"]).save(tmp_path / f"base-{split}")

    wrong = evaluate(run_cli, models["meld"], meld_data, tmp_path / "x", "--baselines", tmp_path / "base-dev")
    right = evaluate(run_cli, models["meld"], meld_data, tmp_path / "y", "--baselines", tmp_path / "base-test")

    assert wrong.code == 2 and "dev split, not test" in wrong.err
    assert right.code == 0, right.err
    report = (tmp_path / "y" / "report.md").read_text(encoding="utf-8")
    assert "| LLM tiny-meld (score mode) |" in report and "| majority class (" in report
    assert json.loads((tmp_path / "y" / "metrics.json").read_text(encoding="utf-8"))["systems"]["majority"]["settings"]["from"] == str(
        tmp_path / "base-test"
    )


def test_a_valid_label_the_dataset_lacks_is_an_error_but_not_invalid():
    from instructerc.evaluation.metrics import OUTSIDE, compute_metrics

    m = compute_metrics(["joy", "anger", "joy", "anger"], ["joy", OUTSIDE, None, "anger"], ["joy", "anger"])
    assert m.accuracy == 50.0
    assert m.invalid_rate == 25.0 and m.outside_rate == 25.0
    assert m.columns == ["joy", "anger", "<invalid>", OUTSIDE]


def test_without_model_the_shipped_model_is_evaluated_into_the_working_directory(
    run_cli, models: dict[str, Path], meld_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from instructerc.modeling import default_model

    shipped = models["meld"]
    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIR", shipped)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in shipped.iterdir())

    result = run_cli("evaluate", "--dataset", "jsonl", "--data", meld_data, "--label-set", "meld", "--split", "test", "--no-progress")

    assert result.code == 0, result.err
    out = tmp_path / "eval-default-model-jsonl-meld-like-test"
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["systems"]["llm"]["by_dataset"]
    assert sorted(p.name for p in shipped.iterdir()) == before, "nothing is written into the installed package"
