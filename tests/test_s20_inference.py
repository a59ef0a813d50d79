"""Model directories damaged as people damage them, and models whose numbers overflow: each
refused with an error naming the file (or the precision to use), never a traceback or a
silently wrong prediction. And the modeling package's modules import one another without a cycle."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.modeling.model_dir import load_model
from test_layers import PACKAGE, imports_of, module_name
from tiny import tiny_backbone, tiny_model_dir

DIALOGUE = Dialogue("d1", "", "test", (Utterance("Ann", "I got the job!"), Utterance("Bob", "No way, 你好 😀")))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny", MELD)


def copied(model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model, tmp_path / "copy"))


# -- the modeling package has no import cycle ---------------------------------------------------------


def test_the_modeling_modules_import_one_another_without_a_cycle():
    # Every import counts, function-level ones too (as in test_layers): default_model imported
    # model_dir, which imports finetune, which imports default_model.
    folder = PACKAGE / "modeling"
    graph = {
        ".".join(module_name(path)): {found.module for found in imports_of(path) if found.module.startswith("instructerc.modeling.")}
        for path in folder.glob("*.py")
    }

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for target in sorted(graph.get(node, ())):
            if target == start:
                return (*seen, target)
            if target not in seen:
                found = cycle_from(start, target, (*seen, target))
                if found:
                    return found
        return None

    cycles = [cycle for module in sorted(graph) if (cycle := cycle_from(module, module, (module,)))]
    assert not cycles, f"import cycle: {' -> '.join(cycles[0])}"


def test_the_manifest_name_is_one_constant():
    from instructerc.modeling import default_model, model_dir

    assert model_dir.MANIFEST == default_model.MANIFEST == "instructerc.json"


# -- a damaged tokenizer file is named ----------------------------------------------------------------


def _without_model_key(text: str) -> str:
    data = json.loads(text)
    del data["model"]
    return json.dumps(data)


@pytest.mark.parametrize(
    ("name", "damage", "problem"),
    [
        ("tokenizer.json", lambda text: "{}", "not a tokenizer"),
        ("tokenizer.json", lambda text: "[]", "a JSON object expected, not list"),
        ("tokenizer.json", _without_model_key, "not a tokenizer"),
        ("tokenizer.json", lambda text: text[: len(text) // 2], "not JSON"),
        ("tokenizer_config.json", lambda text: "[]", "a JSON object expected, not list"),
        ("tokenizer_config.json", lambda text: "garbage", "not JSON"),
    ],
)
def test_a_damaged_tokenizer_file_is_named(model: Path, tmp_path: Path, name, damage, problem):
    directory = copied(model, tmp_path)
    file = directory / name
    file.write_text(damage(file.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_model(directory, dtype="float32")
    assert Path(caught.value.path) == file
    assert problem in caught.value.message


def test_a_damaged_tokenizer_is_one_line_from_predict(model: Path, tmp_path: Path, run_cli):
    directory = copied(model, tmp_path)
    (directory / "tokenizer.json").write_text("{}", encoding="utf-8")
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "utterances": [{"speaker": "Ann", "text": "Hi"}]}) + "\n", encoding="utf-8")
    result = run_cli("predict", "--model", directory, "--input", source, "--output", tmp_path / "out.jsonl", "--no-progress")
    assert result.code == 2
    [line] = result.err.splitlines()
    assert line.startswith(f"instructerc: error: {directory / 'tokenizer.json'}: a damaged tokenizer file")


def test_a_tokenizer_failure_of_another_cause_is_not_blamed_on_a_file(model: Path, tmp_path: Path, monkeypatch):
    # The files are whole: the failure is said as before (here as the loader's own error).
    from instructerc.modeling import model_dir

    def failing(*args, **kwargs):
        raise KeyError("something else")

    monkeypatch.setattr(model_dir, "load_tokenizer", failing)
    with pytest.raises(KeyError, match="something else"):
        load_model(copied(model, tmp_path), dtype="float32")


# -- weights of another model, or stored as integers ---------------------------------------------------


def test_weights_of_a_deeper_model_are_refused(model: Path, tmp_path: Path):
    # transformers drops the layers its config has no place for, and the model computes something else.
    directory = copied(model, tmp_path)
    deeper = tiny_backbone(tmp_path / "deeper", seed=1, layers=3)
    shutil.copy(deeper / "model.safetensors", directory / "model.safetensors")
    with pytest.raises(InputError, match=r"9 weight\(s\) its config has no place for \(first: model\.layers\.2\.") as caught:
        load_model(directory, dtype="float32")
    assert Path(caught.value.path) == directory / "model.safetensors"


def test_a_backbone_with_extra_weights_still_loads(tmp_path: Path):
    # A Hub checkpoint may carry weights for another head; only a model directory's own is exact.
    from instructerc.modeling.backbone import BackboneConfig, load_causal_lm

    backbone = tiny_backbone(tmp_path / "backbone")
    shutil.copy(tiny_backbone(tmp_path / "deeper", seed=1, layers=3) / "model.safetensors", backbone / "model.safetensors")
    assert load_causal_lm(str(backbone), BackboneConfig(model=str(backbone)), "cpu", "float32").config.num_hidden_layers == 2


def test_a_weights_report_is_not_printed_beside_the_error(model: Path, tmp_path: Path, run_cli, caplog):
    # transformers logs a table of the misplaced weights; the one-line error says what matters.
    directory = copied(model, tmp_path)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    (directory / "config.json").write_text(json.dumps({**config, "hidden_size": 64}), encoding="utf-8")
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "utterances": [{"speaker": "Ann", "text": "Hi"}]}) + "\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        result = run_cli("predict", "--model", directory, "--input", source, "--output", tmp_path / "out.jsonl", "--no-progress")
    assert result.code == 2
    [line] = result.err.splitlines()
    assert line.startswith(f"instructerc: error: {directory / 'model.safetensors'}: the weights are not those")
    assert not [record for record in caplog.records if "LOAD REPORT" in record.getMessage()]


def test_a_failing_load_still_shows_the_weights_report(tmp_path: Path, monkeypatch, caplog):
    # Held back only when instructerc says what is wrong itself: transformers' own errors point to it.
    import transformers

    from instructerc.modeling.backbone import BackboneConfig, load_causal_lm

    backbone = tiny_backbone(tmp_path / "backbone")
    config = json.loads((backbone / "config.json").read_text(encoding="utf-8"))
    (backbone / "config.json").write_text(json.dumps({**config, "hidden_size": 64}), encoding="utf-8")
    real = transformers.AutoModelForCausalLM.from_pretrained

    def failing(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("a failure after the report")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", failing)
    with caplog.at_level("WARNING"), pytest.raises(RuntimeError, match="after the report"):
        load_causal_lm(str(backbone), BackboneConfig(model=str(backbone)), "cpu", "float32")
    assert [record for record in caplog.records if "LOAD REPORT" in record.getMessage()]


def test_integer_weights_are_refused(model: Path, tmp_path: Path):
    import torch
    from safetensors.torch import load_file, save_file

    directory = copied(model, tmp_path)
    weights = load_file(directory / "model.safetensors")
    save_file({k: (v * 100).to(torch.int8) for k, v in weights.items()}, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"stored as integers \(first: .*, I8\) and config\.json names no quantization") as caught:
        load_model(directory, dtype="float32")
    assert Path(caught.value.path) == directory / "model.safetensors"


def test_weights_in_another_float_precision_still_load(model: Path, tmp_path: Path):
    from safetensors.torch import load_file, save_file

    from instructerc.inference.predictor import Predictor

    directory = copied(model, tmp_path)
    weights = load_file(directory / "model.safetensors")
    save_file({k: v.half() for k, v in weights.items()}, directory / "model.safetensors", metadata={"format": "pt"})
    [predictions] = Predictor.from_directory(directory, dtype="float32").predict([DIALOGUE])
    assert all(math.isclose(sum(p.scores.values()), 1, abs_tol=1e-5) for p in predictions)


# -- a model whose numbers overflow float16 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def overflowing(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with MLP weights so large that its activations pass float16's 65,504."""
    from safetensors.torch import load_file, save_file

    directory = Path(shutil.copytree(model, tmp_path_factory.mktemp("overflow") / "model"))
    weights = load_file(directory / "model.safetensors")
    scaled = {k: v * 2000 if k.split(".")[-2] in ("up_proj", "gate_proj", "down_proj") else v for k, v in weights.items()}
    save_file(scaled, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_an_overflow_in_float16_says_which_precision_to_use(overflowing: Path, mode: str):
    from instructerc.inference.predictor import Predictor

    predictor = Predictor.from_directory(overflowing, dtype="float16")
    with pytest.raises(InputError, match=r"overflow float16 .*bfloat16 or float32 \(--dtype\)") as caught:
        predictor.predict([DIALOGUE], mode=mode)
    assert caught.value.field == "dtype"


def test_the_same_model_in_float32_predicts_finite_probabilities(overflowing: Path):
    from instructerc.inference.predictor import Predictor

    [predictions] = Predictor.from_directory(overflowing, dtype="float32").predict([DIALOGUE])
    for prediction in predictions:
        assert all(math.isfinite(p) for p in prediction.scores.values())
        assert math.isclose(sum(prediction.scores.values()), 1, abs_tol=1e-5)


def test_a_live_turn_of_an_overflowing_model_is_refused_too(overflowing: Path):
    from instructerc.inference.incremental import ConversationCache
    from instructerc.inference.predictor import Predictor

    predictor = Predictor.from_directory(overflowing, dtype="float16")
    with pytest.raises(InputError, match="overflow float16"):
        predictor.predict_next(DIALOGUE, ConversationCache())


def test_nan_weights_in_float32_are_named_as_such(model: Path, tmp_path: Path):
    from instructerc.inference.predictor import Predictor

    predictor = Predictor.from_directory(copied(model, tmp_path), dtype="float32")
    import torch

    with torch.no_grad():
        predictor.model.model.norm.weight.fill_(float("nan"))
    with pytest.raises(InputError, match="NaN or infinite logits in float32: its weights may hold"):
        predictor.predict([DIALOGUE])


def test_head_probe_of_an_overflowing_model_answers_instead_of_failing(overflowing: Path):
    from instructerc.modeling.forward import head_is_plain

    loaded, _, _ = load_model(overflowing, dtype="float16")
    assert head_is_plain(loaded) is False
