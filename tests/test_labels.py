"""Label sets and the unified label space (UIME)."""

from __future__ import annotations

import pytest

from instructerc.errors import InputError
from instructerc.labels import MAPPINGS, LabelSet, get_mapping, label_set_names, named_label_set, resolve_label_space
from instructerc.labels.benchmarks import BENCHMARK_LABEL_SETS, EMORYNLP, IEMOCAP, MELD
from instructerc.labels.prediction import Prediction, per_dialogue
from instructerc.labels.unified import FEELING_WHEEL, INSTRUCTERC, UnifiedMapping

# --- the benchmarks' own labels, in the COSMIC pickles' id order (../shared/data/README.md) ---


def test_benchmark_label_orders_follow_the_pickle_ids() -> None:
    assert IEMOCAP.labels == ("happy", "sad", "neutral", "angry", "excited", "frustrated")
    assert MELD.labels == ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
    assert EMORYNLP.labels == ("Joyful", "Mad", "Peaceful", "Neutral", "Sad", "Powerful", "Scared")


def test_meld_verbalizers_are_instructercs() -> None:
    assert MELD.verbalizers == ("neutral", "surprise", "fear", "sad", "joyful", "disgust", "angry")
    assert [MELD.verbalize(label) for label in ("sadness", "joy", "anger")] == ["sad", "joyful", "angry"]
    assert IEMOCAP.verbalizers == IEMOCAP.labels and EMORYNLP.verbalizers == EMORYNLP.labels


# --- the paper's unified mapping ---------------------------------------------------------------


def test_instructerc_mapping_is_exactly_the_papers() -> None:
    assert INSTRUCTERC.label_set.labels == ("joyful", "sad", "neutral", "mad", "excited", "fear", "disgust", "peaceful", "powerful")
    assert INSTRUCTERC.label_set.verbalizers == INSTRUCTERC.label_set.labels
    assert INSTRUCTERC.label_set.name == "uime"
    assert dict(INSTRUCTERC.forward["iemocap"]) == {
        "happy": "joyful",
        "sad": "sad",
        "neutral": "neutral",
        "angry": "mad",
        "excited": "excited",
        "frustrated": "fear",
    }
    assert dict(INSTRUCTERC.forward["meld"]) == {
        "neutral": "neutral",
        "surprise": "powerful",
        "fear": "fear",
        "sadness": "sad",
        "joy": "joyful",
        "disgust": "disgust",
        "anger": "mad",
    }
    assert dict(INSTRUCTERC.forward["emorynlp"]) == {
        "Joyful": "joyful",
        "Mad": "mad",
        "Peaceful": "peaceful",
        "Neutral": "neutral",
        "Sad": "sad",
        "Powerful": "powerful",
        "Scared": "fear",
    }


def test_the_default_unified_space_is_the_papers() -> None:
    assert resolve_label_space("uime").mapping is INSTRUCTERC
    assert resolve_label_space("uime:instructerc").mapping is INSTRUCTERC
    assert resolve_label_space("uime:feeling-wheel").mapping is FEELING_WHEEL
    assert resolve_label_space("original").mapping is None
    assert get_mapping("instructerc") is INSTRUCTERC


@pytest.mark.parametrize("spec", ["Original", "uime:paper", "feeling-wheel", "uime-feeling-wheel", ""])
def test_unknown_label_spaces_are_input_errors(spec: str) -> None:
    with pytest.raises(InputError) as error:
        resolve_label_space(spec)
    assert error.value.field == "labels"


# --- both mappings: one to one, round trips, labels outside a dataset --------------------------


@pytest.mark.parametrize("mapping", MAPPINGS.values(), ids=list(MAPPINGS))
@pytest.mark.parametrize("dataset", BENCHMARK_LABEL_SETS)
def test_every_original_label_round_trips(mapping: UnifiedMapping, dataset: str) -> None:
    assert mapping.covers(dataset)
    for label in BENCHMARK_LABEL_SETS[dataset].labels:
        unified = mapping.to_unified(dataset, label)
        assert unified in mapping.label_set
        assert mapping.to_original(dataset, unified) == label


# Unified labels a dataset has no class for, per mapping (read off the tables above by hand).
OUTSIDE = {
    ("instructerc", "iemocap"): {"disgust", "peaceful", "powerful"},
    ("instructerc", "meld"): {"excited", "peaceful"},
    ("instructerc", "emorynlp"): {"excited", "disgust"},
    ("feeling-wheel", "iemocap"): {"peaceful", "powerful", "scared", "disgust", "surprise"},
    ("feeling-wheel", "meld"): {"excited", "peaceful", "powerful", "frustrated"},
    ("feeling-wheel", "emorynlp"): {"excited", "frustrated", "disgust", "surprise"},
}


