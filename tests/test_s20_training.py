"""The training loop on data a user could have: edited between a stop and its resume, dev subsets
of partly unlabelled dev data, one-step stages under warmup, stages no dev score can select,
speaker tasks on monologues, and best weights kept after the last checkpoint (tiny models)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.evaluation.dev_scoring import predictor_dev_scoring
from instructerc.training.config import TrainConfig
from instructerc.training.dev import DevScores, DevSet
from instructerc.training.trainer import Trainer
from tiny import write_tiny_base


def base(root: Path, **sections: dict) -> Path:
    return write_tiny_base(root, {"train": 8, "dev": 3}, **sections)


def log_of(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def write_lines(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def stopped(recipe: Path, run: Path, steps: int = 1, **overrides: Any) -> TrainConfig:
    """The recipe's run into ``run``, stopped after ``steps`` steps with a checkpoint."""
    config = TrainConfig.from_yaml(recipe, {"output_dir": str(run), "checkpoint_every_steps": 1, **overrides})
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring, stop_after_steps=steps).run()
    assert any((run / "checkpoints").glob("step-*"))
    return config


@pytest.mark.parametrize(("split", "edit"), [("train", "remove"), ("train", "add"), ("train", "relabel"), ("dev", "add")])
def test_resuming_on_data_edited_since_the_stop_is_refused_naming_the_file(tmp_path: Path, run_cli, split: str, edit: str) -> None:
    # The run resumed on the edited file without a word: the epoch under way was a permutation of
    # other examples (some trained twice, some never) and the card named the new data alone.
    recipe = base(tmp_path, optim={"batch_size": 4, "micro_batch_size": 4})
    run = tmp_path / "run"
    stopped(recipe, run)
    file = tmp_path / "data" / f"{split}.jsonl"
    records = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    if edit == "remove":
        records.pop()
    elif edit == "add":
        records.append({"id": "new", "utterances": [{"speaker": "Ann", "text": "Hi.", "emotion": "neutral"}]})
    else:
        records[0]["utterances"][0]["emotion"] = "anger"
    write_lines(file, records)
    args = ("train", recipe, "--output", run, "--set", "checkpoint_every_steps=1", "--no-progress", "--resume")
    result = run_cli(*args)
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert result.err.startswith(f"instructerc: error: {file}: the data changed since the run's last checkpoint ({split} data: ")
    assert "pass --force" in result.err and not (run / "model").exists()
    forced = run_cli(*args, "--force")
    assert forced.code == 0, forced.err
    card = (run / "model" / "README.md").read_text(encoding="utf-8")
    assert f"Changes: at step 1: {split} data: " in card


def test_fields_no_prompt_reads_are_not_a_change_of_data() -> None:
    from instructerc.training.data_checks import data_summary

    utterances = (Utterance("Ann", "Hi.", "neutral"), Utterance("Bob", "So sad.", "sadness"))
    dialogue = Dialogue(id="d0", dataset="data", split="train", utterances=utterances)
    noted = Dialogue(id="d0", dataset="data", split="train", utterances=utterances, extra={"note": "checked"})
    relabelled = dialogue.with_utterances((utterances[0], Utterance("Bob", "So sad.", "anger")))
    assert data_summary([dialogue]) == data_summary([noted])
    assert data_summary([dialogue]) != data_summary([relabelled])
    assert data_summary([dialogue]).startswith("1 dialogue(s), 2 utterance(s), 2 labelled; sha256 ")


def test_an_unchanged_resume_still_continues(tmp_path: Path, run_cli) -> None:
    recipe = base(tmp_path, optim={"batch_size": 4, "micro_batch_size": 4})
    run = tmp_path / "run"
    stopped(recipe, run)
    result = run_cli("train", recipe, "--output", run, "--set", "checkpoint_every_steps=1", "--no-progress", "--resume")
    assert result.code == 0, result.err
    assert [r["resumed_from"] for r in log_of(run) if r["event"] == "start"] == [None, "step-0000001"]


