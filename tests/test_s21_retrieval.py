"""Round 21, retrieval and prompts: sentence-encoder folders that load but embed noise or fail
with a bare Python error, a "~" cache folder, a saved model's relative encoder path, and the
budget's advice for a prompt too long because of its speaker's name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.budget import PromptTooLong, encode_example
from instructerc.prompts.encoding import SegmentTokenizer
from instructerc.prompts.example import Task
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.templates import TemplateConfig
from instructerc.retrieval.encoder import SentenceEncoder, embedded_encoder_path
from instructerc.retrieval.index import DemonstrationIndex, RetrievalConfig
from tiny import tiny_tokenizer


def encoder_copy(tmp_path: Path, without: tuple[str, ...] = (), replaced: dict[str, str] | None = None) -> Path:
    """The embedded encoder's files, linked, less ``without`` and with ``replaced`` files' text."""
    source = embedded_encoder_path()
    copy = tmp_path / "encoder"
    copy.mkdir()
    replaced = replaced or {}
    for entry in source.iterdir():
        if entry.name not in without and entry.name not in {name.split("/")[0] for name in replaced}:
            (copy / entry.name).symlink_to(entry)
    for name, text in replaced.items():
        target = copy / name
        if len(target.relative_to(copy).parts) > 1 and not target.parent.exists():
            # A module folder: its other files linked, this one written.
            target.parent.mkdir()
            for entry in (source / target.parent.name).iterdir():
                if entry.name != target.name:
                    (target.parent / entry.name).symlink_to(entry)
        target.write_text(text, encoding="utf-8")
    return copy


def edited(name: str, **changes: object) -> str:
    """The embedded encoder's JSON file ``name`` with ``changes`` made."""
    data = json.loads((embedded_encoder_path() / name).read_text(encoding="utf-8"))
    return json.dumps({**data, **changes})


@pytest.mark.parametrize(
    "without", [("vocab.txt", "tokenizer.json"), ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")]
)
def test_an_encoder_without_its_vocabulary_is_refused_not_left_to_embed_every_text_alike(tmp_path: Path, without) -> None:
    # It loaded without a word: a tokenizer of its 5 special tokens read every word as [UNK], so
    # every text got nearly the same vector and demonstrations were ranked by noise.
    folder = encoder_copy(tmp_path, without=without)

    with pytest.raises(InputError, match="tokenizer knows no words") as error:
        SentenceEncoder.load(str(folder))

    assert error.value.path == str(folder) and "vocab.txt" in error.value.message


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("modules.json", "[1]"),
        ("modules.json", '[{"path": ""}]'),
        ("modules.json", "null"),
        ("modules.json", "{not json"),
        ("config.json", "null"),
        ("sentence_bert_config.json", "[1, 2]"),
        ("tokenizer_config.json", "[]"),
        ("config_sentence_transformers.json", "[]"),
        ("1_Pooling/config.json", "[]"),
        ("1_Pooling/config.json", "{not json"),
    ],
)
def test_a_damaged_settings_file_of_an_encoder_is_an_error_naming_that_file(tmp_path: Path, name: str, text: str) -> None:
    # Valid JSON of another shape failed inside sentence-transformers with a bare TypeError,
    # KeyError or AttributeError; invalid JSON in a module's folder named no file.
    folder = encoder_copy(tmp_path, replaced={name: text})

    with pytest.raises(InputError, match="cannot load this sentence encoder") as error:
        SentenceEncoder.load(str(folder))

    assert error.value.path == str(folder / name)


@pytest.mark.parametrize("length", ['"512"', "-1", "0"])
def test_a_max_seq_length_that_is_no_positive_number_is_refused_as_the_encoder_loads(tmp_path: Path, length: str) -> None:
    # "512" failed with a TypeError and -1 with an OverflowError, and only once a text was
    # embedded: on runs whose embeddings were not cached.
    text = edited("sentence_bert_config.json").replace('"max_seq_length": 256', f'"max_seq_length": {length}')
    folder = encoder_copy(tmp_path, replaced={"sentence_bert_config.json": text})

    with pytest.raises(InputError, match="max_seq_length") as error:
        SentenceEncoder.load(str(folder))

    assert error.value.path == str(folder)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("config.json", edited("config.json", hidden_size="384"), "hidden_size"),
        ("1_Pooling/config.json", edited("1_Pooling/config.json", pooling_mode_typo=True), "pooling_mode_typo"),
        # Loaded as the string "384": the pool was later said to be "embedded by another encoder".
        ("1_Pooling/config.json", edited("1_Pooling/config.json", word_embedding_dimension="384"), "word_embedding_dimension"),
    ],
)
def test_a_setting_of_the_wrong_kind_is_one_input_error(tmp_path: Path, name: str, text: str, message: str) -> None:
    # A StrictDataclassFieldValidationError (config.json) and a TypeError (a module's unknown
    # setting) escaped as tracebacks; a width of "384" loaded.
    folder = encoder_copy(tmp_path, replaced={name: text})

    with pytest.raises(InputError, match="cannot load this sentence encoder") as error:
        SentenceEncoder.load(str(folder))

    assert error.value.path == str(folder) and message in error.value.message