@pytest.mark.parametrize(("mapping_name", "dataset"), OUTSIDE)
def test_unified_labels_outside_a_dataset_map_back_to_none(mapping_name: str, dataset: str) -> None:
    mapping = MAPPINGS[mapping_name]
    outside = {label for label in mapping.label_set.labels if mapping.to_original(dataset, label) is None}
    assert outside == OUTSIDE[(mapping_name, dataset)]
    assert mapping.to_original(dataset, "not-a-label") is None


# --- the feeling-wheel mapping ------------------------------------------------------------------


def test_feeling_wheel_puts_frustrated_in_the_mad_family() -> None:
    assert FEELING_WHEEL.to_unified("iemocap", "frustrated") == "frustrated"
    assert FEELING_WHEEL.families["frustrated"] == "Mad"
    assert FEELING_WHEEL.families["mad"] == "Mad"


def test_feeling_wheel_labels_and_families() -> None:
    assert len(FEELING_WHEEL.label_set) == 11
    assert FEELING_WHEEL.label_set.name == "uime:feeling-wheel"
    assert (FEELING_WHEEL.to_unified("meld", "fear"), FEELING_WHEEL.to_unified("emorynlp", "Scared")) == ("scared", "scared")
    assert FEELING_WHEEL.to_unified("meld", "surprise") == "surprise"
    assert FEELING_WHEEL.families["excited"] == "Joyful"
    wheel_core = {"Mad", "Scared", "Joyful", "Powerful", "Peaceful", "Sad"}
    for mapping in MAPPINGS.values():
        assert set(mapping.families.values()) - {None} <= wheel_core
    assert INSTRUCTERC.families["fear"] == "Scared"


def test_a_mapping_that_is_not_one_to_one_is_rejected() -> None:
    merged = dict(INSTRUCTERC.forward["iemocap"], excited="joyful")  # happy and excited both -> joyful
    with pytest.raises(ValueError, match="not one-to-one"):
        UnifiedMapping("merged", INSTRUCTERC.label_set, {"iemocap": merged}, INSTRUCTERC.families)


def test_a_mapping_must_cover_every_label_of_a_dataset() -> None:
    partial = {k: v for k, v in INSTRUCTERC.forward["meld"].items() if k != "disgust"}
    with pytest.raises(ValueError, match="must map exactly"):
        UnifiedMapping("partial", INSTRUCTERC.label_set, {"meld": partial}, INSTRUCTERC.families)


def test_label_sets_by_name() -> None:
    assert label_set_names() == ["iemocap", "meld", "emorynlp", "uime", "uime:feeling-wheel"]
    assert named_label_set("meld") is MELD
    assert named_label_set("uime") is INSTRUCTERC.label_set
    assert named_label_set("uime:feeling-wheel") is FEELING_WHEEL.label_set
    for name in label_set_names():
        assert named_label_set(name).name == name
    with pytest.raises(InputError, match="unknown label set 'MELD'.*known: iemocap, meld") as error:
        named_label_set("MELD")
    assert error.value.field == "label_set"


def test_the_cosmic_loaders_use_the_named_benchmark_label_sets() -> None:
    from instructerc.data.cosmic import LOADERS

    assert {loader.name: loader.label_set for loader in LOADERS} == {
        f"cosmic-{name}": BENCHMARK_LABEL_SETS[name] for name in BENCHMARK_LABEL_SETS
    }


# --- LabelSet: strict parsing of model output, lenient reading of user spellings -----------------


@pytest.mark.parametrize(
    ("text", "label"), [("angry", "anger"), (" angry\n", "anger"), ("\tsad ", "sadness"), ("joyful", "joy"), ("neutral", "neutral")]
)
def test_parse_exact_accepts_exactly_a_verbalizer(text: str, label: str) -> None:
    assert MELD.parse_exact(text) == label


@pytest.mark.parametrize(
    "text", ["angry.", "anger", "Angry", "ANGRY", "angry!", "'angry'", "an gry", "angry angry", "I feel angry", "sadness", "joy", "", "  "]
)
def test_parse_exact_refuses_anything_else(text: str) -> None:
    """Generated text that is not exactly a verbalizer is invalid: never snapped to the nearest label."""
    assert MELD.parse_exact(text) is None


