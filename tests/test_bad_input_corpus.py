"""The corpus of bad inputs in ``tests/bad_inputs/``: every file gives one clear line (exit 2, no
traceback, the earlier output untouched) or, when it is valid data, a label for every utterance.

Add a file there (and its expectation in ``expected.json``) for every new class of bad input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from instructerc.labels.unified import INSTRUCTERC
from tiny import tiny_model_dir

CORPUS = Path(__file__).parent / "bad_inputs"
EXPECTED: dict[str, Any] = {k: v for k, v in json.loads((CORPUS / "expected.json").read_text(encoding="utf-8")).items() if k != "_"}
EARLIER = b'{"earlier": "output"}\n'


def test_every_file_of_the_corpus_has_an_expectation() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.jsonl")) == sorted(EXPECTED)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A unified-label model, as the shipped one, with a budget the monologue is far over.
    return tiny_model_dir(tmp_path_factory.mktemp("corpus") / "tiny-uime", INSTRUCTERC.label_set, max_length=256)


def check_predictions(source: Path, out: Path, expected: dict[str, Any], labels: tuple[str, ...]) -> None:
    """Every utterance labelled, the cut ones (when ``expected`` says which) marked, every input key kept."""
    given = [json.loads(line) for line in source.read_text(encoding="utf-8-sig").splitlines()]
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(written) == len(given)
    utterances = [u for d in written for u in d["utterances"]]
    assert len(utterances) == expected["valid"]
    assert all(u["predicted_emotion"] in labels for u in utterances)
    if "truncated" in expected:
        assert [k for k, u in enumerate(utterances) if u.get("truncated")] == expected["truncated"]
    for before, after in zip((u for d in given for u in d["utterances"]), utterances):
        assert {k: after[k] for k in before} == before, "gold labels and other keys pass through"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_predict_on_each_file_of_the_corpus(run_cli, model: Path, tmp_path: Path, name: str) -> None:
    source = CORPUS / name
    out = tmp_path / "predictions.jsonl"
    out.write_bytes(EARLIER)

    result = run_cli("predict", "--input", source, "--output", out, "--model", model, "--no-progress")

    expected = EXPECTED[name]
    if "error" in expected:
        assert result.code == 2, result
        assert result.out == ""
        [line] = result.err.splitlines()
        assert line.startswith(f"instructerc: error: {source}")
        for fragment in expected["error"]:
            assert fragment in line, (fragment, line)
        assert out.read_bytes() == EARLIER
        assert [p.name for p in tmp_path.iterdir()] == ["predictions.jsonl"], "no temporary file left"
    else:
        assert result.code == 0, result.err
        check_predictions(source, out, expected, INSTRUCTERC.label_set.labels)


def test_a_real_process_prints_one_line_and_no_traceback_for_the_worst_files(tmp_path: Path) -> None:
    for name in ("error-lone-surrogate-in-extra-key.jsonl", "error-100000-brackets.jsonl", "error-5000-digit-number.jsonl"):
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "instructerc",
                "data",
                "export",
                "--dataset",
                "jsonl",
                "--split",
                "test",
                "--data",
                CORPUS / name,
                "--out",
                tmp_path / "o.jsonl",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert process.returncode == 2, process.stderr
        assert len(process.stderr.splitlines()) == 1 and "Traceback" not in process.stderr, process.stderr
        assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
def test_the_shipped_model_predicts_every_valid_file_of_the_corpus(run_cli, tmp_path: Path) -> None:
    from instructerc.modeling.default_model import default_model_dir
    from instructerc.prompts.setup import PromptSetup

    labels = PromptSetup.load(default_model_dir()).label_set.labels
    assert PromptSetup.load(default_model_dir()).max_length < 5000  # so the monologue is cut there too
    for name in (n for n, e in EXPECTED.items() if "valid" in e):
        out = tmp_path / f"{name}.out"
        result = run_cli("predict", "--input", CORPUS / name, "--output", out, "--no-progress")
        assert result.code == 0, result.err
        check_predictions(CORPUS / name, out, EXPECTED[name], labels)
