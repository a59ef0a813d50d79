"""The dialogue bootstrap of weighted F1 (evaluation/uncertainty.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from instructerc.evaluation.metrics import compute_metrics
from instructerc.evaluation.uncertainty import (
    bootstrap_difference,
    bootstrap_weighted_f1,
    dialogue_confusions,
    weighted_f1,
)

LABELS = ["joy", "sad", "neutral", "anger"]


def _split(seed: int, dialogues: int = 30, accuracy: float = 0.6) -> tuple[list[str], list[str | None], list[str]]:
    rng = random.Random(seed)
    gold, predicted, groups = [], [], []
    for d in range(dialogues):
        for _ in range(rng.randint(1, 12)):
            g = rng.choice(LABELS[:3] if d % 5 else LABELS)
            roll = rng.random()
            p = g if roll < accuracy else rng.choice(LABELS + ["surprise", None])
            gold.append(g)
            predicted.append(p)
            groups.append(f"d{d}")
    return gold, predicted, groups


@pytest.mark.parametrize("seed", range(6))
def test_weighted_f1_from_confusion_counts_equals_scikit_learn_including_invalid_and_outside(seed):
    gold, predicted, groups = _split(seed)
    counts = dialogue_confusions(gold, predicted, groups, LABELS)
    assert float(weighted_f1(counts.sum(axis=0))) == pytest.approx(compute_metrics(gold, predicted, LABELS).weighted_f1, abs=1e-9)


def test_a_class_never_in_gold_nor_predicted_weighs_nothing_as_in_scikit_learn():
    gold, predicted = ["joy", "joy", "sad"], ["joy", "sad", "sad"]
    counts = dialogue_confusions(gold, predicted, ["a", "a", "b"], LABELS)
    assert float(weighted_f1(counts.sum(axis=0))) == pytest.approx(compute_metrics(gold, predicted, LABELS).weighted_f1)


def test_the_interval_holds_the_estimate_and_narrows_with_more_dialogues():
    few = bootstrap_weighted_f1(*_split(1, dialogues=10), LABELS, resamples=500)
    many = bootstrap_weighted_f1(*_split(1, dialogues=300), LABELS, resamples=500)
    for interval in (few, many):
        assert interval.low <= interval.estimate <= interval.high
    assert many.high - many.low < few.high - few.low
    assert (few.groups, many.groups, many.resamples) == (10, 300, 500)


def test_the_estimate_is_the_plain_weighted_f1_and_a_seed_repeats_the_interval():
    gold, predicted, groups = _split(3)
    one = bootstrap_weighted_f1(gold, predicted, groups, LABELS, resamples=300, seed=7)
    assert one.estimate == pytest.approx(compute_metrics(gold, predicted, LABELS).weighted_f1)
    assert one == bootstrap_weighted_f1(gold, predicted, groups, LABELS, resamples=300, seed=7)
    assert one != bootstrap_weighted_f1(gold, predicted, groups, LABELS, resamples=300, seed=8)


def test_resampling_dialogues_is_wider_than_resampling_utterances_when_dialogues_differ():
    # Each dialogue is either all right or all wrong: utterances are not independent draws.
    gold, predicted, groups = [], [], []
    for d in range(40):
        for k in range(10):
            g = LABELS[k % 3]
            gold.append(g)
            predicted.append(g if d % 2 else LABELS[(k + 1) % 3])
            groups.append(d)
    by_dialogue = bootstrap_weighted_f1(gold, predicted, groups, LABELS, resamples=400)
    by_utterance = bootstrap_weighted_f1(gold, predicted, list(range(len(gold))), LABELS, resamples=400)
    assert by_dialogue.high - by_dialogue.low > 2 * (by_utterance.high - by_utterance.low)


def test_a_paired_difference_of_a_system_with_itself_is_exactly_zero():
    gold, predicted, groups = _split(4)
    same = bootstrap_difference(gold, predicted, list(predicted), groups, LABELS, resamples=200)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_a_paired_difference_is_the_difference_of_the_two_scores_and_is_narrower_than_either():
    gold, first, groups = _split(5, dialogues=60, accuracy=0.7)
    rng = random.Random(0)
    second = [p if rng.random() < 0.9 else rng.choice(LABELS) for p in first]
    diff = bootstrap_difference(gold, first, second, groups, LABELS, resamples=500)
    expected = compute_metrics(gold, first, LABELS).weighted_f1 - compute_metrics(gold, second, LABELS).weighted_f1
    assert diff.estimate == pytest.approx(expected)
    alone = bootstrap_weighted_f1(gold, first, groups, LABELS, resamples=500)
    assert diff.high - diff.low < alone.high - alone.low


def test_one_dialogue_gives_an_interval_of_one_point():
    gold, predicted = ["joy", "sad", "joy"], ["joy", "joy", "joy"]
    interval = bootstrap_weighted_f1(gold, predicted, ["x"] * 3, LABELS, resamples=50)
    assert interval.low == interval.high == pytest.approx(interval.estimate)


def test_stacked_confusions_are_scored_one_by_one():
    gold, predicted, groups = _split(6)
    counts = dialogue_confusions(gold, predicted, groups, LABELS)
    stacked = weighted_f1(counts)
    assert stacked.shape == (len(counts),)
    assert stacked[0] == pytest.approx(float(weighted_f1(counts[0])))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resamples": 0}, "resamples"),
        ({"resamples": True}, "resamples"),
        ({"resamples": 2.5}, "resamples"),
        ({"level": 1.0}, "level"),
        ({"level": 95}, "level"),
    ],
)
def test_settings_out_of_range_are_refused_by_name(kwargs, message):
    gold, predicted, groups = _split(0)
    with pytest.raises(ValueError, match=message):
        bootstrap_weighted_f1(gold, predicted, groups, LABELS, **kwargs)


def test_lengths_that_differ_and_gold_outside_the_classes_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        dialogue_confusions(["joy"], ["joy"], ["a", "b"], LABELS)
    with pytest.raises(ValueError, match="not classes"):
        dialogue_confusions(["fear"], ["joy"], ["a"], LABELS)


def test_an_empty_stack_of_resamples_has_the_right_shape():
    assert weighted_f1(np.zeros((0, 4, 5), dtype=np.int64)).shape == (0,)


# -- the intervals in what evaluate and baseline report


def _scored_dialogues(seed: int, dialogues: int = 12):
    from instructerc.data.dialogue import Dialogue, Utterance
    from instructerc.labels.prediction import Prediction

    gold, predicted, groups = _split(seed, dialogues)
    out, predictions = [], []
    for name in dict.fromkeys(groups):
        rows = [(g, p) for g, p, k in zip(gold, predicted, groups) if k == name]
        out.append(Dialogue(name, "mine", "test", [Utterance(f"S{i % 2}", f"line {i}", g) for i, (g, _) in enumerate(rows)]))
        predictions.append([Prediction(p) for _, p in rows])
    return out, predictions


def test_score_by_dataset_attaches_an_interval_only_when_asked_and_it_holds_the_score():
    from instructerc.evaluation.scoring import score_by_dataset
    from instructerc.labels.label_set import LabelSet

    dialogues, predictions = _scored_dialogues(2)
    label_set = LabelSet.from_names("mine", LABELS)
    plain = score_by_dataset(dialogues, predictions, label_set)["mine"]
    with_interval = score_by_dataset(dialogues, predictions, label_set, intervals=True)["mine"]
    assert plain.weighted_f1_interval is None
    interval = with_interval.weighted_f1_interval
    assert interval["low"] <= with_interval.weighted_f1 <= interval["high"] and interval["low"] < interval["high"]
    assert (interval["dialogues"], interval["resamples"], interval["level"]) == (12, 2000, 0.95)
    assert with_interval.weighted_f1 == plain.weighted_f1


def test_two_dialogues_of_one_id_are_resampled_as_two():
    from dataclasses import replace

    from instructerc.evaluation.scoring import score_by_dataset
    from instructerc.labels.label_set import LabelSet

    dialogues, predictions = _scored_dialogues(2)
    same_id = [replace(d, id="x") for d in dialogues]
    label_set = LabelSet.from_names("mine", LABELS)
    assert score_by_dataset(same_id, predictions, label_set, intervals=True)["mine"].weighted_f1_interval["dialogues"] == 12


def test_an_interval_round_trips_through_metrics_json_and_a_damaged_one_is_named():
    from instructerc.errors import InputError
    from instructerc.evaluation.metrics import Metrics
    from instructerc.evaluation.scoring import score_by_dataset
    from instructerc.labels.label_set import LabelSet

    dialogues, predictions = _scored_dialogues(3)
    metrics = score_by_dataset(dialogues, predictions, LabelSet.from_names("mine", LABELS), intervals=True)["mine"]
    data = metrics.to_dict()
    assert Metrics.from_dict(data) == metrics
    older = {k: v for k, v in data.items() if k != "weighted_f1_interval"}  # written before intervals
    assert Metrics.from_dict(older).weighted_f1_interval is None
    with pytest.raises(InputError, match="weighted_f1_interval.high"):
        Metrics.from_dict({**data, "weighted_f1_interval": {**data["weighted_f1_interval"], "high": "40"}})
    with pytest.raises(InputError, match="weighted_f1_interval"):
        Metrics.from_dict({**data, "weighted_f1_interval": [30, 40]})


def test_the_report_and_the_summary_show_the_interval_and_say_what_it_is_and_old_results_show_none():
    from dataclasses import replace

    from instructerc.evaluation.report import render_report, summary_lines
    from instructerc.evaluation.results import EvaluationResult, SystemResult
    from instructerc.evaluation.scoring import score_by_dataset
    from instructerc.labels.label_set import LabelSet

    dialogues, predictions = _scored_dialogues(4)
    metrics = score_by_dataset(dialogues, predictions, LabelSet.from_names("mine", LABELS), intervals=True)["mine"]
    low, high = metrics.weighted_f1_interval["low"], metrics.weighted_f1_interval["high"]
    result = EvaluationResult("test", {"dataset": "jsonl"}, {"llm": SystemResult("llm", {"mine": metrics}, {"mode": "score"})})
    report = render_report(result)
    assert "95% interval, dialogues resampled" in report and f"| {low:.2f}-{high:.2f} |" in report
    assert "bootstrap over the split's dialogues, 2,000 resamples" in report
    assert f"(95% interval {low:.2f}-{high:.2f})" in summary_lines(result)[0]
    older = replace(metrics, weighted_f1_interval=None)
    old = EvaluationResult("test", {"dataset": "jsonl"}, {"llm": SystemResult("llm", {"mine": older})})
    assert "interval" not in render_report(old) and "interval" not in summary_lines(old)[0]


def test_the_paired_baseline_script_reads_a_unified_models_answers_in_each_benchmarks_own_classes(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    from instructerc.evaluation.metrics import OUTSIDE

    path = Path(__file__).resolve().parents[1] / "scripts" / "paired_baseline.py"
    spec = importlib.util.spec_from_file_location("paired_baseline", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    record = {
        "id": "d1",
        "dataset": "meld",
        "utterances": [{"predicted_emotion": "powerful"}, {"predicted_emotion": "peaceful"}, {"predicted_emotion": None}],
    }
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(json.dumps(record) + "\n", encoding="utf-8")
    # MELD's surprise is the unified powerful; MELD has no peaceful: an error, as evaluate scores it.
    assert script.llm_answers(predictions) == {("meld", "d1", 0): "surprise", ("meld", "d1", 1): OUTSIDE, ("meld", "d1", 2): None}
