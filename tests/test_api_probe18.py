"""The prediction API as a library user calls it (probe 18): live conversations, label sets."""

from __future__ import annotations

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.inference.incremental import ConversationCache
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    template = TemplateConfig(name="dialogue-stream", demonstration=False)
    return Predictor.from_directory(tiny_model_dir(tmp_path_factory.mktemp("model"), MELD, template), dtype="float32")


def test_predict_next_on_a_conversation_of_no_turns_says_so_not_index_minus_one(predictor) -> None:
    cache = ConversationCache()
    with pytest.raises(InputError, match=r"field 'dialogue\.utterances': dialogue 'live' has no utterances") as caught:
        predictor.predict_next(Dialogue("live", "", "test", ()), cache)
    assert "-1" not in str(caught.value)
    assert cache.tokens == 0 and not cache.cut_turns
    # The same conversation, once it has a turn, is labelled as usual.
    assert predictor.predict_next(Dialogue("live", "", "test", (Utterance("Ann", "Hi!"),)), cache).label in MELD.labels


def test_labels_a_tokenizer_cannot_tell_apart_are_refused_naming_both() -> None:
    # A tokenizer that strips accents reads "café" and "cafe" as the same tokens: a bare
    # ValueError without the labels' names came out of the model's loading.
    from tokenizers import normalizers

    from instructerc.inference.label_scoring import LabelScorer
    from instructerc.labels.label_set import LabelSet
    from instructerc.prompts.encoding import SegmentTokenizer
    from tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()])
    labels = LabelSet.from_names("user", ["calm", "caf\u00e9", "cafe"])
    with pytest.raises(InputError, match="field 'label_set': the labels 'caf\u00e9' and 'cafe' of user are the same tokens"):
        LabelScorer(labels, SegmentTokenizer(tokenizer))


@pytest.fixture(scope="module", params=["dialogue-stream", "instructerc"])
def short_predictor(request, tmp_path_factory) -> Predictor:
    """A prompt budget of 200 tokens: a turn of a few hundred words is cut."""
    template = TemplateConfig(name=request.param, demonstration=False)
    directory = tiny_model_dir(tmp_path_factory.mktemp("short"), MELD, template, max_length=200)
    return Predictor.from_directory(directory, dtype="float32")


def conversation(*turns: tuple[str, str]) -> Dialogue:
    return Dialogue("c", "", "test", tuple(Utterance(speaker, text) for speaker, text in turns))


LONG = "Hi! " + "word " * 300


def largest_difference(a, b) -> float:
    return max(abs(a.scores[label] - b.scores[label]) for label in a.scores)


def test_a_conversation_given_whole_to_a_fresh_cache_reads_its_cut_turns_as_predict_does(short_predictor) -> None:
    # "keep the conversation's turns and start a new ConversationCache (predict_next rescores
    # them, same labels)": a fresh cache knew no cut turn, so the long earlier turn was read
    # whole, the budget dropped it from the history instead, and the label moved (by 0.0026).
    dialogue = conversation(("Ann", LONG), ("Bob", "ok"), ("Ann", "Great news!"))
    [whole] = short_predictor.predict([dialogue])
    assert whole[0].truncated
    live = short_predictor.predict_next(dialogue, ConversationCache())
    assert largest_difference(live, whole[-1]) < 1e-6


def test_predict_next_after_an_earlier_turn_was_edited_reads_it_as_predict_does(short_predictor) -> None:
    cache = ConversationCache()
    short_predictor.predict_next(conversation(("Ann", "Hi!")), cache)
    short_predictor.predict_next(conversation(("Ann", "Hi!"), ("Bob", "ok")), cache)
    edited = conversation(("Ann", LONG), ("Bob", "ok"), ("Ann", "Great news!"))  # turn 0 now over the budget
    [whole] = short_predictor.predict([edited])
    assert largest_difference(short_predictor.predict_next(edited, cache), whole[-1]) < 1e-6
    # And back: the turn edited to a short one is no longer cut in the history.
    back = conversation(("Ann", "Hi!"), ("Bob", "ok"), ("Ann", "Great news!"), ("Bob", "Yes."))
    [whole] = short_predictor.predict([back])
    assert largest_difference(short_predictor.predict_next(back, cache), whole[-1]) < 1e-6
    assert cache.cut_turns == set()
