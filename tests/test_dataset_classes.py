"""template.dataset_classes: a dialogue naming a benchmark is told that benchmark's classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.labels.unified import FEELING_WHEEL, INSTRUCTERC
from instructerc.prompts.example import Task
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.tasks import ExampleBuilder
from instructerc.prompts.templates import TemplateConfig, build_template
from instructerc.retrieval.index import RetrievalConfig

STREAM = TemplateConfig(name="dialogue-stream", demonstration=False, dataset_classes=True)


def dialogue(dataset: str, name: str = "d1") -> Dialogue:
    lines = (Utterance("Ann", "Wow, really?", "powerful"), Utterance("Bob", "Yes!", "joyful"))
    return Dialogue(id=name, dataset=dataset, split="train", utterances=lines)


def prompt(builder: ExampleBuilder, task: Task, d: Dialogue, named: bool = True) -> str:
    return "".join(s.text for s in builder.example(task, d, 1, named).segments)


@pytest.mark.parametrize("name", ["dialogue-stream", "dialogue-prefix", "instructerc"])
@pytest.mark.parametrize("task", [Task.ERC, Task.EMOTION_PREDICTION])
def test_a_named_benchmark_is_told_its_own_classes_and_anything_else_every_label(name: str, task: Task) -> None:
    builder = ExampleBuilder(build_template(TemplateConfig(name=name, demonstration=False, dataset_classes=True), INSTRUCTERC.label_set))
    expected = {
        "emorynlp": "joyful, sad, neutral, mad, fear, peaceful, powerful",
        "meld": "joyful, sad, neutral, mad, fear, disgust, powerful",
        "iemocap": "joyful, sad, neutral, mad, excited, fear",
        "unnamed": ", ".join(INSTRUCTERC.label_set.verbalizers),
        "request": ", ".join(INSTRUCTERC.label_set.verbalizers),
    }
    for dataset, options in expected.items():
        assert f"<{options}>" in prompt(builder, task, dialogue(dataset)), dataset
    assert f"<{expected['unnamed']}>" in prompt(builder, task, dialogue("meld"), named=False)


def test_the_feeling_wheel_mapping_states_its_own_words() -> None:
    builder = ExampleBuilder(build_template(STREAM, FEELING_WHEEL.label_set))
    text = prompt(builder, Task.ERC, dialogue("meld"))
    own = [FEELING_WHEEL.forward["meld"][label] for label in MELD.labels]
    stated = text.split("one of <")[1].split(">")[0].split(", ")
    assert sorted(stated) == sorted(FEELING_WHEEL.label_set.verbalize(label) for label in own)


def test_without_the_switch_every_dialogue_is_told_every_label() -> None:
    builder = ExampleBuilder(build_template(TemplateConfig(name="dialogue-stream", demonstration=False), INSTRUCTERC.label_set))
    assert prompt(builder, Task.ERC, dialogue("emorynlp")) == prompt(builder, Task.ERC, dialogue("unnamed"))


def test_training_drops_the_name_for_a_stable_share_of_dialogues_and_inference_never() -> None:
    config = TemplateConfig(name="dialogue-stream", demonstration=False, dataset_classes=True, unnamed_share=0.25)
    builder = ExampleBuilder(build_template(config, INSTRUCTERC.label_set))
    dialogues = [dialogue("meld", f"dia{k}") for k in range(2000)]
    unnamed = [d.id for d in dialogues if not builder.named(d, training=True)]
    assert 0.22 < len(unnamed) / len(dialogues) < 0.28
    assert unnamed == [d.id for d in dialogues if not builder.named(d, training=True)], "the same dialogues every time"
    assert all(builder.named(d, training=False) for d in dialogues)

    every = f"<{', '.join(INSTRUCTERC.label_set.verbalizers)}>"
    examples = list(builder.examples(Task.ERC, dialogues[:200], training=True))
    shown_every = {e.dialogue_id for e in examples if every in "".join(s.text for s in e.segments)}
    assert shown_every == {name for name in unnamed if int(name[3:]) < 200}
    assert all(e.dataset == "meld" for e in examples), "the example still records its benchmark (class weights, scoring)"
    assert not any(every in "".join(s.text for s in e.segments) for e in builder.examples(Task.ERC, dialogues[:200], training=False))


@pytest.mark.parametrize(
    "fields, field, fragment",
    [
        ({"dataset_classes": "yes"}, "template.dataset_classes", "True or False"),
        ({"dataset_classes": True, "unnamed_share": 1.5}, "template.unnamed_share", "between 0 and 1"),
        ({"dataset_classes": True, "unnamed_share": -0.1}, "template.unnamed_share", "between 0 and 1"),
        ({"dataset_classes": True, "unnamed_share": "0.2"}, "template.unnamed_share", "a number"),
        ({"unnamed_share": 0.2}, "template.unnamed_share", "only applies with dataset_classes"),
        ({"dataset_classes": True, "label_statement": False}, "template.dataset_classes", "needs label_statement: true"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(fields: dict, field: str, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        TemplateConfig(name="dialogue-stream", demonstration=False, **fields)
    assert caught.value.field == field and fragment in caught.value.message


def test_a_label_set_without_benchmarks_to_name_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        build_template(STREAM, MELD)
    assert caught.value.field == "template.dataset_classes" and "unified label set" in caught.value.message


def test_the_setting_is_saved_with_the_model_and_read_back(tmp_path: Path) -> None:
    config = TemplateConfig(name="dialogue-stream", demonstration=False, dataset_classes=True, unnamed_share=0.25)
    PromptSetup(config, INSTRUCTERC.label_set, 512, RetrievalConfig()).save(tmp_path)
    assert PromptSetup.load(tmp_path).template == config


def test_the_model_card_says_how_the_label_statement_is_chosen(tmp_path: Path) -> None:
    from instructerc.training.checkpoint import TrainState
    from instructerc.training.config import TrainConfig
    from instructerc.training.model_card import write_model_card

    config = TemplateConfig(name="dialogue-stream", demonstration=False, dataset_classes=True, unnamed_share=0.25)
    setup = PromptSetup(config, INSTRUCTERC.label_set, 512, RetrievalConfig())
    write_model_card(tmp_path, TrainConfig(), setup, {}, TrainState(), location=None)
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert (
        "history from the dialogue start; the label statement lists a named benchmark's own classes, every label otherwise "
        "(in training, every label for 25% of dialogues); max_length" in card
    )
