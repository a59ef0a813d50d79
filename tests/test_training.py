"""Training with tiny models: parameters move, loss falls, resume is exact, DDP runs, outputs are complete."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from instructerc.config import from_mapping
from instructerc.evaluation.dev_scoring import predictor_dev_scoring
from instructerc.training.config import TrainConfig
from instructerc.training.trainer import Trainer


def recipe(tiny_data: Path, backbone: Path, output: Path, **changes) -> TrainConfig:
    data = {
        "data": {"dataset": "jsonl", "path": str(tiny_data), "label_set": "meld"},
        "backbone": {"model": str(backbone)},
        "template": {"name": "dialogue-prefix", "demonstration": False},
        "finetune": {"method": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}},
        "optim": {"lr": 0.02, "batch_size": 8, "micro_batch_size": 3, "warmup_ratio": 0.0},
        "stages": [{"tasks": {"erc": 1.0, "emotion_prediction": 0.5}, "epochs": 2}],
        "checkpoint_every_steps": 5,
        "output_dir": str(output),
    }
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    if data["finetune"].get("method") == "full":  # full fine-tuning takes no LoRA settings
        data["finetune"].pop("lora", None)
    return from_mapping(TrainConfig, data)


def training_loss(config: TrainConfig, model) -> float:
    """Mean target loss of the first stage's examples under ``model``."""
    from transformers import AutoTokenizer

    from instructerc.data.registry import label_set_of, load_dialogues
    from instructerc.modeling.forward import example_losses
    from instructerc.prompts.encoding import SegmentTokenizer
    from instructerc.prompts.setup import PromptSetup
    from instructerc.training.batches import collate

    trainer = Trainer(config, progress=False, dev_scoring=predictor_dev_scoring)
    train = load_dialogues(config.data.source(), "train")
    setup = PromptSetup(config.template, label_set_of(config.data.source()), config.max_length, config.retrieval)
    tokenizer = AutoTokenizer.from_pretrained(config.backbone.model)
    examples = trainer._stage_examples(0, train, setup, {}, SegmentTokenizer(tokenizer))
    model.eval()
    with torch.no_grad():
        batch = collate(examples, tokenizer.pad_token_id, 4096, True)
        return float(example_losses(model, batch).mean())


@pytest.mark.parametrize("method", ["lora", "full"])
def test_every_trainable_parameter_changes_and_loss_falls(tiny_data, backbone, tmp_path, method):
    from instructerc.modeling.backbone import load_causal_lm
    from instructerc.modeling.finetune import make_trainable

    config = recipe(tiny_data, backbone, tmp_path / "run", finetune__method=method)
    torch.manual_seed(0)
    before_model = make_trainable(load_causal_lm(str(backbone), config.backbone), method, config.finetune.lora)
    before = {n: p.detach().clone() for n, p in before_model.named_parameters() if p.requires_grad}
    loss_before = training_loss(config, before_model)

    trainer = Trainer(config, progress=False, dev_scoring=predictor_dev_scoring)
    result = trainer.run()
    assert result.best_step is not None

    # Rebuild the trained model from the run's best weights and compare every trainable tensor.
    from instructerc.modeling.finetune import load_trainable_state

    torch.manual_seed(0)
    after_model = make_trainable(load_causal_lm(str(backbone), config.backbone), method, config.finetune.lora)
    load_trainable_state(after_model, torch.load(tmp_path / "run" / "best" / "trainable.pt", weights_only=True))
    after = {n: p.detach() for n, p in after_model.named_parameters() if p.requires_grad}
    assert set(after) == set(before) and after
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert unchanged == [], f"parameters that did not train: {unchanged}"
    assert training_loss(config, after_model) < loss_before


