"""``prompts show --model``: the gold is shown in the labels the model answers in."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructerc.data.registry import DataSource, load_dialogues
from instructerc.labels.benchmarks import EMORYNLP, MELD
from instructerc.labels.label_set import LabelSet
from instructerc.labels.unified import FEELING_WHEEL, INSTRUCTERC
from instructerc.modeling.backbone import BackboneConfig
from instructerc.modeling.model_dir import Manifest
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.templates import TemplateConfig
from instructerc.retrieval.index import RetrievalConfig


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tokenizer alone: ``prompts show`` loads nothing else."""
    from tiny import tiny_tokenizer

    directory = tmp_path_factory.mktemp("tiny-backbone")
    tiny_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def surprise(data_root: Path) -> int:
    """The position in MELD's train split of its first utterance labelled surprise."""
    located = [u.emotion for d in load_dialogues(DataSource("meld", data_root), "train") for u in d.utterances]
    return located.index("surprise")


def adapter_model(directory: Path, backbone: Path, label_set: LabelSet) -> Path:
    """The shipped default model's layout (adapter only) in ``label_set``."""
    directory.mkdir()
    PromptSetup(TemplateConfig(name="dialogue-stream", demonstration=False), label_set, 512, RetrievalConfig()).save(directory)
    Manifest(BackboneConfig(model=str(backbone)), "lora").save(directory)
    return directory


def show(run_cli, data_root: Path, model: Path, index: int, *more: str):
    return run_cli("prompts", "show", "--dataset", "meld", "--data", data_root, "--model", model, "--index", str(index), *more)


def test_a_unified_model_sees_the_benchmark_gold_through_its_mapping(run_cli, data_root: Path, tmp_path: Path, backbone, surprise) -> None:
    model = adapter_model(tmp_path / "uime", backbone, INSTRUCTERC.label_set)

    result = show(run_cli, data_root, model, surprise)

    assert result.code == 0, result.err
    assert result.out.rstrip("\n").endswith("--- target ---\npowerful")
    assert result.out == show(run_cli, data_root, model, surprise, "--labels", "uime").out


def test_a_model_without_a_mapping_for_the_gold_is_one_line(run_cli, data_root: Path, tmp_path: Path, backbone, surprise) -> None:
    model = adapter_model(tmp_path / "emorynlp", backbone, EMORYNLP)

    result = show(run_cli, data_root, model, surprise)

    assert result.code == 2 and result.out == ""
    [line] = result.err.splitlines()
    assert "gold emotion 'surprise'" in line and "not a label of this model (emorynlp:" in line and "no mapping for meld" in line


def test_data_read_in_another_unified_space_is_one_line(run_cli, data_root: Path, tmp_path: Path, backbone, surprise) -> None:
    model = adapter_model(tmp_path / "uime", backbone, INSTRUCTERC.label_set)

    result = show(run_cli, data_root, model, surprise, "--labels", "uime:feeling-wheel")

    assert result.code == 2
    [line] = result.err.splitlines()
    assert "gold emotion 'surprise'" in line and "another label space" in line


def test_a_gold_read_in_another_unified_space_is_refused_even_where_its_word_is_a_label(
    run_cli, data_root: Path, tmp_path: Path, backbone, surprise
) -> None:
    """MELD's surprise read with --labels uime is ``powerful``: a feeling-wheel label too, but that model
    learnt ``surprise`` for it. Shown as the target it would be wrong without a word."""
    model = adapter_model(tmp_path / "wheel", backbone, FEELING_WHEEL.label_set)
    assert show(run_cli, data_root, model, surprise).out.rstrip("\n").endswith("--- target ---\nsurprise")

    result = show(run_cli, data_root, model, surprise, "--labels", "uime")

    assert result.code == 2 and result.out == ""
    [line] = result.err.splitlines()
    assert "gold emotion 'powerful'" in line and "another label space" in line and "--labels uime:feeling-wheel" in line


def test_a_model_in_the_datasets_own_labels_is_unchanged(run_cli, data_root: Path, tmp_path: Path, backbone, surprise) -> None:
    model = adapter_model(tmp_path / "meld", backbone, MELD)

    result = show(run_cli, data_root, model, surprise)

    assert result.code == 0, result.err
    assert result.out.rstrip("\n").endswith("--- target ---\nsurprise")


def test_label_set_on_a_user_file_maps_its_gold_as_evaluate_does(run_cli, tmp_path: Path, backbone) -> None:
    # `--label-set meld` says a JSONL file's gold is MELD's; `evaluate` then scores it through the
    # unified model's mapping, but `prompts show` refused the same file: "no mapping for data".
    data = tmp_path / "data.jsonl"
    data.write_text(
        '{"id": "a", "utterances": [{"speaker": "A", "text": "Hi!"}, {"speaker": "B", "text": "wow", "emotion": "surprise"}]}\n'
    )
    model = adapter_model(tmp_path / "uime", backbone, INSTRUCTERC.label_set)

    result = run_cli(
        "prompts", "show", "--dataset", "jsonl", "--data", data, "--label-set", "meld", "--split", "test", "--index", "1", "--model", model
    )

    assert result.code == 0, result.err
    assert result.out.rstrip("\n").endswith("--- target ---\npowerful")
