"""Malformed recipes, resuming under a changed config, and damaged checkpoints: one clear line each."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from instructerc.errors import InputError
from instructerc.evaluation.dev_scoring import predictor_dev_scoring
from instructerc.training.checkpoint import (
    TrainState,
    check_resumable,
    config_differences,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from instructerc.training.config import TrainConfig
from instructerc.training.trainer import Trainer
from test_training import recipe


# -- malformed recipes ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ("optim: 5", "int 5"),
        ("optim: [[lr, 0.1]]", "list [['lr', 0.1]]"),
        ("optim: lr", "str 'lr'"),
        ("finetune:\n  lora: [1, 2]", "list [1, 2]"),
    ],
    ids=["number", "list-of-pairs", "string", "nested-list"],
)
def test_a_section_that_is_not_a_mapping_is_one_line_naming_the_key(run_cli, tmp_path: Path, section: str, fragment: str) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(section + "\n", encoding="utf-8")
    key = "finetune.lora" if "lora" in section else "optim"

    with pytest.raises(InputError, match="expected a section of keys") as error:
        TrainConfig.from_yaml(path)
    assert error.value.field == key and error.value.path == str(path) and fragment in error.value.message

    result = run_cli("train", path)
    assert result.code == 2 and result.out == ""
    [line] = result.err.splitlines()
    assert f"field '{key}'" in line and str(path) in line


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("optim:\n  lr: -1\n", "optim.lr"),
        ("optim:\n  lr: .nan\n", "optim.lr"),
        ("optim:\n  lr: .inf\n", "optim.lr"),
        ("optim:\n  betas: [0.9, 1.5]\n", "optim.betas"),
        ("optim:\n  weight_decay: -0.1\n", "optim.weight_decay"),
        ("optim:\n  max_grad_norm: 0\n", "optim.max_grad_norm"),
        ("finetune:\n  lora:\n    dropout: 1.0\n", "finetune.lora.dropout"),
        ("stages:\n  - tasks: {erc: 1.0}\n    epochs: .nan\n", "stages[0].epochs"),
        ("stages:\n  - tasks: {erc: 1.0}\n  - tasks: {erc: .nan}\n", "stages[1].tasks.erc"),
        ("stages:\n  - tasks: {erc: 1.0}\n  - tasks: {}\n", "stages[1].tasks"),
        ("packing:\n  max_tokens: 0\n", "packing.max_tokens"),
        ("checkpoint_every_steps: 0\n", "checkpoint_every_steps"),
        ("data:\n  max_dev_dialogues: -3\n", "data.max_dev_dialogues"),
    ],
)
def test_a_value_out_of_range_is_refused_before_any_training(tmp_path: Path, text: str, field: str) -> None:
    # NaN compares false with everything: a check written as "refuse if bad" lets it through.
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(InputError) as error:
        TrainConfig.from_yaml(path)
    assert error.value.field == field


def test_set_into_a_key_that_is_not_a_section_is_one_line(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("optim: 5\n", encoding="utf-8")

    result = run_cli("train", path, "--set", "optim.lr=0.1")

    assert result.code == 2
    [line] = result.err.splitlines()
    assert "field 'optim'" in line and "--set optim.lr" in line


def test_force_needs_resume(run_cli, tmp_path: Path) -> None:
    result = run_cli("train", tmp_path / "recipe.yaml", "--force")
    assert result.code == 2 and "--force only applies with --resume" in result.err


# -- resuming under another config ------------------------------------------------------------------
def test_config_differences_name_every_changed_leaf() -> None:
    old = {"optim": {"lr": 0.02, "batch_size": 8}, "seed": 1, "stages": [{"epochs": 2}]}
    new = {"optim": {"lr": 0.01, "batch_size": 8}, "seed": 1, "stages": [{"epochs": 3}], "extra": True}

    assert config_differences(old, new) == [
        "optim.lr: 0.02 -> 0.01",
        "stages: [{'epochs': 2}] -> [{'epochs': 3}]",
        "extra: (absent) -> True",
    ]
    assert config_differences(old, old) == []


def test_resume_with_a_changed_config_is_refused_unless_forced(tiny_data: Path, backbone: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    Trainer(recipe(tiny_data, backbone, run), progress=False, dev_scoring=predictor_dev_scoring, stop_after_steps=5).run()
    saved = (run / "config.yaml").read_bytes()
    changed = recipe(tiny_data, backbone, run, optim__lr=0.01)

    with pytest.raises(InputError) as error:
        Trainer(changed, progress=False, dev_scoring=predictor_dev_scoring).run(resume=True)
    assert "optim.lr: 0.02 -> 0.01" in str(error.value) and "--force" in str(error.value) and error.value.path == str(run / "config.yaml")
    assert (run / "config.yaml").read_bytes() == saved, "the record of the first config is untouched"
    assert latest_checkpoint(run / "checkpoints").name == "step-0000005"

    # The same config resumes without a word; --force resumes a changed one and records it.
    assert check_resumable(run / "config.yaml", recipe(tiny_data, backbone, run).to_dict()) == []
    assert check_resumable(run / "config.yaml", recipe(tiny_data, backbone, run, checkpoint_every_steps=50).to_dict()) == []
    result = Trainer(changed, progress=False, dev_scoring=predictor_dev_scoring, force=True).run(resume=True)
    assert result.best_step is not None
    assert yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["optim"]["lr"] == 0.01


# -- checkpoints ------------------------------------------------------------------------------------
class _Stub:
    def state_dict(self) -> dict:
        return {"step": 1}


def _save(directory: Path, step: int) -> None:
    import torch

    save_checkpoint(directory / f"step-{step:07d}", TrainState(global_step=step), {"w": torch.ones(2) * step}, _Stub(), _Stub())


@pytest.mark.parametrize(
    ("damage", "file", "fragment"),
    [
        (lambda d: (d / "trainable.pt").write_bytes((d / "trainable.pt").read_bytes()[:100]), "trainable.pt", "corrupt checkpoint file"),
        (lambda d: (d / "optim.pt").write_bytes(b"\x00" * 64), "optim.pt", "corrupt checkpoint file"),
        (lambda d: (d / "state.json").write_text('{"stage": ', encoding="utf-8"), "state.json", "corrupt checkpoint file"),
        (lambda d: (d / "state.json").write_text('{"no_such_field": 1}', encoding="utf-8"), "state.json", "corrupt checkpoint file"),
        (lambda d: (d / "optim.pt").unlink(), None, "partial checkpoint: optim.pt is missing"),
    ],
    ids=["truncated-weights", "garbage-optimizer", "truncated-state", "foreign-state", "missing-file"],
)
def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path: Path, damage, file: str | None, fragment: str) -> None:
    _save(tmp_path, 5)
    checkpoint = tmp_path / "step-0000005"
    damage(checkpoint)

    with pytest.raises(InputError, match=fragment) as error:
        load_checkpoint(checkpoint)
    assert error.value.path == str(checkpoint / file if file else checkpoint)
    assert "\n" not in str(error.value) and "delete step-0000005" in str(error.value)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    _save(tmp_path, 5)
    real_save = torch.save
    calls = []

    def failing_save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 10)
    monkeypatch.setattr(torch, "save", real_save)

    assert latest_checkpoint(tmp_path) == tmp_path / "step-0000005"
    assert not (tmp_path / "step-0000010").exists()
    state, weights, _ = load_checkpoint(tmp_path / "step-0000005")
    assert state.global_step == 5 and weights["w"].tolist() == [5.0, 5.0]

    _save(tmp_path, 5)  # saving the same step again replaces it whole
    assert load_checkpoint(tmp_path / "step-0000005")[0].global_step == 5
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["step-0000005"]


def test_a_key_added_to_the_recipe_format_since_the_run_started_is_not_a_change(tmp_path: Path) -> None:
    import yaml

    from instructerc.training.checkpoint import check_resumable
    from instructerc.training.config import TrainConfig

    current = TrainConfig().to_dict()
    older = {key: value for key, value in current.items() if key != "distributed"}
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(older), encoding="utf-8")
    assert check_resumable(saved, current, defaults=TrainConfig().to_dict()) == []
    fsdp = {**current, "distributed": {"strategy": "fsdp", "reshard_after_forward": True}}
    with pytest.raises(InputError, match="distributed.strategy: 'ddp' -> 'fsdp'"):
        check_resumable(saved, fsdp, defaults=TrainConfig().to_dict())


def test_a_sharded_checkpoint_without_its_metadata_is_partial(tmp_path: Path) -> None:
    from instructerc.training.checkpoint import SHARDED_DIR, begin_checkpoint, commit_checkpoint

    target = tmp_path / "step-0000003"
    staging = begin_checkpoint(target)
    (staging / SHARDED_DIR).mkdir()
    (staging / SHARDED_DIR / "__0_0.distcp").write_bytes(b"shard")
    commit_checkpoint(staging, target, TrainState(global_step=3), _Stub())
    assert not (target / "trainable.pt").exists()
    with pytest.raises(InputError, match="partial checkpoint: sharded/.metadata is missing"):
        load_checkpoint(target)
    (target / SHARDED_DIR / ".metadata").write_bytes(b"meta")
    state, weights, optim = load_checkpoint(target)
    assert state.global_step == 3 and weights is None and set(optim) == {"scheduler", "rng"}
