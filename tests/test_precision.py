"""The precision policy: bf16 where the hardware has it (forced here both ways), float32 elsewhere,
in inference and in training; probabilities always float32; the training benchmark runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from instructerc.errors import InputError
from instructerc.labels.benchmarks import MELD
from instructerc.modeling import precision
from test_training import recipe
from tiny import tiny_backbone, tiny_model_dir

REPO = Path(__file__).resolve().parents[1]


def test_capabilities_decide_auto_on_a_cpu():
    assert precision.cpu_has_native_bf16({"avx512_bf16": True, "avx2": True})
    assert precision.cpu_has_native_bf16({"amx_bf16": True})
    assert not precision.cpu_has_native_bf16({"avx512_f": True, "avx512_bf16": False, "amx_tile": True})
    assert not precision.cpu_has_native_bf16({})


def test_cpu_without_native_bf16_stays_float32():
    assert precision.resolve_dtype("auto", "cpu") == "float32"
    assert precision.mixed_precision("auto", "cpu") == "no"
    assert precision.torch_dtype("auto", torch.device("cpu")) is torch.float32


@pytest.mark.native_bf16
def test_cpu_with_native_bf16_picks_bf16_and_explicit_choices_win():
    assert precision.resolve_dtype("auto", "cpu") == "bfloat16"
    assert precision.mixed_precision("auto", "cpu") == "bf16"
    assert precision.resolve_dtype("float32", "cpu") == "float32"
    assert precision.mixed_precision("float32", "cpu") == "no"
    # A device with no bf16 rule of its own is never guessed at.
    assert precision.resolve_dtype("auto", "meta") == "float32"


def test_unknown_dtype_is_an_input_error():
    with pytest.raises(InputError, match="unknown dtype"):
        precision.resolve_dtype("fp8", "cpu")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model"), MELD)


def _dialogue():
    from instructerc.data.dialogue import Dialogue, Utterance

    lines = [("Ann", "Hi! How are you?"), ("Bob", "Oh no, that is terrible."), ("Ann", "Great news!"), ("Cat", "I am fine, thanks.")]
    return Dialogue(id="d", dataset="meld", split="test", utterances=tuple(Utterance(speaker=s, text=t) for s, t in lines))


@pytest.mark.native_bf16
def test_predictor_runs_bf16_with_float32_probabilities(model_dir):
    from instructerc.inference.predictor import Predictor

    bf16 = Predictor.from_directory(model_dir, device="cpu")
    fp32 = Predictor.from_directory(model_dir, device="cpu", dtype="float32")
    assert (bf16.precision, fp32.precision) == ("bfloat16", "float32")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    low, high = bf16.predict([_dialogue()])[0], fp32.predict([_dialogue()])[0]
    for a, b in zip(low, high):
        assert all(isinstance(v, float) for v in a.scores.values())
        assert abs(sum(a.scores.values()) - 1) < 1e-3
        # bf16 keeps about 3 significant digits: the distributions stay close.
        assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 0.05


def test_predictor_without_native_bf16_is_float32(model_dir):
    from instructerc.inference.predictor import Predictor

    predictor = Predictor.from_directory(model_dir, device="cpu")
    assert predictor.precision == "float32"
    assert {p.dtype for p in predictor.model.parameters()} == {torch.float32}


def test_worker_threads_inherit_the_callers_autocast():
    from instructerc.inference.parallel import completed

    def probe(_item: int) -> tuple[bool, torch.dtype]:
        return torch.is_autocast_enabled("cpu"), (torch.ones(2, 2) @ torch.ones(2, 2)).dtype

    with torch.autocast("cpu", dtype=torch.bfloat16):
        seen = list(completed(probe, range(4), workers=2))
    assert seen == [(True, torch.bfloat16)] * 4
    assert list(completed(probe, range(2), workers=2)) == [(False, torch.float32)] * 2


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    return tiny_backbone(tmp_path_factory.mktemp("backbone"))


def _train(data: Path, backbone: Path, output: Path, method: str):
    from instructerc.evaluation.dev_scoring import predictor_dev_scoring
    from instructerc.training.trainer import Trainer

    config = recipe(data, backbone, output, finetune__method=method, stages=[{"tasks": {"erc": 1.0}, "epochs": 1}])
    trainer = Trainer(config, progress=False, dev_scoring=predictor_dev_scoring)
    captured = {}
    original = trainer._step

    def step(model, optimizer, *rest):
        captured["trainable"] = {p.dtype for p in model.parameters() if p.requires_grad}
        captured["frozen"] = {p.dtype for p in model.parameters() if not p.requires_grad}
        captured["optimizer"] = {
            t.dtype for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t) and t.dim() > 0
        }
        return original(model, optimizer, *rest)

    trainer._step = step
    result = trainer.run()
    events = [json.loads(line) for line in (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return result, captured, events


@pytest.mark.native_bf16
@pytest.mark.parametrize("method", ["lora", "full"])
def test_training_in_bf16_keeps_trainable_weights_and_optimizer_float32(tiny_data, backbone, tmp_path, method):
    result, captured, events = _train(tiny_data, backbone, tmp_path / "run", method)
    assert captured["trainable"] == {torch.float32}
    assert captured["optimizer"] <= {torch.float32}
    if method == "lora":
        assert captured["frozen"] == {torch.bfloat16}  # the frozen base is stored in the compute type
    start = next(e for e in events if e["event"] == "start")
    assert (start["precision"], start["trainable_precision"]) == ("bfloat16", "float32")
    assert all(e["loss"] == e["loss"] for e in events if e["event"] == "step")  # no NaN
    assert json.loads((result.model_dir / "dev_metrics.json").read_text())["precision"] == "bfloat16"
    assert "precision: bfloat16 matrix products" in (result.model_dir / "README.md").read_text(encoding="utf-8")


def test_training_without_native_bf16_is_float32(tiny_data, backbone, tmp_path):
    result, captured, events = _train(tiny_data, backbone, tmp_path / "run", "lora")
    assert captured["trainable"] == captured["frozen"] == {torch.float32}
    assert next(e for e in events if e["event"] == "start")["precision"] == "float32"
    assert "precision: float32 matrix products" in (result.model_dir / "README.md").read_text(encoding="utf-8")


def test_causal_sdpa_equals_masked_sdpa_on_chain_rows_and_falls_back_on_trees(backbone):
    from instructerc.modeling.backbone import BackboneConfig, load_causal_lm
    from instructerc.modeling.forward import kept_logits
    from instructerc.modeling.packing import pack, row_tensors
    from instructerc.modeling.sparse_attention import causal_rows, use_causal_sdpa_attention

    chain = [[5, 6, 7, 8], [5, 6, 7, 8, 9, 10, 11]]  # each a prefix of the next: one chain per row
    other = [[5, 6, 7, 12, 13, 14, 15, 16]]
    rows = [row for row, _ in pack(chain, 64)] + [row for row, _ in pack(other, 64)]
    ids, positions, mask = row_tensors(rows, 0)
    assert causal_rows(mask)
    tree_rows = [row for row, _ in pack(chain + other, 64)]
    assert not causal_rows(row_tensors(tree_rows, 0)[2])

    keep = torch.arange(ids.shape[1])
    plain = load_causal_lm(str(backbone), BackboneConfig(model=str(backbone)), "cpu", "float32")
    fast = load_causal_lm(str(backbone), BackboneConfig(model=str(backbone)), "cpu", "float32")
    assert use_causal_sdpa_attention(fast)
    real = torch.zeros(ids.shape, dtype=torch.bool)
    for b, row in enumerate(rows):
        real[b, : len(row)] = True
    outputs = []
    for model in (plain, fast):
        logits = kept_logits(model, ids, mask, positions, keep)
        logits[real].float().square().mean().backward()
        outputs.append((logits[real].detach(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    torch.testing.assert_close(outputs[0][0], outputs[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs[0][1], outputs[1][1], atol=1e-5, rtol=1e-4)


def test_training_benchmark_runs_its_smallest_configuration(data_root, backbone, tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import train_throughput
    finally:
        sys.path.pop(0)
    out = tmp_path / "train.json"
    train_throughput.main(
        [
            "--data",
            str(data_root),
            "--model",
            str(backbone),
            "--templates",
            "dialogue-stream",
            "--dtypes",
            "bfloat16",
            "--variants",
            "trainer",
            "ours",
            "--dialogues",
            "2",
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--json",
            str(out),
        ]
    )
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["arguments"]["dialogues"] == 2 and result["arguments"]["variants"] == ["trainer", "ours"]
    assert not {"json", "variant", "template", "dtype"} & set(result["arguments"])
    assert {"cpu_model", "torch", "torch_threads"} <= set(result["machine"])
    assert set(result["peaks_flops_per_s"]) == {"float32", "bfloat16"}
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {"trainer", "ours"}
    for row in rows.values():
        assert row["steps"] == 1 and row["data_tokens_per_s"] > 0 and row["computed_tokens_per_s"] > 0 and 0 < row["mfu"]


def test_training_benchmark_profiles_our_steps_by_operator_in_both_precisions(data_root, backbone, tmp_path, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import train_throughput
    finally:
        sys.path.pop(0)
    out = tmp_path / "profile.json"
    options = ["--data", str(data_root), "--model", str(backbone), "--templates", "dialogue-stream", "--variants", "ours"]
    train_throughput.main(options + ["--dialogues", "2", "--steps", "1", "--batch-size", "2", "--profile-steps", "2", "--json", str(out)])
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert {row["dtype"] for row in rows} == {"float32", "bfloat16"}
    for row in rows:
        ops = row["ops"]
        assert ops["wall_seconds_per_step"] > 0 and ops["self_seconds_per_step"]["aten::mm"] > 0
    printed = capsys.readouterr().out
    assert "dialogue-stream ours: seconds per step by operator" in printed
    assert "if only they were faster, bf16 would be" in printed
