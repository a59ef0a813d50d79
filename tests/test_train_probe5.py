"""Training on a user's own JSONL data, as the run's files then describe it (tiny models)."""

from __future__ import annotations

import json
from pathlib import Path

from instructerc.config import from_mapping
from instructerc.evaluation.dev_scoring import predictor_dev_scoring
from instructerc.training.config import TrainConfig
from instructerc.training.trainer import Trainer


def _recipe(tiny_data: Path, backbone: Path, output: Path, **data) -> TrainConfig:
    return from_mapping(
        TrainConfig,
        {
            "data": {"dataset": "jsonl", "path": str(tiny_data), "label_set": "meld", **data},
            "backbone": {"model": str(backbone)},
            "template": {"name": "dialogue-prefix", "demonstration": False},
            "finetune": {"method": "lora", "lora": {"r": 2, "alpha": 4, "target_modules": ["q_proj"]}},
            "optim": {"lr": 0.02, "batch_size": 8, "micro_batch_size": 4, "warmup_ratio": 0.0},
            "stages": [{"tasks": {"erc": 1.0}, "epochs": 1}],
            "output_dir": str(output),
        },
    )


def test_the_model_card_says_how_many_dialogues_a_small_fraction_kept(tiny_data, backbone, tmp_path) -> None:
    # Every stratum keeps a dialogue, so 0.01 of 24 dialogues trains on several of them: a card
    # saying only "fraction 0.01" understated the data behind its scores.
    run = tmp_path / "run"
    Trainer(_recipe(tiny_data, backbone, run, fraction=0.01), progress=False, dev_scoring=predictor_dev_scoring).run()
    start = next(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"start"' in line)
    kept = start["train_dialogues"]
    assert 1 < kept < 24
    card = (run / "model" / "README.md").read_text(encoding="utf-8")
    assert f"- data: `jsonl` train split, fraction 0.01 ({kept} dialogues), seed 42" in card


def test_training_data_of_one_emotion_without_a_label_set_is_refused(backbone, tmp_path, run_cli) -> None:
    # Read as the label set, one emotion leaves the model nothing to choose: it trained, always
    # answered 'neutral', and its card reported a dev weighted F1 of 100.
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        line = {"id": split, "utterances": [{"speaker": "A", "text": "Hi.", "emotion": "neutral"}, {"speaker": "B", "text": "Yo."}]}
        (data / f"{split}.jsonl").write_text(json.dumps(line) + "\n", encoding="utf-8")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"data: {{dataset: jsonl, path: {data}}}\nbackbone: {{model: {backbone}}}\noutput_dir: {tmp_path / 'run'}\n", encoding="utf-8"
    )
    result = run_cli("train", recipe, "--no-progress")
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert f"{data / 'train.jsonl'}: field 'data.label_set': the training data uses one emotion only ('neutral')" in result.err
    assert not (tmp_path / "run").exists()
