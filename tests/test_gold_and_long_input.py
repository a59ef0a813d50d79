"""Users' own annotated files: gold labels of any label set never stop a prediction, evaluate maps
a known dataset's labels onto the model's, and an utterance longer than the budget is cut, not refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.text import CUT_MARK
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import EMORYNLP, IEMOCAP, MELD
from instructerc.labels.unified import INSTRUCTERC
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir

UIME = INSTRUCTERC.label_set
TEXTS = ["Hi! How are you?", "I am fine, thanks.", "Oh no, that is terrible.", "Great news!"]
# A gold label of every kind a user's file may hold: three benchmarks, the unified space, and none.
GOLD = {"meld": "joy", "emorynlp": "Scared", "iemocap": "frustrated", "uime": "joyful", "unknown": "grumpy-ish"}


@pytest.fixture(scope="module")
def uime_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("gold") / "tiny-uime", UIME)


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def gold_dialogue(name: str, label: str) -> dict[str, Any]:
    return {
        "id": name,
        "utterances": [
            {"speaker": "Ann", "text": TEXTS[0], "emotion": label},
            {"speaker": "Bob", "text": TEXTS[1]},
            {"speaker": "Ann", "text": TEXTS[2], "emotion": label},
        ],
    }


# -- gold labels pass through predict ---------------------------------------------------------------
def test_predict_passes_gold_labels_of_every_label_set_through_untouched(run_cli, uime_model: Path, tmp_path: Path) -> None:
    assert "joy" not in UIME.labels and "grumpy-ish" not in UIME.labels  # labels the model cannot verbalize
    records = [gold_dialogue(name, label) for name, label in GOLD.items()]
    source = write_lines(tmp_path / "annotated.jsonl", records)
    out = tmp_path / "predictions.jsonl"

    result = run_cli("predict", "--input", source, "--output", out, "--model", uime_model, "--no-progress")

    assert result.code == 0, result.err
    written = read_jsonl(out)
    for given, got in zip(records, written):
        for before, after in zip(given["utterances"], got["utterances"]):
            assert after.get("emotion") == before.get("emotion"), "gold passes through as written"
            assert after["predicted_emotion"] in UIME.labels
            assert "truncated" not in after


def test_gold_labels_do_not_change_a_prediction(uime_model: Path) -> None:
    predictor = Predictor.from_directory(uime_model, device="cpu")
    bare = Dialogue("d", "user", "test", tuple(Utterance(s, t) for s, t in zip("ABA", TEXTS)))
    annotated = bare.with_utterances(tuple(Utterance(u.speaker, u.text, emotion="joy") for u in bare.utterances))

    plain, labelled = predictor.predict([bare])[0], predictor.predict([annotated])[0]

    assert [p.scores for p in plain] == [p.scores for p in labelled]


# -- evaluate maps a known dataset's gold onto the model's label space ------------------------------
def labelled_file(path: Path, labels: tuple[str, ...], dataset: str | None = None) -> Path:
    records = []
    for i in range(6):
        record: dict[str, Any] = {
            "id": f"t{i}",
            "utterances": [
                {"speaker": "Ann" if j % 2 == 0 else "Bob", "text": TEXTS[(i + j) % 4], "emotion": labels[(i + j) % len(labels)]}
                for j in range(3)
            ],
        }
        if dataset is not None:
            record["dataset"] = dataset
        records.append(record)
    return write_lines(path, records)


@pytest.mark.parametrize("label_set", [MELD, EMORYNLP, IEMOCAP], ids=lambda s: s.name)
def test_evaluate_maps_a_known_datasets_gold_onto_a_unified_model(run_cli, uime_model: Path, tmp_path: Path, label_set) -> None:
    data = labelled_file(tmp_path / "mine.jsonl", label_set.labels)  # no dataset key: the file's name
    out = tmp_path / "eval"

    result = run_cli(
        "evaluate",
        "--model",
        uime_model,
        "--dataset",
        "jsonl",
        "--data",
        data,
        "--label-set",
        label_set.name,
        "--split",
        "test",
        "--out",
        out,
        "--no-progress",
    )

    assert result.code == 0, result.err
    llm = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["systems"]["llm"]
    assert list(llm["by_dataset"]) == [label_set.name]
    assert llm["by_dataset"][label_set.name]["labels"] == list(label_set.labels), "scored on the dataset's own classes"
    assert llm["by_dataset"][label_set.name]["count"] == 18
    for utterance in (u for d in read_jsonl(out / "predictions.jsonl") for u in d["utterances"]):
        assert utterance["original_emotion"] in label_set.labels
        assert utterance["emotion"] == INSTRUCTERC.to_unified(label_set.name, utterance["original_emotion"])


def test_evaluate_names_every_unknown_gold_label_and_the_accepted_ones(run_cli, uime_model: Path, tmp_path: Path) -> None:
    data = labelled_file(tmp_path / "mine.jsonl", ("joy", "grumpy", "neutral"))
    out = tmp_path / "eval"

    result = run_cli(
        "evaluate", "--model", uime_model, "--dataset", "jsonl", "--data", data, "--split", "test", "--out", out, "--no-progress"
    )

    assert result.code == 2 and result.out == ""
    [line] = result.err.splitlines()
    assert "'grumpy', 'joy'" in line and "'neutral'" not in line
    assert "accepted: " + ", ".join(UIME.labels) in line
    assert "--label-set" in line and "meld" in line
    assert not out.exists()


# -- long utterances are cut, not refused -----------------------------------------------------------
MONOLOGUE = " ".join(f"Sentence {k}: I have been thinking about the fern and the leaf." for k in range(400))


@pytest.mark.parametrize("template", ["dialogue-prefix", "dialogue-stream", "instructerc"])
def test_an_utterance_over_the_budget_is_cut_keeping_its_start_and_end(tmp_path: Path, template: str) -> None:
    model = tiny_model_dir(tmp_path / template, MELD, TemplateConfig(name=template, demonstration=False), max_length=160)
    predictor = Predictor.from_directory(model, device="cpu")
    assert len(predictor.segments.ids(MONOLOGUE)) > 5000
    dialogue = Dialogue("d", "user", "test", (Utterance("Ann", TEXTS[0]), Utterance("Bob", MONOLOGUE), Utterance("Ann", TEXTS[3])))

    predictions = predictor.predict([dialogue])[0]

    assert [p.truncated for p in predictions] == [False, True, False]
    assert all(p.label in MELD.labels for p in predictions)
    [encoded] = predictor.encoded_prompts([(dialogue, 1)])
    assert len(encoded.prompt_ids) <= 160
    prompt = encoded.example.prompt
    assert (
        CUT_MARK in prompt and "Sentence 0: I have" in prompt and "Sentence 399:" not in MONOLOGUE[:100] and "fern and the leaf." in prompt
    )
    # The cut is the same in every prompt of the dialogue, so the later prompt sees the same text.
    later = predictor.encoded_prompts([(dialogue, 1), (dialogue, 2)])
    assert later[0].prompt_ids == encoded.prompt_ids


def test_predict_labels_every_utterance_of_a_dialogue_with_a_monologue_and_says_what_it_cut(run_cli, tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "model", MELD, max_length=200)
    record = {
        "id": "m",
        "utterances": [{"speaker": "Ann", "text": TEXTS[0]}, {"speaker": "Bob", "text": MONOLOGUE}, {"speaker": "Ann", "text": TEXTS[1]}],
    }
    source = write_lines(tmp_path / "monologue.jsonl", [record, gold_dialogue("short", "joy")])
    out = tmp_path / "out.jsonl"

    result = run_cli("predict", "--input", source, "--output", out, "--model", model, "--no-progress")

    assert result.code == 0, result.err
    [warning] = [line for line in result.err.splitlines() if line.startswith("instructerc: ")]  # beside the weights' loading bar
    assert warning.startswith("instructerc: warning: 1 utterance(s)") and "max_length of 200" in warning and "truncated" in warning
    long_dialogue, short = read_jsonl(out)
    assert [u.get("truncated") for u in long_dialogue["utterances"]] == [None, True, None]
    assert long_dialogue["utterances"][1]["text"] == MONOLOGUE, "the output keeps the text as given"
    assert all(u["predicted_emotion"] in MELD.labels for d in (long_dialogue, short) for u in d["utterances"])


def test_a_prompt_whose_fixed_wording_is_over_the_budget_is_still_one_clear_error(run_cli, tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "model", MELD, max_length=12)
    source = write_lines(tmp_path / "in.jsonl", [gold_dialogue("d", "joy")])

    result = run_cli("predict", "--input", source, "--output", tmp_path / "o.jsonl", "--model", model, "--no-progress")

    assert result.code == 2 and "Traceback" not in result.err
    [line] = [line for line in result.err.splitlines() if line.startswith("instructerc: ")]  # beside the weights' loading bar
    assert "max_length=" in line and "dialogue 'd'" in line


@pytest.mark.parametrize("template", ["dialogue-stream", "instructerc"])
def test_a_speaker_name_over_the_budget_is_cut_in_all_their_utterances(tmp_path: Path, template: str) -> None:
    model = tiny_model_dir(tmp_path / template, MELD, TemplateConfig(name=template, demonstration=False), max_length=160)
    predictor = Predictor.from_directory(model, device="cpu")
    name = "Dr. " + "Bartholomew " * 300
    dialogue = Dialogue("d", "user", "test", (Utterance(name, "Hello."), Utterance("Ann", TEXTS[0]), Utterance(name, TEXTS[3])))

    predictions = predictor.predict([dialogue])[0]

    assert [p.truncated for p in predictions] == [True, False, True]
    assert all(p.label in MELD.labels for p in predictions)
    prompts = predictor.encoded_prompts([(dialogue, 0), (dialogue, 2)])
    for prompt, text in zip(prompts, ("Hello.", TEXTS[3])):
        assert len(prompt.prompt_ids) <= 160 and CUT_MARK in prompt.example.prompt and text in prompt.example.prompt