def test_the_embedded_encoder_passes_the_new_checks() -> None:
    encoder = SentenceEncoder.load()
    vectors = encoder.encode(["I am so happy today", "This is terrible news"])
    assert float(vectors[0] @ vectors[1]) < 0.9


class Encoder:
    identity, dimension = "fake@1", 4

    def encode(self, texts, batch_size=128, progress=False):
        import numpy as np

        return np.tile(np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32), (len(texts), 1))


def test_a_cache_dir_under_home_is_expanded_not_made_as_a_folder_named_tilde(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    config = RetrievalConfig(encoder="fake", cache_dir="~/embeddings-cache")
    dialogue = Dialogue("d", "meld", "train", (Utterance("A", "Hi", "joy"),))

    DemonstrationIndex.build([dialogue], Encoder(), config)

    assert config.cache_path() == tmp_path / "home" / "embeddings-cache"
    assert list((tmp_path / "home" / "embeddings-cache" / "embeddings").glob("*.npy"))
    assert not (tmp_path / "~").exists()


def test_a_saved_setup_records_a_relative_encoder_folder_and_cache_by_absolute_path(tmp_path: Path, monkeypatch) -> None:
    # The manifest records a relative backbone folder by absolute path; prompting.json kept the
    # encoder's as given, so a model trained with "encoders/mine" could not be used for
    # prediction from any other working directory (the service started elsewhere).
    project, model = tmp_path / "project", tmp_path / "model"
    (project / "encoders" / "mine").mkdir(parents=True)
    model.mkdir()
    monkeypatch.chdir(project)
    retrieval = RetrievalConfig(encoder="encoders/mine", cache_dir="cache")
    PromptSetup(TemplateConfig(), MELD, 512, retrieval).save(model)

    monkeypatch.chdir(tmp_path)
    loaded = PromptSetup.load(model)

    assert loaded.retrieval.encoder == os.path.abspath(project / "encoders" / "mine")
    assert loaded.retrieval.cache_dir == os.path.abspath(project / "cache")
    assert loaded.template == TemplateConfig() and loaded.max_length == 512


@pytest.mark.parametrize("encoder", ["all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2"])
def test_an_embedded_or_hub_encoder_is_saved_as_named(tmp_path: Path, encoder: str) -> None:
    PromptSetup(TemplateConfig(), MELD, 512, RetrievalConfig(encoder=encoder)).save(tmp_path)
    assert PromptSetup.load(tmp_path).retrieval.encoder == encoder
    assert PromptSetup.load(tmp_path).retrieval.cache_dir is None


def test_a_prompt_too_long_for_its_speakers_name_says_the_name_may_be_shortened() -> None:
    # The advice was "shorten the utterance" alone: the user looked at a two-word utterance.
    tokenizer = SegmentTokenizer(tiny_tokenizer())
    setup = PromptSetup(TemplateConfig(demonstration=False), MELD, 120, RetrievalConfig())
    dialogue = Dialogue("d", "meld", "train", (Utterance("Bartholomew " * 80, "Hi there", "joy"),))
    [example] = setup.builder().examples(Task.ERC, [dialogue])

    with pytest.raises(PromptTooLong) as error:
        encode_example(example, tokenizer, 120)

    message = error.value.as_setting_error("data.jsonl").message
    assert "shorten the utterance" in message and "speaker's name" in message


class RecordingEncoder:
    """Unit vectors from a hash of each text; records the texts it embeds."""

    identity, dimension = "recording@1", 8

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts, batch_size=128, progress=False):
        import hashlib

        import numpy as np

        self.calls.append(list(texts))
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], dtype=np.uint8).astype(np.float32) + 1 for t in texts]
        vectors = np.stack(rows)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_texts_holding_the_keys_separator_do_not_share_another_lists_cached_embeddings(tmp_path: Path) -> None:
    # Dialogues built in Python may hold any character: "a\0b", "c" and "a", "b\0c" were hashed to
    # one cache key, and the second pool silently got the first one's embeddings.
    config = RetrievalConfig(encoder="recording", cache_dir=str(tmp_path / "cache"))
    first = Dialogue("d", "meld", "train", (Utterance("A", "a\x00b", "joy"), Utterance("B", "c", "anger")))
    second = Dialogue("d", "meld", "train", (Utterance("A", "a", "joy"), Utterance("B", "b\x00c", "anger")))
    DemonstrationIndex.build([first], RecordingEncoder(), config)
    encoder = RecordingEncoder()

    index = DemonstrationIndex.build([second], encoder, config)

    assert encoder.calls == [["a", "b\x00c"]] and not index.was_cached
