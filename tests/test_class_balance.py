"""optim.class_balance: rare emotions of a dataset weigh more in the loss, counted per dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructerc.errors import InputError
from instructerc.evaluation.dev_scoring import predictor_dev_scoring
from instructerc.prompts.encoding import EncodedExample
from instructerc.prompts.example import Example, Task
from instructerc.training.batches import class_weights
from instructerc.training.trainer import Trainer
from test_training import recipe


def encoded(task: Task, dataset: str, label: str) -> EncodedExample:
    example = Example(task=task, segments=(), target=label, dataset=dataset, dialogue_id="d", index=0, label=label)
    return EncodedExample(prompt_ids=(1,), target_ids=(2,), segments=(), example=example)


def test_weights_follow_the_label_count_within_each_dataset_and_average_one() -> None:
    examples = [encoded(Task.ERC, "meld", "neutral")] * 3 + [encoded(Task.ERC, "meld", "fear")]
    examples += [encoded(Task.ERC, "emorynlp", "neutral"), encoded(Task.SPEAKER, "meld", "Ross")]
    weights = class_weights(examples, 1.0)
    assert weights is not None
    # Inverse counts 1/3, 1/3, 1/3, 1, 1 over the five emotion examples, scaled to average 1;
    # emorynlp's one neutral is rare in its dataset even though neutral is common in MELD.
    assert weights[:5] == pytest.approx([5 / 9, 5 / 9, 5 / 9, 5 / 3, 5 / 3])
    assert sum(weights[:5]) / 5 == pytest.approx(1.0)
    assert weights[5] == 1.0  # a speaker example is not an emotion
    half = class_weights(examples, 0.5)
    assert half is not None and 5 / 9 < half[0] < 1 < half[3] < 5 / 3
    assert class_weights(examples, 0.0) is None


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_class_balance_outside_zero_to_one_is_refused(tiny_data: Path, backbone: Path, tmp_path: Path, value: float) -> None:
    with pytest.raises(InputError) as error:
        recipe(tiny_data, backbone, tmp_path / "run", optim__class_balance=value)
    assert error.value.field == "optim.class_balance"


def first_losses(path: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in path.read_text().splitlines() if '"event": "step"' in line]


def test_a_balanced_run_trains_on_weighted_losses_and_its_card_says_so(tiny_data: Path, backbone: Path, tmp_path: Path) -> None:
    plain = recipe(tiny_data, backbone, tmp_path / "plain", stages=[{"tasks": {"erc": 1.0}, "epochs": 1}])
    balanced = recipe(tiny_data, backbone, tmp_path / "balanced", stages=[{"tasks": {"erc": 1.0}, "epochs": 1}], optim__class_balance=1.0)
    for config in (plain, balanced):
        Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()
    # Same seed, data and first weights: the first step's loss differs only by the weights.
    assert first_losses(tmp_path / "plain" / "metrics.jsonl")[0] != pytest.approx(first_losses(tmp_path / "balanced" / "metrics.jsonl")[0])
    assert "class_balance" in (tmp_path / "balanced" / "model" / "README.md").read_text()
    assert "class_balance" not in (tmp_path / "plain" / "model" / "README.md").read_text()
