"""Live conversations keep to the predictor's batch budget, and conversations of unusual shapes
(one utterance, hundreds, one speaker, repeated or over-long lines, several datasets in one call)
get the same labels however they are batched, whole or turn by turn."""

from __future__ import annotations

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.inference import incremental
from instructerc.inference.incremental import ConversationCache
from instructerc.inference.predictor import InferenceConfig, Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    template = TemplateConfig(name="dialogue-stream", demonstration=False)
    directory = tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny", MELD, template, max_length=160)
    return Predictor.from_directory(directory, dtype="float32")


def with_config(predictor: Predictor, **settings) -> Predictor:
    return Predictor(predictor.model, predictor.tokenizer, predictor.setup, config=InferenceConfig(**settings))


def talk(id: str, texts: list[str], speakers: str = "AB", dataset: str = "user") -> Dialogue:
    return Dialogue(id, dataset, "test", tuple(Utterance(speakers[i % len(speakers)], t) for i, t in enumerate(texts)))


def spied_budgets(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ``batch_tokens`` each score_turns call was given."""
    budgets: list[int] = []
    real = incremental.score_turns

    def spy(*args, **kwargs):
        budgets.append(kwargs.get("batch_tokens", real.__defaults__[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(incremental, "score_turns", spy)
    return budgets


# -- live turns keep to the predictor's batch budget ---------------------------------------------------


@pytest.mark.parametrize(("setting", "used"), [(None, incremental.TURN_BATCH_TOKENS), (1, 1), (300, 300)])
def test_live_turns_are_batched_under_the_predictors_budget(predictor: Predictor, monkeypatch, setting, used) -> None:
    # A user's budget was ignored for live conversations, the service's turns included. Unset,
    # the live path keeps its own (it counts cached positions, which predict's budget does not).
    budgets = spied_budgets(monkeypatch)
    live = with_config(predictor, batch_tokens=setting, workers=1)
    live.predict_turns([(talk("c1", ["Hi."]), ConversationCache()), (talk("c2", ["Oh no."]), ConversationCache())])
    assert budgets == [used]


def test_a_budget_under_one_prompt_scores_each_live_turn_in_a_pass_of_its_own(predictor: Predictor, monkeypatch) -> None:
    passes: list[int] = []
    real = incremental._forward

    def counted(model, rows, *args):
        passes.append(len(rows))
        return real(model, rows, *args)

    monkeypatch.setattr(incremental, "_forward", counted)
    turns = [(talk(f"c{k}", ["Hi.", f"Line {k}."]), ConversationCache()) for k in range(3)]
    tight = with_config(predictor, batch_tokens=1, workers=1).predict_turns(turns)
    assert passes == [1, 1, 1]
    passes.clear()
    loose = with_config(predictor, batch_tokens=100000, workers=1).predict_turns([(d, ConversationCache()) for d, _ in turns])
    assert passes == [3]
    assert [p.label for p in tight] == [p.label for p in loose]
    for a, b in zip(tight, loose):
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


# -- a tokenizer without an end-of-text token ----------------------------------------------------------


def test_a_label_that_starts_another_is_refused_for_a_tokenizer_without_eos() -> None:
    # Without EOS, "calm" ends inside "calmish" with no branch where it stops: both labels got
    # the probability of their shared first token, whatever the model said.
    from instructerc.errors import InputError
    from instructerc.inference.label_scoring import LabelScorer
    from instructerc.labels.label_set import LabelSet
    from instructerc.prompts.encoding import SegmentTokenizer
    from tiny import tiny_tokenizer

    labels = LabelSet("moods", ("calm", "calmish", "sad"), ("calm", "calmish", "sad"))
    tokenizer = tiny_tokenizer()
    LabelScorer(labels, SegmentTokenizer(tokenizer))  # with EOS every answer ends apart
    tokenizer.eos_token = None
    with pytest.raises(InputError, match="'calm' of moods is the start of the label 'calmish'") as refused:
        LabelScorer(labels, SegmentTokenizer(tokenizer))
    assert refused.value.field == "label_set"
    LabelScorer(LabelSet("moods", ("calm", "sad"), ("calm", "sad")), SegmentTokenizer(tokenizer))


# -- conversations of every shape get the same labels however they are batched -------------------------


SHAPES = {
    "one utterance": [talk("a", ["Hi."])],
    "hundreds of utterances": [talk("b", [f"line number {i} of the talk" for i in range(150)])],
    "one speaker": [talk("c", ["Hi.", "Hello?", "Anyone?"], speakers="A")],
    "identical utterances": [talk("d", ["Oh."] * 8), talk("e", ["Oh."] * 8)],
    "longer than max_length": [talk("f", ["word " * 300, "Hi.", "more " * 200])],
    "several datasets": [
        talk("g", ["Hi.", "No!"], dataset="meld"),
        talk("h", ["Hi."], dataset="emorynlp"),
        talk("i", ["Hi."], dataset="mine"),
    ],
}
BATCHINGS = [
    {"max_tokens": 1, "batch_tokens": 1, "workers": 1},  # every budget under one prompt
    {"max_tokens": 40, "batch_tokens": 90, "workers": 2},
    {"workers": 5},  # more workers than dialogues
]


def scores_of(predictions) -> list[dict[str, float]]:
    return [p.scores for p in predictions]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_batching_gives_the_same_predictions(predictor: Predictor, shape: str) -> None:
    dialogues = SHAPES[shape]
    reference = with_config(predictor, workers=1).predict(dialogues)
    for batching in BATCHINGS:
        got = with_config(predictor, **batching).predict(dialogues)
        for dialogue, mine, theirs in zip(dialogues, got, reference):
            assert len(mine) == len(dialogue)
            assert [p.truncated for p in mine] == [p.truncated for p in theirs]
            for a, b in zip(scores_of(mine), scores_of(theirs)):
                assert a == pytest.approx(b, abs=1e-6), (shape, batching)


@pytest.mark.parametrize("shape", SHAPES)
def test_live_turns_of_every_shape_match_whole_dialogue_predictions(predictor: Predictor, shape: str) -> None:
    dialogues = SHAPES[shape][:3]
    whole = predictor.predict(dialogues)
    live = with_config(predictor, batch_tokens=1, workers=3)
    caches = [ConversationCache() for _ in dialogues]
    for step in range(1, max(len(d) for d in dialogues) + 1):
        turns = [(Dialogue(d.id, d.dataset, "test", d.utterances[:step]), c) for d, c in zip(dialogues, caches) if step <= len(d)]
        got = live.predict_turns(turns)
        expected = [whole[k][step - 1] for k, d in enumerate(dialogues) if step <= len(d)]
        assert [p.truncated for p in got] == [p.truncated for p in expected]
        for a, b in zip(scores_of(got), scores_of(expected)):
            assert a == pytest.approx(b, abs=1e-6)


# -- one forward pass keeps every thread ----------------------------------------------------------------


def test_a_single_pass_runs_on_every_intra_op_thread(predictor: Predictor, monkeypatch) -> None:
    # Two workers each get half the threads; with one pass to run (one short dialogue, a
    # service request), the other half sat idle.
    import torch

    from instructerc.inference import batched

    threads: list[int] = []
    real = batched.packed_pass

    def counted(*args, **kwargs):
        threads.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(batched, "packed_pass", counted)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with_config(predictor, workers=2).predict([talk("a", ["Hi."])])
        assert threads == [2]
        threads.clear()
        with_config(predictor, max_tokens=1, batch_tokens=1, workers=2).predict([talk("b", ["Hi.", "Oh.", "No."])])
        assert threads == [1, 1, 1]  # several passes: still shared out
    finally:
        torch.set_num_threads(previous)


# -- a long first conversation does not make every later cache as large ---------------------------------


def test_a_new_conversations_cache_does_not_grow_with_the_first_conversations_length(predictor: Predictor) -> None:
    # New conversations start from the first conversation's cache; they were given all of it,
    # so after a long first conversation every one-line conversation held that much room.
    first = talk("first", [f"line number {i} of the talk" for i in range(150)])
    live = with_config(predictor, workers=1)
    live.predict_next(first, ConversationCache())
    later = ConversationCache()
    got = live.predict_next(talk("later", ["Hello."]), later)
    assert got.scores == pytest.approx(live.predict([talk("later", ["Hello."])])[0][0].scores, abs=1e-6)
    assert later.buffer.shape[3] <= incremental._room(later.tokens)  # its own prompt's room, no more