def test_resume_after_a_checkpoint_gives_the_same_weights(tiny_data, backbone, tmp_path):
    whole = recipe(tiny_data, backbone, tmp_path / "whole")
    Trainer(whole, progress=False, dev_scoring=predictor_dev_scoring).run()

    interrupted = recipe(tiny_data, backbone, tmp_path / "interrupted")
    Trainer(interrupted, progress=False, dev_scoring=predictor_dev_scoring, stop_after_steps=7).run()  # checkpoint at step 5, "killed" at 7
    assert sorted(p.name for p in (tmp_path / "interrupted" / "checkpoints").iterdir()) == ["step-0000005"]
    torch.manual_seed(12345)  # whatever the process did since must not matter: resume restores RNG
    random.seed(12345)
    Trainer(interrupted, progress=False, dev_scoring=predictor_dev_scoring).run(resume=True)

    from safetensors.torch import load_file

    a = load_file(tmp_path / "whole" / "model" / "adapter_model.safetensors")
    b = load_file(tmp_path / "interrupted" / "model" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps_whole = [
        json.loads(text)["loss"] for text in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines() if '"event": "step"' in text
    ]
    steps_resumed = [
        json.loads(text) for text in (tmp_path / "interrupted" / "metrics.jsonl").read_text().splitlines() if '"event": "step"' in text
    ]
    # Steps 6-7 ran twice (before the "kill" and after resuming); the last losses must match the whole run.
    assert [s["loss"] for s in steps_resumed][-len(steps_whole) + 5 :] == steps_whole[5:]


def test_a_run_directory_with_checkpoints_needs_resume(tiny_data, backbone, tmp_path):
    from instructerc.errors import InputError

    config = recipe(tiny_data, backbone, tmp_path / "run")
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring, stop_after_steps=5).run()
    with pytest.raises(InputError, match="--resume"):
        Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()


def test_a_finished_run_is_never_trained_over(tiny_data, backbone, tmp_path):
    from instructerc.errors import InputError

    config = recipe(tiny_data, backbone, tmp_path / "run", checkpoint_every_steps=1000)
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()
    model = tmp_path / "run" / "model"
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    # A short run keeps no checkpoint; neither a new run nor --resume may replace its model.
    for resume in (False, True):
        with pytest.raises(InputError, match="trained model|has finished"):
            Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run(resume=resume)
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before


def test_resuming_a_finished_run_is_refused_unless_the_recipe_asks_for_more(tiny_data, backbone, tmp_path):
    from instructerc.errors import InputError

    config = recipe(tiny_data, backbone, tmp_path / "run")  # checkpoints every 5 steps, so some are kept
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()
    model = tmp_path / "run" / "model"
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    with pytest.raises(InputError, match="has finished .*nothing to resume.*--resume --force"):
        Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run(resume=True)
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    longer = recipe(tiny_data, backbone, tmp_path / "run", stages=[{"tasks": {"erc": 1.0, "emotion_prediction": 0.5}, "epochs": 3}])
    result = Trainer(longer, progress=False, force=True, dev_scoring=predictor_dev_scoring).run(resume=True)
    assert result.global_step > 0 and (model / "instructerc.json").is_file()


def test_model_directory_holds_what_inference_needs(tiny_data, backbone, tmp_path):
    from instructerc.data.registry import load_dialogues
    from instructerc.inference.predictor import Predictor

    config = recipe(
        tiny_data, backbone, tmp_path / "run", stages=[{"tasks": {"speaker": 1.0}, "epochs": 1}, {"tasks": {"erc": 1.0}, "epochs": 1}]
    )
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring).run()
    model = tmp_path / "run" / "model"
    names = {p.name for p in model.iterdir()}
    assert {
        "instructerc.json",
        "prompting.json",
        "adapter_model.safetensors",
        "adapter_config.json",
        "README.md",
        "dev_metrics.json",
        "training_config.yaml",
    } <= names
    assert not {"checkpoints", "metrics.jsonl", "best", "trainable.pt"} & names
    assert model.stat().st_mode & 0o777 == 0o755 and all(p.stat().st_mode & 0o777 == 0o644 for p in model.iterdir())
    card = (model / "README.md").read_text()
    assert "dev" in card.lower() and "speaker" in card
    predictor = Predictor.from_directory(model)
    dev = load_dialogues(config.data.source(), "dev")
    predictions = predictor.predict(dev[:2])
    assert all(p.label in predictor.label_set.labels for ps in predictions for p in ps)


