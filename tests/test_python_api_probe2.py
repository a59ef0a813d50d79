"""The Python API as a notebook user calls it: wrong arguments are refused by name, not deep in torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.evaluation.metrics import compute_metrics
from instructerc.evaluation.scoring import score_by_dataset, selection_score
from instructerc.inference.predictor import InferenceConfig, Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.labels.label_set import LabelSet
from instructerc.labels.prediction import Prediction
from instructerc.labels.registry import resolve_label_space
from instructerc.labels.unified import INSTRUCTERC, mapping_of
from instructerc.modeling.precision import resolve_dtype
from instructerc.prompts.templates import TemplateConfig
from tiny import tiny_model_dir


def dialogue(name: str = "d", speakers: tuple[str, ...] = ("Ann", "Bob"), texts: tuple[str, ...] = ("Hi!", "Oh no.")) -> Dialogue:
    return Dialogue(name, "user", "test", tuple(Utterance(s, t) for s, t in zip(speakers, texts)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    template = TemplateConfig(name="dialogue-prefix", demonstration=False, window=3)
    return tiny_model_dir(tmp_path_factory.mktemp("model"), MELD, template)


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor.from_directory(str(model_dir), device="cpu", dtype="float32")


@pytest.mark.parametrize(
    ("dialogues", "message"),
    [
        ("Hi there", "dialogues must be a list of Dialogue objects, not a str"),
        (dialogue(), r"not one Dialogue: pass \[dialogue\]"),
        (None, "not None"),
        ([{"id": "x", "utterances": [{"speaker": "A", "text": "hi"}]}], r"dialogues\[0\] must be a Dialogue, not a dict"),
        ([dialogue(), Dialogue("x", "user", "test", ({"text": "hi"},))], r"dialogues\[1\].utterances\[0\] must be an Utterance"),
        ([Dialogue("x", "user", "test", (Utterance(None, "hi"),))], r"dialogues\[0\].utterances\[0\].speaker must be a string, not None"),
        ([Dialogue("x", "user", "test", (Utterance("A", 5),))], r"dialogues\[0\].utterances\[0\].text must be a string, not an int"),
    ],
)
def test_predict_refuses_what_is_not_a_list_of_dialogues_by_name(predictor, dialogues, message) -> None:
    with pytest.raises(TypeError, match=message):
        predictor.predict(dialogues)


def test_predict_refuses_empty_or_unencodable_text_naming_the_field(predictor) -> None:
    with pytest.raises(InputError, match=r"field 'dialogues\[0\].utterances\[1\].text': empty utterance text"):
        predictor.predict([dialogue(texts=("Hi!", "   "))])
    # A zero-width space or a byte order mark alone says nothing a reader could see.
    with pytest.raises(InputError, match=r"field 'dialogues\[0\].utterances\[1\].text': utterance text of invisible characters only"):
        predictor.predict([dialogue(texts=("Hi!", "\u200b\ufeff "))])
    with pytest.raises(InputError, match=r"field 'dialogues\[0\].utterances\[0\].speaker'.*lone surrogate"):
        predictor.predict([dialogue(speakers=("A\ud800", "Bob"))])
    with pytest.raises(TypeError, match=r"items\[0\] must be a \(Dialogue, utterance index\) pair"):
        predictor.predict_at([dialogue()])


def test_a_generator_of_dialogues_is_read_once_and_labelled_like_a_list(predictor) -> None:
    dialogues = [dialogue("a"), dialogue("b", texts=("So sad.", "Great news!"))]
    from_list = predictor.predict(dialogues)
    from_generator = predictor.predict(d for d in dialogues)
    assert [[p.scores for p in ps] for ps in from_generator] == [[p.scores for p in ps] for ps in from_list]


def test_padded_speakers_and_texts_are_read_trimmed_as_from_a_file(predictor) -> None:
    # A file's " Ann" is read as "Ann"; the same dialogue built in Python must get the same labels.
    trimmed = predictor.predict([dialogue()])[0]
    padded = predictor.predict([dialogue(speakers=(" Ann ", "Bob\n"), texts=("  Hi!", "Oh no. "))])[0]
    for a, b in zip(trimmed, padded):
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_a_device_this_machine_lacks_is_refused_before_loading(model_dir) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InputError, match="field 'device': device 'cuda' is not available"):
        Predictor.from_directory(model_dir, device="cuda")
    with pytest.raises(InputError, match="field 'device': unknown device 'gpu'"):
        Predictor.from_directory(model_dir, device="gpu")


def test_torch_dtypes_are_accepted_and_short_spellings_get_the_name_to_use(model_dir) -> None:
    assert Predictor.from_directory(model_dir, device="cpu", dtype=torch.float32).precision == "float32"
    assert resolve_dtype(torch.bfloat16, "cpu") == "bfloat16"
    with pytest.raises(InputError, match="did you mean 'bfloat16'"):
        Predictor.from_directory(model_dir, device="cpu", dtype="bf16")
    with pytest.raises(InputError, match="unknown dtype torch.float64"):
        resolve_dtype(torch.float64, "cpu")


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"generate_batch_size": 0}, "generate_batch_size"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"batch_tokens": -1}, "batch_tokens"),
        ({"workers": "2"}, "workers"),
        ({"block_sparse_attention": "no"}, "block_sparse_attention"),
        ({"packed_weights": 1}, "packed_weights"),
    ],
)
def test_inference_settings_out_of_range_are_refused_naming_the_setting(settings, field) -> None:
    with pytest.raises(InputError, match=f"field '{field}'"):
        InferenceConfig(**settings)


def test_a_config_that_is_not_an_inference_config_is_refused(model_dir) -> None:
    with pytest.raises(TypeError, match="config must be an InferenceConfig or None, not a dict"):
        Predictor.from_directory(model_dir, device="cpu", config={"workers": 1})


def test_metrics_take_numpy_arrays_and_a_label_set() -> None:
    gold, predicted = np.array(["joy", "anger", "joy"]), np.array(["joy", None, "anger"], dtype=object)
    metrics = compute_metrics(gold, predicted, MELD)
    assert metrics.labels == list(MELD.labels) and metrics.count == 3
    assert metrics.accuracy == pytest.approx(100 / 3) and metrics.invalid_rate == pytest.approx(100 / 3)
    assert all(type(label) is str for label in metrics.labels)


@pytest.mark.parametrize(
    ("gold", "predicted", "labels", "error", "message"),
    [
        ("ab", "ab", ["a", "b"], TypeError, "gold must be a list of labels, not str"),
        (["a"], ["a"], "abc", TypeError, "labels must be a list of labels, not str"),
        (["a", "b"], ["a", 1], ["a", "b"], TypeError, r"predicted\[1\] must be a label"),
        (["a", None], ["a", "b"], ["a", "b"], TypeError, r"gold\[1\] must be a label"),
        (["a", "b"], ["a", "b"], ["a", "b", "a"], ValueError, r"labels lists \['a'\] more than once"),
    ],
)
def test_metrics_refuse_what_would_score_wrongly(gold, predicted, labels, error, message) -> None:
    with pytest.raises(error, match=message):
        compute_metrics(gold, predicted, labels)


def test_scoring_refuses_predictions_out_of_step_with_the_dialogues() -> None:
    gold = Dialogue("x", "meld", "test", (Utterance("A", "hi", "joy"), Utterance("B", "yo", "anger")))
    with pytest.raises(ValueError, match=r"predictions\[0\] holds 1 predictions for the 2 utterances of dialogue 'x'"):
        score_by_dataset([gold], [[Prediction("joy")]], MELD)
    with pytest.raises(ValueError, match="1 lists of predictions for 2 dialogues"):
        score_by_dataset([gold, gold], [[Prediction("joy"), Prediction("joy")]], MELD)
    with pytest.raises(TypeError, match=r"predictions\[0\]\[0\] must be a Prediction, not str"):
        score_by_dataset([gold], [["joy", "anger"]], MELD)
    with pytest.raises(ValueError, match="nothing was scored: no utterance has a gold emotion"):
        selection_score(score_by_dataset([Dialogue("z", "meld", "test", (Utterance("A", "hi"),))], [[Prediction("joy")]], MELD))
    with pytest.raises(ValueError, match=r"dataset 'meld': gold labels \['happy'\] are not classes .*\(neutral, surprise"):
        score_by_dataset([Dialogue("y", "meld", "test", (Utterance("A", "hi", "happy"),))], [[Prediction("joy")]], MELD)


def test_label_sets_given_as_lists_equal_the_same_as_tuples() -> None:
    labels = list(INSTRUCTERC.label_set.labels)
    as_lists = LabelSet("uime", labels, labels)
    assert as_lists == INSTRUCTERC.label_set and hash(as_lists) == hash(INSTRUCTERC.label_set)
    assert mapping_of(as_lists) is INSTRUCTERC  # scored on each dataset's own classes, as unified
    assert LabelSet.from_names("mine", (w for w in ["calm", "upset"])).labels == ("calm", "upset")
    assert ["joy"] not in MELD


def test_label_sets_refuse_a_string_or_non_string_labels() -> None:
    with pytest.raises(TypeError, match="labels must be a list or tuple of strings, not str"):
        LabelSet.from_names("mine", "joy")
    with pytest.raises(TypeError, match="labels must be strings, got None"):
        LabelSet.from_names("mine", ["joy", None])
    with pytest.raises(KeyError, match=r"'sad' is not a label of meld \(neutral"):
        MELD.verbalize("sad")


def test_unknown_datasets_and_spaces_are_named() -> None:
    with pytest.raises(KeyError, match="mapping instructerc does not cover dataset 'MELD'"):
        INSTRUCTERC.to_unified("MELD", "joy")
    with pytest.raises(KeyError, match=r"'happy' is not a meld label"):
        INSTRUCTERC.to_unified("meld", "happy")
    with pytest.raises(InputError, match="field 'labels': a label space is a string"):
        resolve_label_space(None)


def test_speakers_are_read_in_the_one_form_the_file_readers_use(predictor) -> None:
    # "José" typed as e + combining accent, and "Ann" pasted with a BOM, are the file's José and Ann.
    plain = predictor.predict([dialogue(speakers=("José", "Ann"), texts=("Hi!", "Oh no."))])[0]
    other_forms = predictor.predict([dialogue(speakers=("Jose\u0301", "\ufeffAnn\u200b"), texts=("Hi!", "Oh no."))])[0]
    for a, b in zip(plain, other_forms):
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


@pytest.mark.parametrize("split", [None, 3, "validate"])
def test_a_split_that_is_not_one_is_named(split) -> None:
    from instructerc.data.dialogue import canonical_split

    with pytest.raises(InputError, match="unknown split"):
        canonical_split(split)


def test_encoded_prompts_of_two_dialogues_under_one_id_are_each_their_own(predictor) -> None:
    a = dialogue("q", texts=("Hi!", "Oh no."))
    b = dialogue("q", texts=("Go away.", "Fine."))
    prompt_a, prompt_b = predictor.encoded_prompts([(a, 1), (b, 1)])
    assert "Oh no." in prompt_a.example.prompt and "Fine." in prompt_b.example.prompt
