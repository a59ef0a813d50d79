"""Demonstrations and auxiliary tasks on odd settings: a refusal naming the field, file or line,
never a traceback or a prompt no model is trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.templates import TemplateConfig
from instructerc.retrieval.encoder import SentenceEncoder
from instructerc.retrieval.index import RetrievalConfig, load_pool, save_pool
from test_prompts import DIALOGUE, builder
from test_retrieval import retriever


@pytest.mark.parametrize("encoder", ["", "  "])
def test_an_empty_encoder_name_is_refused_naming_the_field(encoder: str) -> None:
    # "" is the path ".": the current folder would be loaded as the sentence encoder.
    with pytest.raises(InputError, match="must name a sentence encoder") as refused:
        RetrievalConfig(encoder=encoder)
    assert refused.value.field == "retrieval.encoder"


@pytest.mark.parametrize("size", [0, -3])
def test_a_batch_size_below_one_is_refused_before_anything_is_embedded(size: int) -> None:
    with pytest.raises(InputError, match="at least 1") as refused:
        RetrievalConfig(batch_size=size)
    assert refused.value.field == "retrieval.batch_size"


def test_a_recipe_with_a_zero_batch_size_names_the_file_and_field(tmp_path: Path) -> None:
    from instructerc.training.config import TrainConfig

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("retrieval:\n  batch_size: 0\n", encoding="utf-8")
    with pytest.raises(InputError, match="at least 1") as refused:
        TrainConfig.from_yaml(recipe)
    assert (refused.value.path, refused.value.field) == (str(recipe), "retrieval.batch_size")


def test_a_folder_that_is_not_a_sentence_transformers_model_is_refused(tmp_path: Path) -> None:
    # A causal LM (the backbone given by mistake) would otherwise load, wrapped in mean pooling,
    # and retrieve by meaningless embeddings.
    from tiny import tiny_backbone

    folder = tiny_backbone(tmp_path / "backbone")
    with pytest.raises(InputError, match="not a sentence-transformers model: no modules.json") as refused:
        SentenceEncoder.load(str(folder))
    assert refused.value.path == str(folder) and "\n" not in str(refused.value)


# --- a saved pool and the model's labels -----------------------------------------------------------


def model_with_pool(tmp_path: Path) -> Path:
    """A model directory's prompt setup (MELD labels) and the demonstration pool beside it."""
    directory = tmp_path / "model"
    save_pool(retriever(tmp_path).index, directory)
    PromptSetup(TemplateConfig(demonstration=True), MELD, 512, RetrievalConfig()).save(directory)
    return directory


def relabel(directory: Path, number: int, label: str) -> None:
    file = directory / "demonstrations.jsonl"
    lines = file.read_text(encoding="utf-8").split("\n")
    lines[number - 1] = json.dumps({**json.loads(lines[number - 1]), "label": label})
    file.write_text("\n".join(lines), encoding="utf-8")


def test_a_pool_label_that_is_not_a_label_of_the_model_is_refused_naming_its_line(tmp_path: Path) -> None:
    directory = model_with_pool(tmp_path)
    assert len(load_pool(directory, MELD.labels)) == 60
    relabel(directory, 5, "happy")
    with pytest.raises(InputError, match="'happy' is not a label of the model") as refused:
        load_pool(directory, MELD.labels)
    assert (refused.value.path, refused.value.line, refused.value.field) == (str(directory / "demonstrations.jsonl"), 5, "label")


def test_labels_given_to_load_pool_are_checked_too(tmp_path: Path) -> None:
    directory = model_with_pool(tmp_path)
    with pytest.raises(InputError, match="is not a label of the model"):
        load_pool(directory, labels=["joy"])


def test_prompts_show_with_a_pool_of_other_labels_is_one_line_naming_it(run_cli, tmp_path: Path) -> None:
    from tiny import tiny_model_dir

    directory = tiny_model_dir(tmp_path / "model", MELD, TemplateConfig(demonstration=True))
    save_pool(retriever(tmp_path).index, directory)
    relabel(directory, 2, "happy")
    data = tmp_path / "data"
    data.mkdir()
    record = {"id": "d", "utterances": [{"speaker": "Ann", "text": "okay yeah", "emotion": "joy"}]}
    (data / "train.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")

    result = run_cli("prompts", "show", "--dataset", "jsonl", "--data", data, "--label-set", "meld", "--model", directory)

    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.strip().splitlines() == [
        f"instructerc: error: {directory / 'demonstrations.jsonl'}:2: field 'label': 'happy' is not a label of the model beside "
        "this pool (neutral, surprise, fear, sadness, joy, disgust, anger): the pool is from another model"
    ]


# --- auxiliary tasks --------------------------------------------------------------------------------


def test_emotion_prediction_of_a_dialogues_first_utterance_is_refused() -> None:
    # Nothing precedes it: the prompt would predict "based on the above historical utterances"
    # with none above, an example training never makes.
    with pytest.raises(InputError, match="needs a past utterance") as refused:
        builder().emotion_prediction(DIALOGUE, 0)
    assert refused.value.field == "index"
    assert builder().emotion_prediction(DIALOGUE, 1).target == "surprise"
