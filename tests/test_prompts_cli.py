"""``instructerc prompts show``: the printed prompt is exactly what the library builds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructerc.data.registry import DataSource, load_dialogues
from instructerc.labels.benchmarks import MELD
from instructerc.modeling.backbone import load_tokenizer
from instructerc.prompts.encoding import SegmentTokenizer
from instructerc.prompts.example import Task
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.tasks import speaker_slots
from instructerc.prompts.templates import TemplateConfig
from instructerc.retrieval.index import RetrievalConfig


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny backbone's tokenizer alone: ``prompts show`` loads nothing else from the model
    directory (and building the tiny Llama too would cost ~10 s of torch for no assertion)."""
    from tiny import tiny_tokenizer

    directory = tmp_path_factory.mktemp("tiny-backbone")
    tiny_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def meld(data_root: Path) -> tuple[list, list]:
    source = DataSource("meld", data_root)
    return load_dialogues(source, "train"), load_dialogues(source, "dev")


def write_recipe(tmp_path: Path, backbone: Path) -> Path:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"backbone: {{model: {backbone}}}\ntemplate: {{demonstration: false}}\n", encoding="utf-8")
    return recipe


def printed(out: str) -> tuple[list[str], str, str]:
    """(header lines, prompt, target) of ``prompts show`` output."""
    head, rest = out.split("--- prompt ---\n")
    prompt, target = rest.split("\n--- target ---\n")
    return head.splitlines(), prompt, target.rstrip("\n")


def test_prompts_show_prints_the_library_prompt(run_cli, data_root: Path, tmp_path: Path, backbone: Path, meld) -> None:
    train, dev = meld
    recipe = write_recipe(tmp_path, backbone)
    result = run_cli("prompts", "show", "--dataset", "meld", "--data", data_root, "--split", "dev", "--index", "0", "--config", recipe)
    assert result.code == 0, result.err
    head, prompt, target = printed(result.out)

    setup = PromptSetup(TemplateConfig(demonstration=False), MELD, 1024, RetrievalConfig(), "paper", speaker_slots(train))
    example = setup.builder().example(Task.ERC, dev[0], 0)
    first = dev[0].utterances[0]
    assert prompt == example.prompt
    assert prompt == (
        "Now you are expert of sentiment and emotional analysis. "
        "The following conversation noted between '### ###' involves several speakers. ### "
        f'\t {first.speaker}:"{first.text}" ### '
        f'Please select the emotional label of < {first.speaker}:"{first.text}"> from <neutral, surprise, fear, sad, joyful, disgust, angry>:'  # noqa: E501
    )
    assert target == example.target == MELD.verbalize(first.emotion)
    encoded = setup.encode([example], SegmentTokenizer(load_tokenizer(str(backbone))))[0]
    assert head == [
        f"# meld dev dialogue {dev[0].id}, utterance 0, task erc, template instructerc",
        f"# {len(encoded.prompt_ids)} prompt tokens + {len(encoded.target_ids)} target tokens (max_length 1024)",
    ]


def test_prompts_show_locates_the_utterance_and_applies_switches(run_cli, data_root: Path, tmp_path: Path, backbone: Path, meld) -> None:
    train, dev = meld
    recipe = write_recipe(tmp_path, backbone)
    position = len(dev[0]) + 2  # the third utterance of the second dev dialogue
    result = run_cli(
        "prompts",
        "show",
        "--dataset",
        "meld",
        "--data",
        data_root,
        "--split",
        "dev",
        "--index",
        str(position),
        "--config",
        recipe,
        "--task",
        "emotion_prediction",
        "--template",
        "dialogue-prefix",
        "--no-label-statement",
    )
    assert result.code == 0, result.err
    head, prompt, target = printed(result.out)
    config = TemplateConfig(name="dialogue-prefix", label_statement=False, demonstration=False)
    setup = PromptSetup(config, MELD, 1024, RetrievalConfig(), "paper", speaker_slots(train))
    example = setup.builder().example(Task.EMOTION_PREDICTION, dev[1], 2)
    assert prompt == example.prompt and target == example.target
    assert head[0] == f"# meld dev dialogue {dev[1].id}, utterance 2, task emotion_prediction, template dialogue-prefix"
    assert "<neutral, surprise" not in prompt


def test_prompts_show_rejects_an_index_outside_the_split(run_cli, data_root: Path, tmp_path: Path, backbone: Path, meld) -> None:
    _, dev = meld
    recipe = write_recipe(tmp_path, backbone)
    total = sum(len(d) for d in dev)
    result = run_cli(
        "prompts", "show", "--dataset", "meld", "--data", data_root, "--split", "dev", "--index", str(total), "--config", recipe
    )
    assert result.code == 2
    assert f"outside the split's {total} utterances" in result.err


