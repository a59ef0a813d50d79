"""``instructerc predict`` and the prediction API on unusual conversations (second probe)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.text import CUT_MARK
from instructerc.errors import InputError
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir

LONG_NAME = "Dr. " + "Bartholomew " * 300
LONG_TEXT = " ".join(f"Sentence {k}: I have been thinking about the fern and the leaf." for k in range(100))


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("template", ["dialogue-stream", "instructerc"])
def test_a_long_text_said_by_a_long_name_is_cut_in_both_and_labelled(tmp_path: Path, template: str) -> None:
    model = tiny_model_dir(tmp_path / template, MELD, TemplateConfig(name=template, demonstration=False), max_length=160)
    predictor = Predictor.from_directory(model, device="cpu")
    # Each alone is longer than the whole budget, so neither can give all the excess by itself.
    assert len(predictor.segments.ids(LONG_NAME)) > 160 and len(predictor.segments.ids(LONG_TEXT)) > 160
    dialogue = Dialogue("d", "user", "test", (Utterance(LONG_NAME, LONG_TEXT), Utterance("Ann", "Hi."), Utterance(LONG_NAME, "Bye.")))

    predictions = predictor.predict([dialogue])[0]

    assert [p.truncated for p in predictions] == [True, False, True]
    assert all(p.label in MELD.labels for p in predictions)
    [encoded] = predictor.encoded_prompts([(dialogue, 0)])
    assert len(encoded.prompt_ids) <= 160
    prompt = encoded.example.prompt
    assert prompt.count(CUT_MARK) >= 2 and "Dr. B" in prompt and "Sentence 0:" in prompt and "the leaf." in prompt


@pytest.fixture(scope="module")
def meld_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny-meld", MELD)


def test_predict_on_an_earlier_output_replaces_its_prediction_keys(run_cli, meld_model: Path, tmp_path: Path) -> None:
    earlier = {
        "predicted_emotion": "stale",
        "emotion_scores": {"stale": 1.0},
        "truncated": True,
        "predicted_original_emotion": "stale",
        "generated": " stale",
    }
    record = {"id": "d", "utterances": [{"speaker": "Ann", "text": "Hi.", "turn": 0, **earlier}]}
    source = write_lines(tmp_path / "earlier.jsonl", [record])

    for mode in ("generate", "score"):
        out = tmp_path / f"{mode}.jsonl"
        result = run_cli("predict", "--input", source, "--output", out, "--model", meld_model, "--mode", mode, "--no-progress")

        assert result.code == 0, result.err
        [written] = read_jsonl(out)[0]["utterances"]
        assert written["turn"] == 0, "keys the toolkit does not know still pass through"
        assert "truncated" not in written and "predicted_original_emotion" not in written, written
        assert ("generated" in written) == (mode == "generate") and ("emotion_scores" in written) == (mode == "score"), written
        assert written["predicted_emotion"] in MELD.labels or (mode == "generate" and written["predicted_emotion"] is None)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"id": "a", "id": "b", "utterances": [{"speaker": "Ann", "text": "Hi"}]}', "id"),
        ('{"id": "a", "utterances": [{"speaker": "Ann", "text": "Hi", "text": "Bye"}]}', "utterances[0].text"),
        ('{"id": "a", "utterances": [{"speaker": "Ann", "text": "Hi"}], "utterances": [{"speaker": "Bob", "text": "Yo"}]}', "utterances"),
    ],
)
def test_a_key_given_twice_is_refused_naming_line_and_field(run_cli, tmp_path: Path, line: str, field: str) -> None:
    """JSON's parser keeps the last of two values silently: one text, or a whole dialogue, was lost."""
    source = tmp_path / "twice.jsonl"
    source.write_text('{"id": "ok", "utterances": [{"speaker": "Ann", "text": "Hi"}]}\n' + line + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"

    result = run_cli("predict", "--input", source, "--output", out, "--no-progress")

    assert result.code == 2 and "Traceback" not in result.err and not out.exists()
    assert (
        result.err.strip()
        == f"instructerc: error: {source}:2: field '{field}': the key '{field.split('.')[-1]}' appears twice in one object"
    )


def test_a_pipe_as_input_is_refused_as_not_a_file_rather_than_not_found(run_cli, tmp_path: Path) -> None:
    pipe = tmp_path / "dialogues.jsonl"
    os.mkfifo(pipe)  # what --input /dev/stdin or <(...) is: it exists, and can be read only once

    result = run_cli("predict", "--input", pipe, "--output", tmp_path / "out.jsonl", "--no-progress")

    assert result.code == 2 and "Traceback" not in result.err
    assert (
        result.err.strip() == f"instructerc: error: {pipe}: is not a regular file (predict reads its input twice): save it to a file first"
    )


@pytest.mark.parametrize("index", [-1, 2, True])
def test_predict_at_refuses_an_index_outside_the_dialogue(meld_model: Path, index: int) -> None:
    """-1 read the last utterance with no history at all (the window counts from the start)."""
    predictor = Predictor.from_directory(meld_model, device="cpu")
    dialogue = Dialogue("d", "user", "test", (Utterance("Ann", "Hi."), Utterance("Bob", "Great news!")))

    with pytest.raises(InputError, match=rf"utterance index {index!r} is outside dialogue 'd' of 2 utterance\(s\)"):
        predictor.predict_at([(dialogue, 0), (dialogue, index)])


def test_predict_at_takes_numpy_integer_indices(meld_model: Path) -> None:
    np = pytest.importorskip("numpy")
    predictor = Predictor.from_directory(meld_model, device="cpu")
    dialogue = Dialogue("d", "user", "test", (Utterance("Ann", "Hi."), Utterance("Bob", "Great news!")))

    assert predictor.predict_at([(dialogue, np.int64(1))])[0].label == predictor.predict_at([(dialogue, 1)])[0].label


def test_predict_turns_refuses_a_conversation_with_no_utterance(meld_model: Path) -> None:
    from instructerc.inference.incremental import ConversationCache

    predictor = Predictor.from_directory(meld_model, device="cpu")

    with pytest.raises(InputError, match="dialogue 'd' has no utterances"):
        predictor.predict_turns([(Dialogue("d", "user", "test", ()), ConversationCache())])


def test_unicode_line_separators_in_text_keep_one_dialogue_per_line(run_cli, meld_model: Path, tmp_path: Path) -> None:
    """U+2028, U+2029 and NEL were written raw: str.splitlines() split the record in pieces."""
    text = "one\u2028two\u2029three\x85four"
    record = {"id": "d", "utterances": [{"speaker": "Ann\u2028Lee", "text": text, "note\u2029": "x"}]}
    source = write_lines(tmp_path / "separators.jsonl", [record])
    out = tmp_path / "out.jsonl"

    result = run_cli("predict", "--input", source, "--output", out, "--model", meld_model, "--no-progress")

    assert result.code == 0, result.err
    [line] = out.read_text(encoding="utf-8").splitlines()
    [written] = json.loads(line)["utterances"]
    assert (written["speaker"], written["text"], written["note\u2029"]) == ("Ann\u2028Lee", text, "x")


def test_predict_to_stdout_is_only_the_predictions(meld_model: Path, tmp_path: Path) -> None:
    """``--output /dev/stdout | next-tool``: the summary goes to stderr, not into the JSONL stream."""
    import subprocess
    import sys

    source = write_lines(tmp_path / "in.jsonl", [{"id": "a", "utterances": [{"speaker": "Ann", "text": "Hi!"}]}])
    argv = ["predict", "--model", str(meld_model), "--input", str(source), "--output", "/dev/stdout", "--no-progress"]
    process = subprocess.run([sys.executable, "-m", "instructerc", *argv], capture_output=True, text=True, timeout=120, check=False)
    assert process.returncode == 0, process.stderr
    assert [json.loads(line)["id"] for line in process.stdout.splitlines()] == ["a"]
    assert "wrote 1 dialogues (1 utterances) to /dev/stdout" in process.stderr