def test_parse_exact_is_case_sensitive_to_the_verbalizer() -> None:
    assert EMORYNLP.parse_exact("Joyful") == "Joyful"
    assert EMORYNLP.parse_exact("joyful") is None


@pytest.mark.parametrize(
    ("spelling", "label"),
    [
        ("anger", "anger"),
        ("ANGER", "anger"),
        ("angry", "anger"),
        ("Angry", "anger"),
        (" Sad ", "sadness"),
        ("SADNESS", "sadness"),
        ("Joyful", "joy"),
        ("joy", "joy"),
    ],
)
def test_canonical_accepts_names_and_verbalizers_in_any_case(spelling: str, label: str) -> None:
    assert MELD.canonical(spelling) == label


@pytest.mark.parametrize("spelling", ["happy", "angry.", "sa d", "", "joyfull"])
def test_canonical_refuses_other_words(spelling: str) -> None:
    assert MELD.canonical(spelling) is None


def test_canonical_of_emorynlp_is_case_insensitive() -> None:
    assert [EMORYNLP.canonical(s) for s in ("scared", "MAD", "Neutral")] == ["Scared", "Mad", "Neutral"]


def test_contains_means_canonical_labels_only() -> None:
    assert "sadness" in MELD
    assert "sad" not in MELD
    assert "Sadness" not in MELD


@pytest.mark.parametrize(
    ("labels", "verbalizers", "message"),
    [
        (("a", "A"), ("a", "b"), "duplicate labels"),
        (("a", "b"), ("x", "X"), "duplicate verbalizers"),
        (("a", " b"), ("a", "b"), "unpadded"),
        (("a", "b"), ("a", ""), "non-empty"),
        (("a", "b"), ("a",), "2 labels but 1 verbalizers"),
        ((), (), "empty"),
        (("a", "b"), ("b", "c"), "names two labels"),
    ],
)
def test_invalid_label_sets_are_rejected(labels: tuple[str, ...], verbalizers: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LabelSet("bad", labels, verbalizers)


def test_label_set_dict_round_trip() -> None:
    assert LabelSet.from_dict(MELD.to_dict()) == MELD
    assert MELD.to_dict() == {"name": "meld", "labels": list(MELD.labels), "verbalizers": list(MELD.verbalizers)}


# --- Prediction records: flat results back per dialogue ------------------------------------------


def test_flat_predictions_go_back_to_their_dialogues_in_order() -> None:
    flat = [Prediction(label) for label in ("joy", "anger", "fear", "neutral", "sadness", "surprise")]
    grouped = per_dialogue(flat, ["abc", "", "d", "ef"])  # anything with a length stands for a dialogue
    assert grouped == [flat[0:3], [], flat[3:4], flat[4:6]]


@pytest.mark.parametrize("count", [4, 6])
def test_flat_predictions_out_of_step_with_the_dialogues_are_refused(count: int) -> None:
    with pytest.raises(ValueError, match=f"{count} results for 5 utterances in 2 dialogues"):
        per_dialogue([Prediction("joy")] * count, ["abc", "de"])


def test_labels_that_differ_only_in_unicode_form_are_one_label() -> None:
    # "café" with a precomposed é and with e + a combining accent look the same: as two labels of
    # one set the model would be asked to tell apart two identical words, and a gold read in NFC
    # (as every file reader reads it) could never be the other one.
    with pytest.raises(ValueError, match="duplicate labels"):
        LabelSet.from_names("x", ["caf\u00e9", "cafe\u0301"])
    with pytest.raises(ValueError, match="duplicate labels"):
        LabelSet.from_names("x", ["\u00c5ngst", "\u212bNGST"])  # the Angstrom sign is an Å
    labels = LabelSet.from_names("x", ["caf\u00e9", "calm"])
    assert labels.canonical("CAFE\u0301") == "caf\u00e9"
    assert labels.canonical(" cafe\u0301 ") == "caf\u00e9"


@pytest.mark.parametrize("word", ["so\nsad", "so\tsad", "sad\rx", "\x1bsad"])
def test_a_label_holding_a_control_character_is_refused(word: str) -> None:
    # A line feed in a label split the one-line label statement of every prompt.
    with pytest.raises(ValueError, match="control character"):
        LabelSet.from_names("x", [word, "calm"])
    with pytest.raises(ValueError, match="control character"):
        LabelSet("x", ("a", "b"), ("a", word))
