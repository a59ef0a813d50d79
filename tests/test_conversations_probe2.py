"""Real conversations through prediction, found by probing with the shipped model's template."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir

LONG = " ".join(f"Line {k}: the parcel never came and nobody answers the phone." for k in range(40))


@pytest.mark.parametrize("template", ["dialogue-stream", "instructerc"])
def test_a_dialogue_of_many_long_turns_is_cut_in_a_few_encodings_as_turn_by_turn(tmp_path: Path, template: str) -> None:
    model = tiny_model_dir(tmp_path / template, MELD, TemplateConfig(name=template, demonstration=False), max_length=160)
    predictor = Predictor.from_directory(model, device="cpu")
    # Pasted logs: every turn over the budget, some repeated word for word.
    texts = [f"{k % 5} {LONG}" for k in range(30)]
    dialogue = Dialogue("log", "user", "test", tuple(Utterance("Ann" if k % 2 else "Bob", t) for k, t in enumerate(texts)))
    calls = []
    encode = predictor._encode
    predictor._encode = lambda items: calls.append(len(items)) or encode(items)

    encoded, cuts = predictor.fitted_prompts([(dialogue, k) for k in range(len(dialogue))])

    # One encoding of every prompt per cut utterance made 30 turns cost 31 encodings of 30
    # prompts (a 256-turn support log took a minute before the model ran).
    assert len(calls) <= 4, calls
    assert all(cut is not None for cut in cuts) and all(len(e.prompt_ids) <= 160 for e in encoded)
    # The same cuts as a conversation labelled a turn at a time, earlier turns given as cut.
    for k in range(len(dialogue)):
        history = tuple(Utterance(u.speaker, c) for u, c in zip(dialogue.utterances[:k], cuts))
        turn = Dialogue("live", "user", "test", history + (dialogue.utterances[k],))
        assert predictor.fitted_prompts([(turn, k)])[1] == [cuts[k]], k