def test_ddp_two_processes_on_cpu(tiny_data, backbone, tmp_path):
    import yaml

    from instructerc.config import to_mapping

    config = recipe(tiny_data, backbone, tmp_path / "run", stages=[{"tasks": {"erc": 1.0}, "epochs": 1}])
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(to_mapping(config)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "instructerc",
        "train",
        str(recipe_file),
        "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["processes"] == 2
    steps = [r for r in log if r["event"] == "step"]
    assert steps and all(r["examples"] == 8 for r in steps[:-1]) and 2 <= steps[-1]["examples"] <= 8
    assert (tmp_path / "run" / "model" / "adapter_model.safetensors").is_file()
    assert done.stdout.count("model written to") == 1


def test_packed_and_unpacked_losses_agree(tiny_data, backbone, tmp_path):
    from transformers import AutoTokenizer

    from instructerc.data.registry import label_set_of, load_dialogues
    from instructerc.modeling.backbone import load_causal_lm
    from instructerc.modeling.forward import example_losses
    from instructerc.prompts.encoding import SegmentTokenizer
    from instructerc.prompts.setup import PromptSetup
    from instructerc.training.batches import collate

    config = recipe(tiny_data, backbone, tmp_path / "run", template={"name": "instructerc", "demonstration": False, "window": 2})
    model = load_causal_lm(str(backbone), config.backbone).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(backbone))
    train = load_dialogues(config.data.source(), "train")
    setup = PromptSetup(config.template, label_set_of(config.data.source()), config.max_length, config.retrieval)
    examples = Trainer(config, progress=False, dev_scoring=predictor_dev_scoring)._stage_examples(
        0, train, setup, {}, SegmentTokenizer(tokenizer)
    )[:20]
    with torch.no_grad():
        packed = collate(examples, tokenizer.pad_token_id, 4096, True)
        alone = collate(examples, tokenizer.pad_token_id, 4096, False)
        assert packed.tokens < alone.tokens  # the shared prefixes were computed once
        torch.testing.assert_close(example_losses(model, packed), example_losses(model, alone), atol=1e-5, rtol=1e-5)


def test_every_shipped_recipe_validates():
    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
    assert recipes, "no recipes shipped"
    for path in recipes:
        config = TrainConfig.from_yaml(path)
        assert config.stages and config.optim.batch_size >= 1, path


def test_deepspeed_is_refused_clearly_and_fsdp1_too():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from instructerc.errors import InputError
    from instructerc.training.fsdp import settings_for
    from instructerc.training.trainer import check_distributed_type

    for supported in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU, DistributedType.FSDP):
        check_distributed_type(SimpleNamespace(distributed_type=supported))
    with pytest.raises(InputError, match="not supported"):
        check_distributed_type(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED))
    fsdp1 = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=1)))
    with pytest.raises(InputError, match="fsdp_version: 2"):
        settings_for(fsdp1, "bfloat16", True)


def test_fsdp_settings_come_from_accelerates_plugin_when_launched_with_it(capsys):
    from types import SimpleNamespace

    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

    from instructerc.training.fsdp import FsdpSettings, settings_for

    assert settings_for(SimpleNamespace(state=SimpleNamespace()), "float32", False) == FsdpSettings(reshard_after_forward=False)
    plugin = SimpleNamespace(
        fsdp_version=2, reshard_after_forward=False, cpu_offload=CPUOffloadPolicy(), transformer_cls_names_to_wrap=["LlamaDecoderLayer"]
    )
    settings = settings_for(SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)), "bfloat16", True)
    expected = FsdpSettings(reshard_after_forward=False, param_dtype="bfloat16", cpu_offload=True, block_classes=("LlamaDecoderLayer",))
    assert settings == expected
    plugin.cpu_offload = OffloadPolicy()
    assert not settings_for(SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)), "bfloat16", True).cpu_offload
    assert "not applied" not in capsys.readouterr().out
    plugin.activation_checkpointing = True
    settings_for(SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin), is_main_process=True), "bfloat16", True)
    assert "not applied by this trainer: fsdp_activation_checkpointing" in capsys.readouterr().out


