"""Inference with tiny models: scoring is exact under packing, caching and batching."""

from __future__ import annotations

import pytest
import torch

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.inference.incremental import ConversationCache
from instructerc.inference.label_scoring import LabelScorer
from instructerc.inference.predictor import InferenceConfig, Predictor, check_mode
from instructerc.labels.benchmarks import MELD
from instructerc.labels.label_set import LabelSet
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir

SHARED = LabelSet("shared", ("Speaker_0", "Speaker_1", "sad"), ("Speaker_0", "Speaker_1", "sad"))
TEXTS = ["Hi!", "Oh no, that is terrible.", "Great news!", "How are you?", "I am fine, thanks.", "So sad."]


def dialogue(n: int, name: str = "d") -> Dialogue:
    return Dialogue(name, "user", "test", tuple(Utterance(["Ann", "Bob", "Cat"][i % 3], TEXTS[i % len(TEXTS)]) for i in range(n)))


@pytest.fixture(scope="module", params=["dialogue-prefix", "dialogue-stream", "instructerc"])
def predictor(request, tmp_path_factory) -> Predictor:
    template = TemplateConfig(name=request.param, demonstration=False, window=3)
    return Predictor.from_directory(tiny_model_dir(tmp_path_factory.mktemp("model"), MELD, template))


def test_score_mode_gives_a_valid_label_and_probabilities_summing_to_one(predictor):
    for predictions in predictor.predict([dialogue(5), dialogue(2, "e")]):
        for p in predictions:
            assert p.label in MELD.labels
            assert list(p.scores) == list(MELD.labels)
            assert abs(sum(p.scores.values()) - 1) < 1e-5
            assert p.label == max(p.scores, key=p.scores.get)


def test_packing_and_batching_do_not_change_scores(predictor):
    dialogues = [dialogue(6), dialogue(4, "e"), dialogue(1, "f")]
    packed = predictor.predict(dialogues)
    one_by_one = [[predictor.predict_at([(d, i)])[0] for i in range(len(d))] for d in dialogues]
    tight = Predictor(predictor.model, predictor.tokenizer, predictor.setup, config=InferenceConfig(max_tokens=64, batch_tokens=64))
    small_rows = tight.predict(dialogues)
    for a_dialogue, b_dialogue, c_dialogue in zip(packed, one_by_one, small_rows):
        for a, b, c in zip(a_dialogue, b_dialogue, c_dialogue):
            for label in MELD.labels:
                assert a.scores[label] == pytest.approx(b.scores[label], abs=1e-5)
                assert a.scores[label] == pytest.approx(c.scores[label], abs=1e-5)


def test_a_growing_conversation_reuses_its_cache_and_matches_full_scoring(predictor):
    full = predictor.predict([dialogue(6)])[0]
    cache = ConversationCache()
    for n in range(1, 7):
        before = cache.tokens
        prediction = predictor.predict_next(dialogue(n), cache)
        for label in MELD.labels:
            assert prediction.scores[label] == pytest.approx(full[n - 1].scores[label], abs=1e-5)
        if predictor.setup.template.name == "dialogue-prefix":  # its prompts only grow; a sliding window does not
            assert cache.tokens > before or n == 1


def test_turns_of_several_conversations_in_one_batch_match_full_scoring(predictor):
    lengths = {"a": 7, "b": 3, "c": 5, "d": 1}
    full = {name: predictor.predict([dialogue(n, name)])[0] for name, n in lengths.items()}
    caches = {name: ConversationCache() for name in lengths}
    for turn in range(1, 8):
        live = [name for name, n in lengths.items() if n >= turn]
        predictions = predictor.predict_turns([(dialogue(turn, name), caches[name]) for name in live])
        for name, prediction in zip(live, predictions):
            assert prediction.label == full[name][turn - 1].label
            for label in MELD.labels:
                assert prediction.scores[label] == pytest.approx(full[name][turn - 1].scores[label], abs=1e-5)


def test_a_turn_after_an_edit_of_the_history_recomputes_from_where_it_differs(predictor):
    cache = ConversationCache()
    for n in range(1, 5):
        predictor.predict_next(dialogue(n), cache)
    edited = dialogue(5).with_utterances((Utterance("Ann", "Something else entirely."),) + dialogue(5).utterances[1:])
    expected = predictor.predict_at([(edited, 4)])[0]
    got = predictor.predict_next(edited, cache)
    for label in MELD.labels:
        assert got.scores[label] == pytest.approx(expected.scores[label], abs=1e-5)


