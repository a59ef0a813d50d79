"""Training probes: stages that would train nothing, and what a run's record says about what ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructerc.data.sampling import seeded_subset
from instructerc.errors import InputError
from instructerc.evaluation.dev_scoring import predictor_dev_scoring
from instructerc.training.trainer import Trainer
from test_training import recipe


def one_utterance_dialogues(root: Path) -> Path:
    """train/dev folders whose dialogues have a single utterance each."""
    root.mkdir(parents=True)
    for split, count in (("train", 4), ("dev", 2)):
        records = [{"id": f"{split}{i}", "utterances": [{"speaker": "Ann", "text": "Great news!", "emotion": "joy"}]} for i in range(count)]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return root


def test_a_stage_task_the_data_has_no_example_of_is_refused_before_loading(backbone, tmp_path, no_model_loads) -> None:
    # Emotion prediction needs a past utterance: single-utterance dialogues give it none, and the
    # stage used to take no step while the run finished with exit 0 and listed it in the model card.
    config = recipe(
        one_utterance_dialogues(tmp_path / "data"),
        backbone,
        tmp_path / "run",
        stages=[{"tasks": {"emotion_prediction": 1.0}, "epochs": 1}, {"tasks": {"erc": 1.0}, "epochs": 1}],
    )
    with pytest.raises(InputError, match="stage 1 trains emotion_prediction.*after the first of its dialogue") as caught:
        Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()
    assert caught.value.field == "stages[0].tasks.emotion_prediction"
    assert caught.value.path == str(tmp_path / "data" / "train.jsonl")


def test_a_task_mixed_into_a_stage_without_examples_is_refused_too(backbone, tmp_path, no_model_loads) -> None:
    config = recipe(one_utterance_dialogues(tmp_path / "data"), backbone, tmp_path / "run")  # erc + emotion_prediction
    with pytest.raises(InputError, match="emotion_prediction"):
        Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()


@pytest.mark.parametrize("count", [1, 3, 9])
def test_a_small_share_of_a_few_examples_keeps_one(count: int) -> None:
    # round(0.1 * 3) is 0: a stage {erc: 0.1} on a small training set used to train nothing.
    kept = seeded_subset(list(range(count)), 0.1, seed=7)
    assert len(kept) == 1 and kept == sorted(kept)
    assert len(seeded_subset(list(range(100)), 0.1, seed=7)) == 10
    assert seeded_subset([], 0.1, seed=7) == []


def test_a_single_dialogue_with_small_shares_still_trains_every_stage(tiny_data, backbone, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text((tiny_data / "train.jsonl").read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    (data / "dev.jsonl").write_text((tiny_data / "dev.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    config = recipe(
        data,
        backbone,
        tmp_path / "run",
        stages=[{"tasks": {"speaker": 0.1}, "epochs": 0.5}, {"tasks": {"erc": 0.1, "emotion_prediction": 0.1}, "epochs": 0.5}],
    )
    result = Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    stages = sorted({r["stage"] for r in records if r["event"] == "step"})
    assert stages == [0, 1] and result.best_step == result.global_step == 2


def test_a_stage_without_tasks_is_refused_by_the_config(tiny_data, backbone, tmp_path) -> None:
    with pytest.raises(InputError, match="at least one task"):
        recipe(tiny_data, backbone, tmp_path / "run", stages=[{"tasks": {}, "epochs": 1}, {"tasks": {"erc": 1.0}, "epochs": 1}])


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no folder can be created")
def test_an_output_dir_that_cannot_be_created_is_refused_before_loading(run_cli, tiny_data, backbone, tmp_path, no_model_loads) -> None:
    from test_train_input_checks import write_recipe

    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run"))
    result = run_cli("train", path, "--output", "/proc/instructerc-probe/run", "--no-progress")
    assert result.code == 2
    assert "/proc/instructerc-probe/run: field 'output_dir': cannot create the run directory" in result.err
    assert "Traceback" not in result.err


def test_a_prompt_longer_than_max_length_is_refused_before_the_model_loads(tiny_data, backbone, tmp_path, monkeypatch) -> None:
    from instructerc.modeling import backbone as backbones

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the prompts were checked")

    monkeypatch.setattr(backbones, "load_causal_lm", loaded)
    with pytest.raises(InputError, match="more than max_length=20"):
        Trainer(recipe(tiny_data, backbone, tmp_path / "run", max_length=20), progress=False, dev_scoring=predictor_dev_scoring).run()


def test_a_prompt_longer_than_max_length_names_the_file_and_the_setting(tiny_data, backbone, tmp_path) -> None:
    config = recipe(tiny_data, backbone, tmp_path / "run", max_length=20)
    with pytest.raises(
        InputError, match=r"dialogue 'train\d+' \(dataset .*\), erc example: utterance 0 needs .* more than max_length=20"
    ) as caught:
        Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()
    assert caught.value.path == str(tiny_data / "train.jsonl") and caught.value.field == "max_length"


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"finetune__lora__r": 8}, r"of another shape, e\.g\. .*lora_A.* \(4x32 saved, 8x32 now\)"),
        ({"finetune__method": "full"}, r"\d+ missing, e\.g\. .*; \d+ not trainable in this model"),
        ({"finetune__lora__target_modules": ["q_proj"]}, r"4 not trainable in this model, e\.g\. .*v_proj"),
    ],
)
def test_a_forced_resume_whose_weights_do_not_fit_is_one_line_naming_the_checkpoint(
    tiny_data, backbone, tmp_path, changes, fragment
) -> None:
    config = recipe(tiny_data, backbone, tmp_path / "run")
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring, stop_after_steps=5).run()
    changed = recipe(tiny_data, backbone, tmp_path / "run", **changes)
    with pytest.raises(InputError, match=fragment) as caught:
        Trainer(changed, progress=False, dev_scoring=predictor_dev_scoring, force=True).run(resume=True)
    assert caught.value.path == str(tmp_path / "run" / "checkpoints" / "step-0000005" / "trainable.pt")


def test_a_forced_resume_is_on_the_model_card_and_in_the_metrics(tiny_data, backbone, tmp_path) -> None:
    # The card's Training lines describe the recipe the run finished with; steps 1-5 ran at another lr.
    Trainer(recipe(tiny_data, backbone, tmp_path / "run"), progress=False, dev_scoring=predictor_dev_scoring, stop_after_steps=5).run()
    changed = recipe(tiny_data, backbone, tmp_path / "run", optim__lr=0.01)
    Trainer(changed, progress=False, dev_scoring=predictor_dev_scoring, force=True).run(resume=True)
    card = (tmp_path / "run" / "model" / "README.md").read_text(encoding="utf-8")
    assert "Resumed with --force under a changed recipe" in card and "at step 5: optim.lr: 0.02 -> 0.01" in card
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["forced_changes"] for r in records if r["event"] == "resume"] == [["optim.lr: 0.02 -> 0.01"]]


def test_a_model_folder_of_other_files_in_the_output_dir_is_refused_not_deleted(tiny_data, backbone, tmp_path, no_model_loads) -> None:
    # The finished run replaces model/ whole: a user's files there used to vanish without a word.
    notes = tmp_path / "run" / "model" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("precious", encoding="utf-8")
    for resume in (False, True):
        with pytest.raises(InputError, match="not an instructerc model") as caught:
            Trainer(recipe(tiny_data, backbone, tmp_path / "run"), progress=False, dev_scoring=predictor_dev_scoring).run(resume=resume)
        assert caught.value.path == str(notes.parent) and caught.value.field == "output_dir"
    assert notes.read_text(encoding="utf-8") == "precious"


def test_a_checkpoint_cut_short_while_saving_does_not_block_a_fresh_run(tiny_data, backbone, tmp_path) -> None:
    # A full disk during the first save left only its staging folder: nothing to resume from.
    staging = tmp_path / "run" / "checkpoints" / ".step-0000003.tmp"
    staging.mkdir(parents=True)
    (staging / "trainable.pt").write_bytes(b"cut")
    result = Trainer(recipe(tiny_data, backbone, tmp_path / "run"), progress=False, dev_scoring=predictor_dev_scoring).run()
    assert result.best_step is not None


@pytest.mark.parametrize("damage", ['{"by_dataset": {"data": {}}}', "[]", "{not json", '{"by_dataset": {}}'])
def test_damaged_best_dev_metrics_are_refused_as_the_run_resumes_naming_the_file(tiny_data, backbone, tmp_path, damage) -> None:
    # Not hours later, when the model card is written from them.
    config = recipe(tiny_data, backbone, tmp_path / "run", eval_every_steps=5)
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring, stop_after_steps=5).run()
    metrics = tmp_path / "run" / "best" / "dev_metrics.json"
    assert metrics.is_file()
    metrics.write_text(damage, encoding="utf-8")
    with pytest.raises(InputError, match="damaged") as caught:
        Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run(resume=True)
    assert caught.value.path == str(metrics)


def test_a_checkpoint_past_the_recipes_last_stage_is_refused(tiny_data, backbone, tmp_path) -> None:
    config = recipe(tiny_data, backbone, tmp_path / "run")
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring, stop_after_steps=5).run()
    (state_file,) = (tmp_path / "run" / "checkpoints").glob("step-*/state.json")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    state["stage"] = 7
    state_file.write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(InputError, match="written after stage 7 of its run, but the recipe has") as caught:
        Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run(resume=True)
    assert caught.value.path == str(state_file) and caught.value.field == "stage"


def test_a_model_card_of_a_template_with_every_part_off_reads_as_a_sentence(tmp_path) -> None:
    from instructerc.labels.benchmarks import MELD
    from instructerc.prompts.setup import PromptSetup
    from instructerc.prompts.templates import TemplateConfig
    from instructerc.retrieval.index import RetrievalConfig
    from instructerc.training.checkpoint import TrainState
    from instructerc.training.config import TrainConfig
    from instructerc.training.model_card import write_model_card

    template = TemplateConfig(instruction=False, history=False, label_statement=False, demonstration=False)
    setup = PromptSetup(template, MELD, 512, RetrievalConfig())
    write_model_card(tmp_path, TrainConfig(), setup, {}, TrainState(), location=None)
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "- template: `instructerc` with no parts; no history;" in card


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_under_the_metrics_log_names_the_file(run_cli, tiny_data, backbone, tmp_path) -> None:
    from test_train_input_checks import write_recipe

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").symlink_to("/dev/full")
    path = write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, run))
    result = run_cli("train", path, "--no-progress")
    assert result.code == 1
    assert f"instructerc: error: {run / 'metrics.jsonl'}: No space left on device" in result.err


def test_a_jsonl_models_card_names_its_files_label_set_not_original_labels(tmp_path) -> None:
    from dataclasses import replace

    from instructerc.labels.label_set import LabelSet
    from instructerc.prompts.setup import PromptSetup
    from instructerc.prompts.templates import TemplateConfig
    from instructerc.retrieval.index import RetrievalConfig
    from instructerc.training.checkpoint import TrainState
    from instructerc.training.config import DataConfig, TrainConfig
    from instructerc.training.model_card import write_model_card

    setup = PromptSetup(TemplateConfig(), LabelSet.from_names("support-chats", ["calm", "upset"]), 512, RetrievalConfig())
    config = replace(TrainConfig(), data=DataConfig(dataset="jsonl", path=str(tmp_path)))
    write_model_card(tmp_path, config, setup, {}, TrainState(), location=None)
    title = (tmp_path / "README.md").read_text(encoding="utf-8").splitlines()[0]
    assert title.endswith("on jsonl (`support-chats` labels)")
    write_model_card(
        tmp_path, TrainConfig(), PromptSetup(TemplateConfig(), setup.label_set, 512, RetrievalConfig()), {}, TrainState(), location=None
    )
    assert (tmp_path / "README.md").read_text(encoding="utf-8").splitlines()[0].endswith("on meld (original labels)")