def test_per_dataset_subset_keeps_every_dataset_and_is_seeded():
    from instructerc.data.dialogue import Dialogue, Utterance
    from instructerc.data.sampling import per_dataset_subset

    dev = [
        Dialogue(f"{name}{i}", name, "dev", (Utterance("A", "hi"),))
        for name, count in (("meld", 100), ("iemocap", 3))
        for i in range(count)
    ]
    kept = per_dataset_subset(dev, 10, seed=7)
    assert sum(d.dataset == "meld" for d in kept) == 10
    assert sum(d.dataset == "iemocap" for d in kept) == 3
    assert [d.id for d in kept] == [d.id for d in per_dataset_subset(dev, 10, seed=7)]
    assert [d.id for d in kept] != [d.id for d in per_dataset_subset(dev, 10, seed=8)]
    assert kept == [d for d in dev if d in kept]  # original order


def test_a_run_without_dev_scoring_is_refused_before_any_work(tmp_path):
    # Dev scoring is injected (training may not import inference); without it no checkpoint could be selected.
    config = TrainConfig(output_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="dev_scoring"):
        Trainer(config, progress=False).run()
    assert not (tmp_path / "run").exists()


def test_a_run_can_start_from_a_trained_adapter_and_refuses_one_of_another_shape(tiny_data, backbone, tmp_path):
    from peft.utils import load_peft_weights

    from instructerc.errors import InputError
    from instructerc.modeling.backbone import load_causal_lm
    from instructerc.modeling.finetune import make_trainable

    first = recipe(tiny_data, backbone, tmp_path / "first")
    Trainer(first, progress=False, dev_scoring=predictor_dev_scoring).run()
    saved = load_peft_weights(str(tmp_path / "first" / "model"), device="cpu")
    assert saved and any(torch.count_nonzero(t) for name, t in saved.items() if "lora_B" in name)

    # The second run's adapters start as the first run's trained ones, not at zero (lora_B is zero-initialised).
    started = make_trainable(load_causal_lm(str(backbone), first.backbone), "lora", first.finetune.lora, str(tmp_path / "first" / "model"))
    weights = {name: p for name, p in started.named_parameters() if p.requires_grad}
    for name, tensor in saved.items():
        match = [w for n, w in weights.items() if n.replace(".default", "") == name]
        assert len(match) == 1, name
        assert torch.equal(match[0].detach(), tensor.to(match[0].dtype))

    # A whole run started there trains, and its card says where it started.
    second = recipe(
        tiny_data,
        backbone,
        tmp_path / "second",
        finetune__init_adapter=str(tmp_path / "first" / "model"),
        stages=[{"tasks": {"erc": 1.0}, "epochs": 1}],
    )
    Trainer(second, progress=False, dev_scoring=predictor_dev_scoring).run()
    assert "started from the adapter" in (tmp_path / "second" / "model" / "README.md").read_text()

    other_rank = recipe(
        tiny_data, backbone, tmp_path / "third", finetune__lora__r=8, finetune__init_adapter=str(tmp_path / "first" / "model")
    )
    with pytest.raises(InputError, match=r"finetune.init_adapter.*r 4 \(the recipe has 8\)"):
        make_trainable(
            load_causal_lm(str(backbone), other_rank.backbone), "lora", other_rank.finetune.lora, other_rank.finetune.init_adapter
        )
    with pytest.raises(InputError, match="no adapter_config.json"):
        make_trainable(load_causal_lm(str(backbone), first.backbone), "lora", first.finetune.lora, str(tmp_path))
    with pytest.raises(InputError, match="finetune.init_adapter"):
        recipe(tiny_data, backbone, tmp_path / "full", finetune__method="full", finetune__init_adapter=str(tmp_path / "first" / "model"))

    # The shipped adapter belongs to the embedded backbone: refused before any model loads (it
    # was refused only after loading, by the adapter's shapes, or not at all for a same-shaped one).
    shipped = recipe(tiny_data, backbone, tmp_path / "fourth", finetune__init_adapter="default")
    with pytest.raises(InputError, match="trained on the backbone 'SmolLM2-135M-Instruct'") as error:
        Trainer(shipped, progress=False, dev_scoring=predictor_dev_scoring).run()
    assert error.value.field == "finetune.init_adapter"
    assert not (tmp_path / "fourth").exists()