def test_a_dev_subset_is_drawn_among_the_labelled_dev_dialogues(tmp_path: Path, no_model_loads) -> None:
    # max_dev_dialogues drew among every dev dialogue: it kept an unlabelled one and the run was
    # refused as "the dev data has no labelled utterances", though dev.jsonl has some.
    recipe = base(tmp_path)
    dev = tmp_path / "data" / "dev.jsonl"
    records = [json.loads(line) for line in dev.read_text(encoding="utf-8").splitlines()]
    for record in records[1:]:
        for utterance in record["utterances"]:
            del utterance["emotion"]
    write_lines(dev, records + [{**records[1], "id": f"unlabelled{i}"} for i in range(6)])
    for seed in range(4):
        config = TrainConfig.from_yaml(recipe, {"output_dir": str(tmp_path / "run"), "data.max_dev_dialogues": 1, "seed": seed})
        _, chosen = Trainer(config, progress=False, dev_scoring=predictor_dev_scoring)._data()
        assert [d.id for d in chosen] == [records[0]["id"]]


def lora_b_moved(run: Path) -> bool:
    weights = torch.load(run / "best" / "trainable.pt", weights_only=True)
    return any(bool(tensor.abs().sum() > 0) for name, tensor in weights.items() if "lora_B" in name)


def test_a_one_step_stage_under_warmup_still_trains(tmp_path: Path) -> None:
    # Warmup starts at a learning rate of 0: a stage of one step under warmup_ratio 0.6 warmed up
    # over all of it, took its one step at 0, and the run reported success with untouched adapters.
    recipe = base(tmp_path, optim={"batch_size": 64, "micro_batch_size": 64, "warmup_ratio": 0.6})
    run = tmp_path / "run"
    config = TrainConfig.from_yaml(recipe, {"output_dir": str(run)})
    result = Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()
    assert result.global_step == 1
    assert [r["lr"] for r in log_of(run) if r["event"] == "step"] == [config.optim.lr]
    assert lora_b_moved(run)


def test_each_step_logs_the_learning_rate_it_was_taken_at(tmp_path: Path) -> None:
    # The log gave each step the rate the scheduler held after it: the next step's.
    recipe = base(tmp_path, optim={"batch_size": 4, "micro_batch_size": 4, "warmup_ratio": 0.0})
    run = tmp_path / "run"
    config = TrainConfig.from_yaml(recipe, {"output_dir": str(run), "stages[0].epochs": 0.5})
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()
    rates = [r["lr"] for r in log_of(run) if r["event"] == "step"]
    assert len(rates) >= 2 and rates[0] == config.optim.lr and rates[1] < rates[0]


def test_a_stage_after_the_last_erc_stage_is_refused_before_the_model_loads(tmp_path: Path, no_model_loads) -> None:
    # Dev is scored only in stages that train erc: a speaker stage after them trained steps whose
    # weights could never be selected, and the card listed it as trained.
    recipe = base(tmp_path)
    stages = [{"tasks": {"erc": 1.0}, "epochs": 1}, {"tasks": {"speaker": 1.0}, "epochs": 1}]
    # A recipe rule: refused as the recipe is read (a grid refuses it as it loads, before any run).
    with pytest.raises(InputError, match=r"stage 2 \(speaker\) comes after the last stage that trains erc") as caught:
        TrainConfig.from_yaml(recipe, {"output_dir": str(tmp_path / "run"), "stages": stages})
    assert caught.value.field == "stages[1].tasks"
    assert not (tmp_path / "run").exists()


