"""The embedded models themselves (slow: they load SmolLM2-135M and all-MiniLM-L6-v2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_embedded_llm_converts_once_and_reads_english(tmp_path):
    import torch

    from instructerc.modeling.backbone import BackboneConfig, load_causal_lm, load_tokenizer, resolve_model

    config = BackboneConfig(cache_dir=str(tmp_path))
    path = resolve_model(config)
    assert (Path(path) / "config.json").is_file() and Path(path).is_relative_to(tmp_path)
    stamp = (Path(path) / "config.json").stat().st_mtime_ns
    assert resolve_model(config) == path and (Path(path) / "config.json").stat().st_mtime_ns == stamp  # reused, not converted again
    tokenizer, model = load_tokenizer(path), load_causal_lm(path, config).eval()
    ids = tokenizer("The capital of France is Paris. The capital of Germany is Berlin.", return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    assert loss < 3.0, f"the dequantized weights read plain English badly (loss {loss:.2f})"


def test_the_embedded_encoder_loads_offline():
    from instructerc.retrieval.encoder import SentenceEncoder

    encoder = SentenceEncoder.load()
    vectors = encoder.encode(["I am so happy today!", "What a wonderful day!", "The invoice is attached."])
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert vectors.shape == (3, 384) and similar > unrelated


def test_the_default_model_tags_the_sample_conversations(tmp_path):
    from instructerc.cli.main import main
    from instructerc.modeling.default_model import default_model_dir

    samples = Path(__file__).resolve().parents[1] / "src" / "instructerc" / "resources" / "samples" / "conversations.jsonl"
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", "--input", str(samples), "--output", str(out), "--no-progress"]) == 0
    labels = json.loads((default_model_dir() / "prompting.json").read_text())["label_set"]["labels"]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(samples.read_text().splitlines())
    for record in records:
        for utterance in record["utterances"]:
            assert utterance["predicted_emotion"] in labels
            assert abs(sum(utterance["emotion_scores"].values()) - 1) < 1e-5


def test_the_readme_python_example_runs_and_its_live_turns_match_predict(tmp_path):
    # The README's only Python block, run as written, with the shipped model.
    import re
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    script = tmp_path / "example.py"
    script.write_text(block + "\nprint([p.label for p in predictions])\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    *live, whole = done.stdout.strip().splitlines()
    assert whole == repr(live)  # each live turn got the label predict gives it in the whole dialogue
