"""The Python API used from a notebook: copies and pickles of caches, flags given as strings,
hand-built prompt setups and training arguments are refused by name or work as documented."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.inference.incremental import ConversationCache
from instructerc.inference.predictor import Predictor
from instructerc.labels.benchmarks import MELD
from instructerc.labels.unified import INSTRUCTERC
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.templates import TemplateConfig
from instructerc.retrieval.index import RetrievalConfig
from instructerc.training.config import TrainConfig
from instructerc.training.trainer import Trainer
from tiny import tiny_model_dir

REPO = Path(__file__).resolve().parents[1]
TURNS = (Utterance("Ann", "Hi!"), Utterance("Bob", "Oh no."), Utterance("Ann", "Great news!"), Utterance("Bob", "So sad."))


def talk(turns: tuple[Utterance, ...]) -> Dialogue:
    return Dialogue("live", "user", "test", turns)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model"), MELD, TemplateConfig(name="dialogue-stream", demonstration=False))


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor.from_directory(model_dir, device="cpu", dtype="float32")


def test_a_copied_cache_is_a_fork_each_continued_on_its_own(predictor) -> None:
    whole = predictor.predict([talk(TURNS)])[0]
    other = TURNS[:2] + (Utterance("Cat", "I am fine, thanks."),)
    cache = ConversationCache()
    for k in (1, 2):
        predictor.predict_next(talk(TURNS[:k]), cache)
    fork = copy.copy(cache)
    assert predictor.predict_next(talk(TURNS[:3]), cache).scores == pytest.approx(whole[2].scores, abs=1e-6)
    # The fork goes another way; the shared ids and buffer made it overwrite the original's states.
    assert predictor.predict_next(talk(other), fork).scores == pytest.approx(predictor.predict([talk(other)])[0][2].scores, abs=1e-6)
    assert predictor.predict_next(talk(TURNS), cache).scores == pytest.approx(whole[3].scores, abs=1e-6)
    deep = copy.deepcopy(cache)
    assert deep.ids == cache.ids and deep.ids is not cache.ids


def test_a_cache_refuses_pickling_by_name_and_a_predictor_still_pickles(predictor) -> None:
    cache = ConversationCache()
    predictor.predict_next(talk(TURNS[:2]), cache)
    with pytest.raises(TypeError, match="ConversationCache cannot be pickled"):
        pickle.dumps(cache)
    again = pickle.loads(pickle.dumps(predictor))
    assert again.predict([talk(TURNS)])[0][1].scores == pytest.approx(predictor.predict([talk(TURNS)])[0][1].scores, abs=1e-6)


@pytest.mark.parametrize("flag", ["no", "false", 0, None])
def test_trust_remote_code_that_is_not_a_bool_is_refused_not_read_as_true(model_dir, flag) -> None:
    with pytest.raises(InputError, match="field 'trust_remote_code': trust_remote_code must be True or False"):
        Predictor.from_directory(model_dir, device="cpu", dtype="float32", trust_remote_code=flag)


@pytest.mark.parametrize(
    ("scores", "error", "message"),
    [
        ({}, ValueError, "scores hold none of the instructerc labels"),
        ({"joy": 0.9, "sadness": 0.1}, ValueError, "keyed by unified label"),
        ({**dict.fromkeys(INSTRUCTERC.label_set.labels, 0.1), "joyful": float("nan")}, ValueError, "'joyful' must be a number"),
        ([0.1] * 9, TypeError, "scores must be a mapping"),
    ],
)
def test_best_original_refuses_scores_it_cannot_rank(scores, error, message) -> None:
    with pytest.raises(error, match=message):
        INSTRUCTERC.best_original("meld", scores)
    scores = {**dict.fromkeys(INSTRUCTERC.label_set.labels, 0.1), "sad": 0.5}
    assert INSTRUCTERC.best_original("meld", scores) == "sadness"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"demonstration": "no"}, "demonstration"),
        ({"history": None}, "history"),
        ({"window": 2.5}, "window"),
        ({"history_stride": "2"}, "history_stride"),
    ],
)
def test_template_settings_of_the_wrong_type_are_refused_by_field(settings, field) -> None:
    with pytest.raises(InputError, match=f"field 'template.{field}'"):
        TemplateConfig(**settings)


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ({"template": "instructerc"}, "PromptSetup.template must be a TemplateConfig, not str"),
        ({"label_set": ["joy", "sadness"]}, "PromptSetup.label_set must be a LabelSet, not list"),
        ({"retrieval": None}, "PromptSetup.retrieval must be a RetrievalConfig"),
        ({"max_length": "512"}, "PromptSetup.max_length must be a whole number, not str"),
    ],
)
def test_a_prompt_setup_of_the_wrong_parts_is_refused_by_name(parts, message) -> None:
    arguments = {"template": TemplateConfig(demonstration=False), "label_set": MELD, "max_length": 512, "retrieval": RetrievalConfig()}
    with pytest.raises(TypeError, match=message):
        PromptSetup(**{**arguments, **parts})


@pytest.mark.parametrize("index", [-1, 4, 1.0])
def test_a_prompt_for_an_utterance_outside_the_dialogue_is_refused(index) -> None:
    builder = PromptSetup(TemplateConfig(demonstration=False), MELD, 512, RetrievalConfig()).builder()
    with pytest.raises(InputError, match=f"field 'index': utterance index {index!r} is outside dialogue 'live' of 4"):
        builder.erc(talk(TURNS), index)


@pytest.mark.parametrize(
    ("cut_before", "message"),
    [
        (iter([{0}]), "cut_before must be a list"),
        ([None], r"cut_before\[0\] must be a collection"),
        ([0], r"cut_before\[0\]"),
        ([["0"]], "whole numbers"),
    ],
)
def test_cut_before_of_the_wrong_shape_is_refused_by_name(predictor, cut_before, message) -> None:
    with pytest.raises(TypeError, match=message):
        predictor.predict_at([(talk(TURNS), 1)], cut_before=cut_before)


def test_a_progress_without_update_is_refused_before_predicting(predictor) -> None:
    with pytest.raises(TypeError, match="progress must be None or have an update"):
        predictor.predict([talk(TURNS)], progress=5)


def test_training_arguments_of_the_wrong_type_are_refused_by_name(tmp_path) -> None:
    recipe = REPO / "recipes" / "smollm2-135m-meld-cpu.yaml"
    with pytest.raises(TypeError, match="overrides must be a mapping"):
        TrainConfig.from_yaml(recipe, overrides=["optim.lr=1e-4"])
    config = TrainConfig.from_yaml(recipe, overrides={"output_dir": str(tmp_path / "run")})
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        Trainer({"output_dir": "x"})
    with pytest.raises(TypeError, match="force must be True or False"):
        Trainer(config, force="no")
    with pytest.raises(TypeError, match="progress must be True or False"):
        Trainer(config, progress="no")
    with pytest.raises(InputError, match="stop_after_steps"):
        Trainer(config, stop_after_steps=0)


def test_a_data_source_refuses_an_empty_path_and_wrong_types() -> None:
    from instructerc.data.registry import DataSource, load_dialogues
    from instructerc.errors import InputError

    with pytest.raises(InputError, match="an empty path"):
        DataSource("meld", "")  # Path("") would read the working directory
    with pytest.raises(TypeError, match="path must be a str or Path"):
        DataSource("meld", 5)
    with pytest.raises(TypeError, match="source must be a DataSource"):
        load_dialogues("meld", "dev")


def test_a_label_set_names_what_is_wrong_with_its_input() -> None:
    from instructerc.labels.benchmarks import MELD
    from instructerc.labels.label_set import LabelSet

    with pytest.raises(TypeError, match="generated text is a string"):
        MELD.parse_exact(None)
    with pytest.raises(ValueError, match="needs verbalizers"):
        LabelSet.from_dict({"name": "x", "labels": ["a"]})
    assert LabelSet.from_dict(MELD.to_dict()) == MELD


def test_a_dialogue_id_or_dataset_of_the_wrong_kind_is_refused_and_an_int_id_read_as_text(model_dir: Path) -> None:
    predictor = Predictor.from_directory(model_dir, device="cpu")
    lines = (Utterance("Ann", "Hi there."), Utterance("Bob", "Hello!"))
    for field, value in (("id", None), ("id", ["a"]), ("dataset", None), ("dataset", 3)):
        fields = {"id": "d", "dataset": "unnamed", field: value}
        with pytest.raises(TypeError, match=rf"dialogues\[0\]\.{field} must be a string"):
            predictor.predict([Dialogue(split="test", utterances=lines, **fields)])
    numbered, named = predictor.predict([Dialogue(7, "unnamed", "test", lines), Dialogue("7", "unnamed", "test", lines)])
    assert [p.scores for p in numbered] == [p.scores for p in named]
