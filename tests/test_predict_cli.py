"""``instructerc predict``: streamed, atomic, every utterance labelled with valid probabilities."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from instructerc.labels.benchmarks import MELD
from instructerc.modeling import default_model
from tiny import tiny_model_dir

TEXTS = ["Hi! How are you?", "I am fine, thanks.", "Oh no, that is terrible.", "Great news!"]


@pytest.fixture(scope="module")
def meld_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny-meld", MELD)


def unlabelled_dialogues(count: int) -> list[dict[str, Any]]:
    """``count`` dialogues of 1-4 utterances, no emotions, with keys the toolkit does not know."""
    return [
        {
            "id": f"d{i}",
            "topic": f"topic {i}",
            "utterances": [
                {"speaker": "Ann" if j % 2 == 0 else "Bob", "text": TEXTS[(i + j) % len(TEXTS)], "turn": j} for j in range(1 + i % 4)
            ],
        }
        for i in range(count)
    ]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.code == 2, result
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("instructerc: error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_predict_labels_twenty_unlabelled_dialogues_with_probabilities(run_cli, meld_model: Path, tmp_path: Path) -> None:
    records = unlabelled_dialogues(20)
    source = write_lines(tmp_path / "dialogues.jsonl", [json.dumps(r) for r in records])
    out = tmp_path / "out" / "predictions.jsonl"

    result = run_cli("predict", "--input", source, "--output", out, "--model", meld_model, "--chunk-size", 3, "--no-progress")

    assert result.code == 0, result.err
    utterances = sum(len(r["utterances"]) for r in records)
    assert f"wrote 20 dialogues ({utterances} utterances)" in result.out
    written = read_jsonl(out)
    assert [d["id"] for d in written] == [r["id"] for r in records], "order kept across chunks"
    for given, got in zip(records, written):
        assert got["topic"] == given["topic"]
        assert len(got["utterances"]) == len(given["utterances"])
        for before, after in zip(given["utterances"], got["utterances"]):
            assert {k: after[k] for k in before} == before, "every input key passes through unchanged"
            assert "emotion" not in after and "generated" not in after
            assert after["predicted_emotion"] in MELD.labels
            assert list(after["emotion_scores"]) == list(MELD.labels)
            assert sum(after["emotion_scores"].values()) == pytest.approx(1.0, abs=1e-5)
            assert after["predicted_emotion"] == max(after["emotion_scores"], key=after["emotion_scores"].get)
    assert not list(out.parent.glob(".*.tmp")), "no temporary file is left behind"


def test_malformed_line_names_file_and_line_and_keeps_the_old_output(run_cli, meld_model: Path, tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in unlabelled_dialogues(10)]
    lines[6] = '{"id": "d6", "utterances": [ this is not JSON'
    source = write_lines(tmp_path / "broken.jsonl", lines)
    out = write_lines(tmp_path / "predictions.jsonl", ['{"earlier": "output"}'])
    before = out.read_bytes()

    result = run_cli("predict", "--input", source, "--output", out, "--model", meld_model, "--no-progress")

    assert_one_line_error(result, f"{source}:7", "not valid JSON")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jsonl", "predictions.jsonl"]


def test_a_record_without_utterances_is_reported_with_its_line(run_cli, meld_model: Path, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(unlabelled_dialogues(1)[0]), json.dumps({"id": "x", "turns": []})])

    assert_one_line_error(
        run_cli("predict", "--input", source, "--output", tmp_path / "o.jsonl", "--model", meld_model), f"{source}:2", "utterances"
    )
    assert not (tmp_path / "o.jsonl").exists()


def test_generate_mode_writes_invalid_generations_as_null(run_cli, meld_model: Path, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(r) for r in unlabelled_dialogues(3)])
    out = tmp_path / "generated.jsonl"

    result = run_cli("predict", "--input", source, "--output", out, "--model", meld_model, "--mode", "generate", "--no-progress")

    assert result.code == 0, result.err
    utterances = [u for d in read_jsonl(out) for u in d["utterances"]]
    assert all("emotion_scores" not in u and isinstance(u["generated"], str) for u in utterances)
    invalid = sum(u["predicted_emotion"] is None for u in utterances)
    assert invalid > 0, "an untrained model does not produce labels"
    assert all(u["predicted_emotion"] is None or u["predicted_emotion"] in MELD.labels for u in utterances)
    assert f"{invalid} of {len(utterances)} generations are not a label" in result.out


def test_gold_emotions_are_kept_and_read_in_a_named_label_set(run_cli, meld_model: Path, tmp_path: Path) -> None:
    record = {"id": "g", "utterances": [{"speaker": "Ann", "text": "Great news!", "emotion": "Joyful"}, {"speaker": "Bob", "text": "Hi!"}]}
    source = write_lines(tmp_path / "gold.jsonl", [json.dumps(record)])
    out = tmp_path / "o.jsonl"

    assert run_cli("predict", "--input", source, "--output", out, "--model", meld_model, "--label-set", "meld", "--no-progress").code == 0

    first, second = read_jsonl(out)[0]["utterances"]
    assert first["emotion"] == "joy" and "emotion" not in second
    bad = write_lines(
        tmp_path / "bad.jsonl",
        [json.dumps(record), json.dumps({**record, "utterances": [{"speaker": "A", "text": "x", "emotion": "glee"}]})],
    )
    assert_one_line_error(
        run_cli("predict", "--input", bad, "--output", out, "--model", meld_model, "--label-set", "meld"), f"{bad}:2", "glee"
    )


def test_paper_parsing_needs_generate_mode(run_cli, meld_model: Path, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(unlabelled_dialogues(1)[0])])

    assert_one_line_error(
        run_cli("predict", "--input", source, "--output", tmp_path / "o.jsonl", "--model", meld_model, "--paper-parsing"), "--mode generate"
    )


def test_without_model_the_shipped_default_is_used(run_cli, meld_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(unlabelled_dialogues(2)[1])])
    out = tmp_path / "o.jsonl"

    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIR", tmp_path / "resources" / "default_model")
    assert_one_line_error(run_cli("predict", "--input", source, "--output", out), "ships no default model", "--model")

    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIR", meld_model)
    assert default_model.default_model_dir() == meld_model
    assert run_cli("predict", "--input", source, "--output", out, "--no-progress").code == 0
    assert read_jsonl(out)[0]["utterances"][0]["predicted_emotion"] in MELD.labels


def test_two_different_dialogues_under_one_id_each_get_their_own_labels(run_cli, meld_model: Path, tmp_path: Path) -> None:
    first = {"id": "x", "utterances": [{"speaker": "Ann", "text": t} for t in ("I lost my job today.", "I do not know what to do.")]}
    second = {"id": "x", "utterances": [{"speaker": "Bob", "text": t} for t in ("We won!", "No way, really?", "Great news!")]}
    both = write_lines(tmp_path / "both.jsonl", [json.dumps(first), json.dumps(second), json.dumps(first)])
    alone = [write_lines(tmp_path / f"alone{k}.jsonl", [json.dumps(d)]) for k, d in enumerate((first, second))]

    for source in (both, *alone):
        result = run_cli("predict", "--input", source, "--output", source.with_suffix(".out"), "--model", meld_model, "--no-progress")
        assert result.code == 0, result.err

    together = read_jsonl(both.with_suffix(".out"))
    separate = [read_jsonl(a.with_suffix(".out"))[0] for a in alone]
    assert [d["id"] for d in together] == ["x", "x", "x"], "ids are written as given"
    for got, expected in zip(together, [*separate, separate[0]]):
        assert [u["text"] for u in got["utterances"]] == [u["text"] for u in expected["utterances"]]
        for a, b in zip(got["utterances"], expected["utterances"]):
            assert a["emotion_scores"] == pytest.approx(b["emotion_scores"], abs=1e-5)


def test_the_file_name_does_not_make_its_dialogues_a_benchmarks(run_cli, tmp_path: Path) -> None:
    from instructerc.labels.unified import INSTRUCTERC

    model = tiny_model_dir(tmp_path / "uime", INSTRUCTERC.label_set)
    records = unlabelled_dialogues(2)
    records[1]["dataset"] = "meld"
    source = write_lines(tmp_path / "meld.jsonl", [json.dumps(r) for r in records])
    out = tmp_path / "out.jsonl"

    assert run_cli("predict", "--input", source, "--output", out, "--model", model, "--no-progress").code == 0

    unnamed, named = read_jsonl(out)
    assert "dataset" not in unnamed, "no dataset is made up for a dialogue that names none"
    assert all("predicted_original_emotion" not in u for u in unnamed["utterances"])
    assert named["dataset"] == "meld"
    assert all(u["predicted_original_emotion"] in MELD.labels for u in named["utterances"])


def test_a_model_whose_weights_are_cut_short_is_one_line(run_cli, meld_model: Path, tmp_path: Path) -> None:
    import shutil

    model = tmp_path / "copied"
    shutil.copytree(meld_model, model)
    [weights] = model.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])  # an interrupted copy
    source = write_lines(tmp_path / "dialogues.jsonl", [json.dumps(r) for r in unlabelled_dialogues(2)])

    result = run_cli("predict", "--input", source, "--output", tmp_path / "out.jsonl", "--model", model, "--no-progress")

    assert_one_line_error(result, str(model), "corrupt or cut short")


def test_an_input_that_is_a_folder_says_so(run_cli, meld_model: Path, tmp_path: Path) -> None:
    result = run_cli("predict", "--input", tmp_path, "--output", tmp_path / "out.jsonl", "--model", meld_model)
    assert_one_line_error(result, str(tmp_path), "is a folder")


def test_no_progress_leaves_stderr_empty(run_cli, meld_model: Path, tmp_path: Path) -> None:
    """transformers' weight-loading bar and peft's deprecation warning used to print anyway."""
    from transformers.utils import logging as transformers_logging

    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "utterances": [{"speaker": "Ann", "text": "Hi there."}]}\n', encoding="utf-8")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # as outside pytest: each warning shown once
            result = run_cli("predict", "--input", source, "--output", tmp_path / "out.jsonl", "--model", meld_model, "--no-progress")
    finally:
        transformers_logging.enable_progress_bar()
    assert result.code == 0
    assert result.err == ""
