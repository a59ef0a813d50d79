"""Prompt fitting and retrieval on inputs users send: long names cut alike, a max_length no prompt
fits, and a training dialogue predicted (never its own demonstration)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.prompts import fitting
from instructerc.prompts.budget import PromptTooLong, encode_example
from instructerc.prompts.encoding import SegmentTokenizer
from instructerc.prompts.tasks import ExampleBuilder
from instructerc.prompts.templates import TemplateConfig, build_template
from instructerc.retrieval.index import DemonstrationIndex, RetrievalConfig
from instructerc.retrieval.retriever import DemonstrationRetriever
from tiny import Words, tiny_model_dir

ZED_250, ZED_260 = "Zed" + "z" * 250, "Zed" + "z" * 260


def _speakers_shown(prompt: str) -> list[str]:
    """The speakers of the history lines of a prompt (``\\t NAME:"text"``)."""
    return [line.split(':"')[0].strip() for line in prompt.split("\t")[1:]]


# -- two long names cut to the same text stay two speakers ------------------------------------------
@pytest.mark.parametrize("template", ["instructerc", "dialogue-stream"])
def test_two_long_names_cut_alike_stay_two_speakers(tmp_path: Path, template: str) -> None:
    # Both names were cut to the same start and end; the second cut was refused as a clash and the
    # run failed with "utterance 1 needs K tokens even without history", which was not the cause.
    model = tiny_model_dir(tmp_path / "m", MELD, TemplateConfig(name=template, demonstration=False), max_length=160)
    predictor = Predictor.from_directory(model, device="cpu")
    dialogue = Dialogue("a", "user", "test", (Utterance(ZED_250, "Hi"), Utterance(ZED_260, "Yo"), Utterance(ZED_250, "Again")))

    predictions = predictor.predict([dialogue])[0]
    prompts = predictor.encoded_prompts([(dialogue, i) for i in range(3)])

    assert [p.truncated for p in predictions] == [True, True, True]
    assert all(len(p.prompt_ids) <= 160 for p in prompts)
    names = [_speakers_shown(p.example.prompt)[-1] for p in prompts]
    assert names[0] == names[2] != names[1], names
    assert all(fitting.CUT_MARK in name for name in names)


def test_two_names_too_long_to_tokenize_keep_apart_when_first_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first cut of a name too long to tokenize keeps its first and last half-megabyte: two such
    # names alike there became one speaker.
    monkeypatch.setattr(fitting, "_LONGEST_TOKENIZED", 64)
    dialogue = Dialogue("a", "x", "test", (Utterance(ZED_250, "Hi"), Utterance(ZED_260, "Yo"), Utterance(ZED_250, "Again")))

    items, precut = fitting._precut([(dialogue, 0), (dialogue, 1), (dialogue, 2)])

    first, second, third = (u.speaker for u in items[0][0].utterances)
    assert first == third != second and len(second) < 100
    assert fitting._without_needless_precuts(items, precut)[0][0] == dialogue, "names that fit are given back whole"


def test_a_cut_name_is_numbered_apart_from_every_name_in_its_dialogue() -> None:
    assert fitting.apart("Zed … z", ["Ann"]) == "Zed … z"
    assert fitting.apart("Zed … z", ["Zed … z", "Zed … z#2"]) == "Zed … z#3"


# -- a max_length no prompt fits names the setting and its file --------------------------------------
def test_predict_with_a_max_length_too_small_names_the_models_prompting_file(run_cli, tmp_path: Path) -> None:
    # Was: "field 'dialogue 'a'': utterance 0 needs 82 tokens ... more than max_length=18" (18 was
    # the max_length less the answer's room, and nothing said the limit is the model's).
    model = tiny_model_dir(tmp_path / "model", MELD, max_length=20)
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "utterances": [{"speaker": "Ann", "text": "Hi there"}]}) + "\n", encoding="utf-8")

    result = run_cli("predict", "--input", source, "--output", tmp_path / "out.jsonl", "--model", model, "--no-progress")

    assert result.code == 2 and "Traceback" not in result.err
    [line] = [line for line in result.err.splitlines() if line.startswith("instructerc: ")]
    assert line.startswith(f"instructerc: error: {model / 'prompting.json'}: field 'max_length': dialogue 'a' ({source}:1), "), line
    assert "utterance 0 needs" in line and "kept for the answer" in line and line.endswith("more than the model's max_length=20")
    assert "'dialogue '" not in line and not (tmp_path / "out.jsonl").exists()


def test_prompts_show_with_a_model_names_where_its_max_length_is_set(run_cli, tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "model", MELD, max_length=20)
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"id": "a", "utterances": [{"speaker": "A", "text": "Hi", "emotion": "joy"}]}) + "\n", encoding="utf-8")

    result = run_cli("prompts", "show", "--dataset", "jsonl", "--data", data, "--model", model)

    assert result.code == 2 and "Traceback" not in result.err
    assert f"{data}:1: field 'max_length': dialogue 'a'" in result.err
    assert f"raise max_length (in {model / 'prompting.json'}) or shorten the utterance" in result.err, result.err


def test_the_budgets_error_counts_the_answers_room_against_max_length_itself() -> None:
    dialogue = Dialogue("d", "meld", "test", (Utterance("A", " ".join(["w"] * 300)),))
    example = ExampleBuilder(build_template(TemplateConfig(demonstration=False), MELD), {}).erc(dialogue, 0)
    tokenizer = SegmentTokenizer(Words())
    prompt = sum(len(tokenizer.ids(s.text)) for s in example.segments)

    with pytest.raises(PromptTooLong) as caught:
        encode_example(example, tokenizer, 64, with_target=False, reserve=3)

    error = caught.value
    assert error.field == "max_length" and error.path is None
    assert str(error) == (
        f"field 'max_length': dialogue 'd', utterance 0 needs {prompt + 3} tokens even without history and demonstration "
        "(3 of them kept for the answer), more than max_length=64"
    )


# -- a dialogue of the pool is never its own demonstration -------------------------------------------
class FakeEncoder:
    """Unit vectors from a hashed bag of words: identical texts, identical vectors."""

    identity = "fake@1"
    dimension = 32

    def encode(self, texts: list[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
        vectors = np.full((len(texts), self.dimension), 1e-3, dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dimension] += 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


POOL = [
    Dialogue(
        "t1", "mine", "train", (Utterance("A", "I won the lottery today", "joy"), Utterance("B", "My dog died last night", "sadness"))
    ),
    Dialogue("t2", "mine", "train", (Utterance("A", "Get out of my room", "anger"),)),
]


def _retriever(tmp_path: Path) -> DemonstrationRetriever:
    config = RetrievalConfig(encoder="fake", cache_dir=str(tmp_path / "cache"))
    return DemonstrationRetriever(DemonstrationIndex.build(POOL, FakeEncoder(), config), FakeEncoder(), config, cache_queries=False)


@pytest.mark.parametrize(("dataset", "split", "dialogue_id"), [("", "test", "t1"), ("mine", "test", "t1"), ("", "test", "t1#2")])
def test_a_training_dialogue_predicted_never_gets_its_own_utterance(tmp_path: Path, dataset: str, split: str, dialogue_id: str) -> None:
    # Predicted from the training file (its dataset unnamed, its split read as test) each utterance
    # was shown itself with its gold label as the demonstration.
    query = Dialogue(dialogue_id, dataset, split, tuple(Utterance(u.speaker, u.text) for u in POOL[0].utterances))

    shown = _retriever(tmp_path).demonstrations([query])

    assert [shown[(dataset, dialogue_id, i)].text for i in range(2)] == ["Get out of my room"] * 2


def test_a_live_conversations_first_turns_and_a_cut_utterance_are_known_as_the_pool_dialogue(tmp_path: Path) -> None:
    first_turn = Dialogue("t1", "", "test", (Utterance("A", "I won the lottery today"),))
    cut = Dialogue("t1", "", "test", (Utterance("A", "I won" + fitting.CUT_MARK + "today"), Utterance("B", "My dog died last night")))

    retriever = _retriever(tmp_path)

    assert retriever.demonstrations([first_turn])[("", "t1", 0)].text == "Get out of my room"
    assert {d.text for d in retriever.demonstrations([cut]).values()} == {"Get out of my room"}


def test_another_dialogue_under_a_pool_dialogues_id_still_retrieves_from_it(tmp_path: Path) -> None:
    # MELD numbers dev and train dialogues alike: a dev "t1" is not the pool's "t1".
    other = Dialogue("t1", "mine", "dev", (Utterance("A", "I won the lottery today"), Utterance("B", "Another thing entirely")))

    shown = _retriever(tmp_path).demonstrations([other])

    assert shown[("mine", "t1", 0)].text == "I won the lottery today"