def test_the_speaker_task_on_monologues_is_refused_before_the_model_loads(tmp_path: Path, run_cli, no_model_loads) -> None:
    # One speaker per dialogue: the task's one answer is always right, and its steps taught nothing.
    recipe = base(tmp_path)
    train = tmp_path / "data" / "train.jsonl"
    records = [json.loads(line) for line in train.read_text(encoding="utf-8").splitlines()]
    for record in records:
        for utterance in record["utterances"]:
            utterance["speaker"] = "Ann"
    write_lines(train, records)
    result = run_cli("train", recipe, "--output", tmp_path / "run", "--set", "stages[0].tasks={erc: 1.0, speaker: 0.5}", "--no-progress")
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert result.err.startswith(f"instructerc: error: {train}: field 'stages[0].tasks.speaker': stage 1 trains speaker, but every")
    # One dialogue between several speakers is something to learn from.
    records[0]["utterances"][0]["speaker"] = "Bob"
    records[0]["utterances"][1]["speaker"] = "Cat"
    write_lines(train, records)
    config = TrainConfig.from_yaml(recipe, {"output_dir": str(tmp_path / "run2"), "stages[0].tasks": {"erc": 1.0, "speaker": 0.5}})
    with pytest.raises(AssertionError, match="the model was loaded"):
        Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()


@dataclass
class _Scored:
    weighted_f1: float

    def to_dict(self) -> dict[str, Any]:
        return {"weighted_f1": self.weighted_f1, "macro_f1": self.weighted_f1, "accuracy": self.weighted_f1, "count": 3}


def scripted(scores: list[float]):
    """Dev scoring that gives ``scores`` in turn, whatever the model (as a GPU's may differ on a rerun)."""
    remaining = list(scores)

    def scoring(dev: DevSet):
        def score(model: Any) -> DevScores:
            value = remaining.pop(0)
            return DevScores(value, {"data": _Scored(value)})

        return score

    return scoring


def test_best_weights_kept_after_the_last_checkpoint_are_named_as_the_model(tmp_path: Path) -> None:
    # Dev improved at step 3, after the checkpoint of step 2, and the run stopped. Resumed, it
    # scored lower at step 3: best/ still held step 3's weights and metrics, which became the
    # model, but the result and the card named step 1, the checkpoint's best.
    recipe = base(tmp_path, optim={"batch_size": 2, "micro_batch_size": 2})
    run = tmp_path / "run"
    overrides = {"output_dir": str(run), "checkpoint_every_steps": 2, "eval_every_steps": 1, "stages[0].epochs": 0.5}
    config = TrainConfig.from_yaml(recipe, overrides)
    Trainer(config, progress=False, dev_scoring=scripted([50.0, 40.0, 90.0]), stop_after_steps=3).run()
    assert json.loads((run / "best" / "dev_metrics.json").read_text(encoding="utf-8"))["step"] == 3
    result = Trainer(config, progress=False, dev_scoring=scripted([30.0] * 20)).run(resume=True)
    assert (result.best_step, result.best_dev_score) == (3, 90.0)
    assert result.dev_metrics["step"] == 3
    card = (run / "model" / "README.md").read_text(encoding="utf-8")
    assert f"checkpoint selected on dev (step 3 of {result.global_step})" in card
    done = [r for r in log_of(run) if r["event"] == "done"]
    assert done[-1]["best_step"] == 3


def test_a_recipe_with_a_stage_after_the_last_erc_stage_is_refused_naming_its_line(tmp_path: Path, run_cli) -> None:
    import yaml

    recipe = base(tmp_path)
    data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    data["stages"] = [{"tasks": {"erc": 1.0}, "epochs": 1}, {"tasks": {"speaker": 1.0}, "epochs": 1}]
    recipe.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    line = next(n for n, text in enumerate(recipe.read_text(encoding="utf-8").splitlines(), 1) if "speaker: 1.0" in text)
    result = run_cli("train", recipe, "--output", tmp_path / "run", "--no-progress")
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert f"{recipe}:{line - 1}: field 'stages[1].tasks': stage 2 (speaker) comes after the last stage" in result.err
    assert not (tmp_path / "run").exists()
