"""Baselines in the evaluation harness: majority class by hand, the discriminative one with a fake encoder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.registry import DataSource
from instructerc.evaluation import baselines
from instructerc.evaluation.baselines import C_GRID, DiscriminativeBaseline, context_features, majority_label, run_baselines
from instructerc.labels.benchmarks import MELD
from tiny import tiny_model_dir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WORDS = {"neutral": "okay then", "joy": "wonderful great", "anger": "furious stop", "sadness": "crying alone"}


class FakeEncoder:
    """Deterministic 16-d unit vectors: a strong direction per emotion word, plus a hashed jitter."""

    identity = "fake-encoder@1"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            vector = np.random.default_rng(seed).normal(0.0, 0.3, 16)
            for k, words in enumerate(WORDS.values()):
                if words in text:
                    vector[k] += 3.0
            rows.append(vector / np.linalg.norm(vector))
        return np.array(rows, dtype=np.float32)


def dialogue_records(split: str, labels: list[list[str]]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{split}{i}",
            "dataset": "meld",
            "utterances": [
                {"speaker": "Ann" if j % 2 == 0 else "Bob", "text": f"{WORDS[label]} ({split} {i}.{j})", "emotion": label}
                for j, label in enumerate(turns)
            ],
        }
        for i, turns in enumerate(labels)
    ]


def write_folder(folder: Path, splits: dict[str, list[list[str]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, labels in splits.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dialogue_records(split, labels)), encoding="utf-8")
    return folder


# Train: neutral 5, joy 3, anger 2. Test: neutral 2, joy 1, anger 1.
SMALL = {
    "train": [["neutral", "joy", "neutral"], ["anger", "neutral", "joy"], ["neutral", "anger"], ["joy", "neutral"]],
    "dev": [["joy", "neutral"], ["anger"]],
    "test": [["neutral", "joy"], ["anger", "neutral"]],
}


@pytest.fixture
def small(tmp_path: Path) -> DataSource:
    return DataSource("jsonl", path=write_folder(tmp_path / "small", SMALL), label_set="meld")


def test_majority_baseline_equals_the_hand_computed_scores(small: DataSource) -> None:
    result = run_baselines(small, "test", which=["majority"])

    system = result.systems["majority"]
    meld = system.by_dataset["meld"]
    assert system.settings["label"] == "neutral"
    assert meld.accuracy == pytest.approx(50.0)
    # neutral: precision 2/4, recall 1, F1 2/3, weight 2/4; every other class scores 0.
    assert meld.weighted_f1 == pytest.approx(100 * (2 / 4) * (2 / 3))
    assert meld.macro_f1 == pytest.approx(100 * (2 / 3) / len(MELD))
    assert meld.invalid_rate == 0.0 and meld.count == 4


def test_majority_ties_go_to_the_first_label_in_label_set_order() -> None:
    train = [Dialogue("t", "meld", "train", (Utterance("A", "x", "anger"), Utterance("B", "y", "surprise")))]

    assert majority_label(train, MELD) == "surprise"


def test_context_features_average_up_to_three_previous_utterances_of_the_same_dialogue() -> None:
    embeddings = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)

    features = context_features(embeddings, [2, 5])

    assert features.shape == (7, 4)
    np.testing.assert_array_equal(features[:, :2], embeddings)
    np.testing.assert_array_equal(features[0, 2:], [0, 0])
    np.testing.assert_array_equal(features[1, 2:], embeddings[0])
    np.testing.assert_array_equal(features[2, 2:], [0, 0])  # a new dialogue has no history
    np.testing.assert_allclose(features[4, 2:], embeddings[2:4].mean(axis=0))
    np.testing.assert_allclose(features[6, 2:], embeddings[3:6].mean(axis=0))  # only the last three


def test_discriminative_baseline_chooses_c_on_dev_and_scores_the_split(
    small: DataSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = FakeEncoder()
    monkeypatch.setattr(baselines, "load_encoder", lambda name: encoder)

    result = run_baselines(small, "test", which=["minilm-logreg"], cache_dir=tmp_path / "cache", progress=False)

    system = result.systems["minilm-logreg"]
    settings = system.settings
    assert settings["selected_on"] == "dev" and settings["class_weight"] is None and settings["converged"]
    scores = {float(c): s for c, s in settings["dev_weighted_f1_by_C"].items()}
    assert sorted(scores) == sorted(C_GRID)
    assert settings["C"] == min(c for c, s in scores.items() if s == max(scores.values())), "best dev score, smallest C on ties"
    assert system.by_dataset["meld"].accuracy == 100.0, "the fake embeddings separate the classes"
    test_texts = [u["text"] for r in dialogue_records("test", SMALL["test"]) for u in r["utterances"]]
    assert encoder.calls[-1] == test_texts and all(call != test_texts for call in encoder.calls[:-1]), (
        "test is encoded only after C is chosen"
    )


def test_discriminative_probabilities_cover_every_label_and_sum_to_one(small: DataSource, tmp_path: Path) -> None:
    from instructerc.data.registry import load_dialogues

    train, dev, test = (load_dialogues(small, split) for split in ("train", "dev", "test"))
    model = DiscriminativeBaseline.fit(train, dev, MELD, FakeEncoder(), c_grid=(1.0,), cache_dir=tmp_path)

    for prediction in (p for ps in model.predict(test) for p in ps):
        assert list(prediction.scores) == list(MELD.labels)
        assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.scores["fear"] == 0.0, "a class the train split never shows gets no probability"


def test_baseline_command_writes_the_evaluation_files(run_cli, small: DataSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baselines, "load_encoder", lambda name: FakeEncoder())
    out = tmp_path / "baselines"

    result = run_cli(
        "baseline",
        "--dataset",
        "jsonl",
        "--data",
        small.path,
        "--label-set",
        "meld",
        "--split",
        "test",
        "--out",
        out,
        "--cache-dir",
        tmp_path / "cache",
        "--c-grid",
        "0.1",
        "1",
        "--no-progress",
    )

    assert result.code == 0, result.err
    assert "majority   meld test: weighted F1 33.33" in result.out
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert list(metrics["systems"]) == ["majority", "minilm-logreg"] and metrics["split"] == "test"
    assert metrics["systems"]["minilm-logreg"]["settings"]["c_grid"] == [0.1, 1.0]
    for name in ("majority", "minilm-logreg"):
        assert (out / f"confusion-{name}-meld.png").read_bytes()[:8] == PNG_SIGNATURE
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| majority class (neutral, the most frequent training label) | 33.33 |" in report


def test_evaluate_with_baselines_puts_them_beside_the_llm(
    run_cli, small: DataSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(baselines, "load_encoder", lambda name: FakeEncoder())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tiny_model_dir(tmp_path / "tiny-meld", MELD)
    out = tmp_path / "eval"

    result = run_cli(
        "evaluate",
        "--model",
        model,
        "--dataset",
        "jsonl",
        "--data",
        small.path,
        "--label-set",
        "meld",
        "--split",
        "test",
        "--out",
        out,
        "--with-baselines",
        "--no-progress",
    )

    assert result.code == 0, result.err
    assert list(json.loads((out / "metrics.json").read_text(encoding="utf-8"))["systems"]) == ["llm", "majority", "minilm-logreg"]
    rows = [
        line
        for line in (out / "report.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| ") and "(test)" not in line and "---" not in line
    ]
    assert [row.split(" | ")[0].split(" (")[0] for row in rows[:3]] == [
        "| LLM tiny-meld",
        "| majority class",
        "| MiniLM-L6 embeddings + logistic regression",
    ]


@pytest.mark.slow
def test_real_discriminative_baseline_on_meld(data_root: Path, tmp_path: Path) -> None:
    result = run_baselines(DataSource("meld", path=data_root), "test", progress=False)

    meld = result.systems["minilm-logreg"].by_dataset["meld"]
    print(
        f"\nMELD test: majority weighted F1 {result.systems['majority'].by_dataset['meld'].weighted_f1:.2f}; "
        f"MiniLM + logistic regression (C={result.systems['minilm-logreg'].settings['C']}) weighted F1 {meld.weighted_f1:.2f}, "
        f"macro F1 {meld.macro_f1:.2f}, accuracy {meld.accuracy:.2f}"
    )
    assert 45.0 < meld.weighted_f1 < 65.0


def test_a_cached_embedding_file_of_another_row_count_is_not_used(tmp_path: Path) -> None:
    from instructerc.retrieval.cache import content_key

    dialogues = [Dialogue("d", "x", "train", (Utterance("A", "so happy"), Utterance("B", "so sad"), Utterance("A", "ok")))]
    encoder = FakeEncoder()
    cold = baselines.utterance_embeddings(dialogues, encoder, tmp_path)
    key = content_key("baseline-utterances-v1", encoder.identity, [u.text for u in dialogues[0].utterances])
    np.save(tmp_path / "embeddings" / f"{key}.npy", np.zeros((2, 16), np.float32))  # readable, but one row short

    again = baselines.utterance_embeddings(dialogues, encoder, tmp_path)
    assert again.shape == cold.shape and len(encoder.calls) == 2
    np.testing.assert_array_equal(again, cold)