def test_labels_sharing_first_tokens_need_more_branch_points_and_still_sum_to_one(predictor):
    shared = SHARED
    scorer = LabelScorer(shared, predictor.segments)
    answers = [predictor.segments.answer_ids(v) for v in shared.verbalizers]
    assert answers[0][0] == answers[1][0], "these labels should share their first token"
    assert len(scorer.branch_points) >= 2 and not scorer.single_pass
    template = predictor.setup.template
    import tempfile
    from pathlib import Path

    from tiny import tiny_model_dir as build  # a second model with this label set

    other = Predictor.from_directory(build(Path(tempfile.mkdtemp()) / "m", shared, template))
    batched = other.predict([dialogue(4)])[0]
    cache = ConversationCache()
    for n in range(1, 5):
        p = other.predict_next(dialogue(n), cache)
        assert abs(sum(p.scores.values()) - 1) < 1e-5
        for label in shared.labels:
            assert p.scores[label] == pytest.approx(batched[n - 1].scores[label], abs=1e-5)


def test_constrained_probabilities_follow_the_trie(predictor):
    """P(label) is the product of the model's next-token distributions renormalized at each branch."""
    scorer = LabelScorer(SHARED, predictor.segments)
    torch.manual_seed(0)
    logits = [torch.randn(len(predictor.tokenizer)) for _ in scorer.branch_points]
    probabilities = scorer.probabilities(logits)
    expected = []
    for answer in scorer.answers:
        p = 1.0
        for point, row in zip(scorer.branch_points, logits):
            if answer[: len(point.path)] == point.path and len(answer) > len(point.path):
                allowed = torch.softmax(row[list(point.children)], -1)
                p *= float(allowed[point.children.index(answer[len(point.path)])])
        expected.append(p)
    assert probabilities.tolist() == pytest.approx(expected, abs=1e-6)


def test_generation_is_parsed_strictly_and_batching_does_not_change_it(predictor):
    d = dialogue(5)
    batched = predictor.predict([d], mode="generate")[0]
    alone = [predictor.predict_at([(d, i)], mode="generate")[0] for i in range(len(d))]
    assert [p.generated for p in batched] == [p.generated for p in alone]
    for p in batched:  # an untrained model does not produce labels: invalid, never snapped
        assert (p.label is None) == (MELD.parse_exact(p.generated) is None)
    snapped = predictor.predict([d], mode="generate", paper_parsing=True)[0]
    assert all(p.label in MELD.labels for p in snapped)


def test_paper_parsing_is_refused_outside_generate_mode_and_unknown_modes_too():
    check_mode("generate", paper_parsing=True)
    check_mode("score")
    with pytest.raises(InputError, match="--paper-parsing only applies to --mode generate") as error:
        check_mode("score", paper_parsing=True)
    assert error.value.field == "paper-parsing"
    with pytest.raises(InputError, match="unknown mode 'sample'") as error:
        check_mode("sample")
    assert error.value.field == "mode"


def test_the_predictor_applies_the_mode_checks_itself(predictor):
    with pytest.raises(InputError, match="--paper-parsing only applies"):
        predictor.predict([dialogue(2)], paper_parsing=True)


def test_batched_label_probabilities_equal_prompt_by_prompt(predictor):
    scorer = predictor.scorer
    assert scorer.single_pass
    torch.manual_seed(1)
    logits = torch.randn(5, len(predictor.tokenizer))
    batched = scorer.batch_probabilities(logits)
    for row, expected in zip(logits, batched):
        torch.testing.assert_close(scorer.probabilities([row]), expected, atol=1e-6, rtol=1e-6)


def test_the_prefix_all_prompts_share_is_computed_once_and_changes_nothing(predictor):
    from instructerc.inference import batched

    items = [(d, i) for d in (dialogue(5), dialogue(3, "e")) for i in range(len(d))]
    sequences = [e.prompt_ids for e in predictor.encoded_prompts(items)]
    shared = batched.shared_prefix_length(sequences)
    assert shared >= batched.MIN_SHARED_PREFIX  # the instruction at least
    assert all(s[:shared] == sequences[0][:shared] for s in sequences)
    assert any(s[shared] != sequences[0][shared] for s in sequences) or min(map(len, sequences)) - 1 == shared
    pad = predictor.tokenizer.pad_token_id
    groups = [d.id for d, _ in items]
    fast = batched.last_token_logits(predictor.model, sequences, pad, 2048, 4096, groups=groups)
    for sequence, logits in zip(sequences, fast):
        alone = batched.last_token_logits(predictor.model, [sequence], pad, 2048, 4096)[0]
        assert torch.allclose(logits, alone, atol=1e-4)