def test_prompts_show_with_an_adapter_only_model_uses_its_backbones_tokenizer(run_cli, tmp_path: Path, backbone: Path) -> None:
    # The shipped default model's layout: prompt setup and manifest, no tokenizer files.
    from instructerc.modeling.backbone import BackboneConfig
    from instructerc.modeling.model_dir import Manifest

    model = tmp_path / "adapter-only"
    model.mkdir()
    setup = PromptSetup(TemplateConfig(name="dialogue-stream", demonstration=False), MELD, 512, RetrievalConfig(), "paper", 9)
    setup.save(model)
    Manifest(BackboneConfig(model=str(backbone)), "lora").save(model)
    data = tmp_path / "mine.jsonl"
    data.write_text('{"id": "a", "utterances": [{"speaker": "Ann", "text": "Hi!"}, {"speaker": "Bob", "text": "Oh no."}]}\n')

    result = run_cli("prompts", "show", "--dataset", "jsonl", "--data", data, "--split", "test", "--index", "1", "--model", model)

    assert result.code == 0, result.err
    head, prompt, _ = printed(result.out)
    [example] = [setup.builder().example(Task.ERC, d, 1) for d in load_dialogues(DataSource("jsonl", data), "test")]
    assert prompt == example.prompt
    tokens = len(setup.encode([example], SegmentTokenizer(load_tokenizer(str(backbone))), with_target=False)[0].prompt_ids)
    assert f"# {tokens} prompt tokens" in head[1]


def test_prompts_show_from_one_file_never_shows_an_utterance_itself_as_its_demonstration(run_cli, tmp_path: Path, backbone: Path) -> None:
    # One file is train, dev and test at once: the dev utterance is in the pool as train.
    texts = [("Go away", "anger"), ("I love this", "joy"), ("What a lovely day", "joy"), ("Leave me alone", "anger")]
    records = [
        {"id": f"d{k}", "utterances": [{"speaker": "Ann", "text": text, "emotion": emotion}]} for k, (text, emotion) in enumerate(texts)
    ]
    data = tmp_path / "one.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"backbone: {{model: {backbone}}}\nretrieval: {{cache_dir: {tmp_path / 'cache'}}}\n", encoding="utf-8")
    for index, (text, _) in enumerate(texts):
        result = run_cli(
            "prompts",
            "show",
            "--dataset",
            "jsonl",
            "--data",
            data,
            "--label-set",
            "meld",
            "--split",
            "dev",
            "--index",
            str(index),
            "--config",
            recipe,
        )
        assert result.code == 0, result.err
        _, prompt, _ = printed(result.out)
        assert "Here is a demonstration: the utterance <" in prompt
        assert f'the utterance <"{text}">' not in prompt, prompt


def test_prompts_show_with_a_model_folder_that_does_not_exist_says_so(run_cli, tmp_path: Path) -> None:
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"id": "a", "utterances": [{"speaker": "A", "text": "Hi", "emotion": "joy"}]}) + "\n", encoding="utf-8")
    result = run_cli("prompts", "show", "--dataset", "jsonl", "--data", data, "--label-set", "meld", "--model", tmp_path / "nope")
    assert result.code == 2 and "no such model directory" in result.err, result.err


def test_prompts_show_names_the_file_line_of_an_utterance_too_long_for_max_length(run_cli, tmp_path: Path, backbone: Path) -> None:
    # The budget's own error named only "field 'dialogue 'b''": not where to look, nor what to change.
    records = [
        {"id": "a", "utterances": [{"speaker": "Ann", "text": "Hi", "emotion": "joy"}]},
        {"id": "b", "utterances": [{"speaker": "Bob", "text": "word " * 1500, "emotion": "anger"}]},
    ]
    data = tmp_path / "one.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"backbone: {{model: {backbone}}}\ntemplate: {{demonstration: false}}\nmax_length: 256\n", encoding="utf-8")
    result = run_cli("prompts", "show", "--dataset", "jsonl", "--data", data, "--label-set", "meld", "--index", "1", "--config", recipe)
    assert result.code == 2 and "Traceback" not in result.err
    assert f"{data}:2: field 'max_length': dialogue 'b'" in result.err, result.err
    assert "raise max_length" in result.err


def test_prompts_show_names_the_split_in_its_canonical_spelling(run_cli, data_root: Path, tmp_path: Path, backbone: Path) -> None:
    recipe = write_recipe(tmp_path, backbone)
    result = run_cli("prompts", "show", "--dataset", "meld", "--data", data_root, "--split", "DEV", "--config", recipe)
    assert result.code == 0, result.err
    assert printed(result.out)[0][0].startswith("# meld dev dialogue "), result.out
