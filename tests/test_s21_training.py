"""Training probes: recipe errors named by their full key, a resume that reads its checkpoint's
state once, a run directory another run is training in, and a checkpoint taken in a stage the
recipe no longer has (tiny models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from instructerc.errors import InputError
from instructerc.evaluation.dev_scoring import predictor_dev_scoring
from instructerc.training.config import TrainConfig
from instructerc.training.run_directory import run_lock
from instructerc.training.trainer import Trainer
from tiny import write_tiny_base


def base(root: Path, **sections: dict) -> Path:
    return write_tiny_base(root, {"train": 8, "dev": 3}, optim={"batch_size": 4, "micro_batch_size": 4}, **sections)


def trainer(recipe: Path, run: Path, **overrides: Any) -> Trainer:
    config = TrainConfig.from_yaml(recipe, {"output_dir": str(run), "checkpoint_every_steps": 1, **overrides})
    return Trainer(config, progress=False, dev_scoring=predictor_dev_scoring)


def stopped(recipe: Path, run: Path, steps: int, **overrides: Any) -> None:
    config = TrainConfig.from_yaml(recipe, {"output_dir": str(run), "checkpoint_every_steps": 1, **overrides})
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring, stop_after_steps=steps).run()
    assert any((run / "checkpoints").glob("step-*"))


def without_data_path(tmp_path: Path) -> Path:
    recipe = base(tmp_path)
    data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    del data["data"]["path"]
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    return recipe


def test_a_recipe_without_a_data_path_names_data_path(tmp_path: Path, no_model_loads) -> None:
    # The data source's error named "field 'path'", a key no recipe has.
    recipe = without_data_path(tmp_path)
    with pytest.raises(InputError, match="no data path for 'jsonl': set data.path in the recipe, or pass --data") as caught:
        trainer(recipe, tmp_path / "run").run()
    assert caught.value.field == "data.path"
    assert not (tmp_path / "run").exists()  # a refused run leaves no folder behind


def test_the_cli_says_data_path_for_a_recipe_without_one(tmp_path: Path, run_cli, no_model_loads) -> None:
    result = run_cli("train", without_data_path(tmp_path), "--output", tmp_path / "run", "--no-progress")
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert result.err.startswith("instructerc: error: field 'data.path': no data path for 'jsonl'")


@pytest.mark.parametrize("path", ["", "   "])
def test_an_empty_data_path_in_a_recipe_is_refused_with_its_line(tmp_path: Path, path: str) -> None:
    # An empty path read as none at all, and the run was refused later as "no data path".
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data:\n  dataset: jsonl\n  path: '{path}'\n", encoding="utf-8")
    with pytest.raises(InputError, match="an empty path") as caught:
        TrainConfig.from_yaml(recipe)
    assert caught.value.field == "data.path" and caught.value.line == 3


def test_a_resume_reads_the_checkpoints_state_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # It was read to compare the data, then again to restore: a file changed in between gave the
    # two parts of the resume different states.
    recipe = base(tmp_path)
    run = tmp_path / "run"
    stopped(recipe, run, steps=2)
    reads: list[Path] = []
    read_text = Path.read_text

    def counted(self: Path, *args: Any, **kwargs: Any) -> str:
        if self.name == "state.json":
            reads.append(self)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    result = trainer(recipe, run).run(resume=True)
    assert result.global_step > 2
    assert [path.parent.name for path in reads] == ["step-0000002"]


def test_a_damaged_state_is_refused_before_the_data_and_model_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = base(tmp_path)
    run = tmp_path / "run"
    stopped(recipe, run, steps=1)
    (state,) = run.glob("checkpoints/step-*/state.json")
    state.write_text("{not json", encoding="utf-8")
    monkeypatch.setattr(Trainer, "_data", lambda self: pytest.fail("the data was read before the checkpoint was checked"))
    with pytest.raises(InputError, match="corrupt checkpoint file") as caught:
        trainer(recipe, run).run(resume=True)
    assert caught.value.path == str(state)


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_directory_another_run_is_training_in_is_refused(tmp_path: Path, resume: bool) -> None:
    # Two runs on one folder both trained: the second set the first's log aside mid-run, both
    # appended to one log and wrote one best/ and model/, each over the other's.
    recipe = base(tmp_path)
    run = tmp_path / "run"
    if resume:
        stopped(recipe, run, steps=1)
    with run_lock(run):  # the other run, holding the folder
        with pytest.raises(InputError, match="another run is training in this folder") as caught:
            trainer(recipe, run).run(resume=resume)
    assert caught.value.path == str(run) and caught.value.field == "output_dir"
    result = trainer(recipe, run).run(resume=resume)  # the other run has ended
    assert (result.model_dir / "instructerc.json").is_file()


def test_the_cli_refuses_a_run_directory_in_use_in_one_line(tmp_path: Path, run_cli) -> None:
    recipe = base(tmp_path)
    run = tmp_path / "run"
    with run_lock(run):
        result = run_cli("train", recipe, "--output", run, "--no-progress")
        assert list(run.iterdir()) == []  # nothing of the refused run in the other's folder
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert result.err.startswith(f"instructerc: error: {run}: field 'output_dir': another run is training in this folder")


def test_a_lock_on_a_folder_it_made_leaves_no_folder_behind(tmp_path: Path) -> None:
    run = tmp_path / "a" / "b" / "run"
    with run_lock(run):
        assert run.is_dir()
    assert not (tmp_path / "a").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with run_lock(kept):
        pass
    assert kept.is_dir()


def test_a_checkpoint_in_a_stage_the_recipe_dropped_is_refused_under_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A run stopped in stage 2, resumed under --force with the recipe's one stage: the checkpoint's
    # stage was not refused (only one past it was), every stage was skipped and the run finished
    # with exit 0, training nothing more.
    recipe = base(tmp_path)
    run = tmp_path / "run"
    two_stages = [{"tasks": {"erc": 1.0}, "epochs": 0.01}, {"tasks": {"erc": 1.0}, "epochs": 1}]  # stage 1: one step
    stopped(recipe, run, steps=2, stages=two_stages)
    (state,) = run.glob("checkpoints/step-*/state.json")
    assert json.loads(state.read_text(encoding="utf-8"))["stage"] == 1
    monkeypatch.setattr(Trainer, "_data", lambda self: pytest.fail("the data was read before the checkpoint was checked"))
    config = TrainConfig.from_yaml(recipe, {"output_dir": str(run), "checkpoint_every_steps": 1})
    with pytest.raises(InputError, match=r"recipe has 1 stage\(s\), so the stage it was taken in \(stage 2\) is not in") as caught:
        Trainer(config, progress=False, force=True, dev_scoring=predictor_dev_scoring).run(resume=True)
    assert caught.value.path == str(state) and caught.value.field == "stage"
    assert not (run / "model").exists()


def test_a_run_directory_held_by_another_process_is_free_once_that_process_is_killed(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = tmp_path / "run"
    holder = "import sys; from pathlib import Path; from instructerc.training.run_directory import run_lock\n"
    holder += "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    sys.stdin.read()\n"
    process = subprocess.Popen([sys.executable, "-c", holder, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "held\n"
        with pytest.raises(InputError, match="another run is training in this folder"):
            with run_lock(run):
                pass
    finally:
        process.kill()  # as a killed run ends: no chance to let go of the lock itself
        process.wait()
    with run_lock(run):  # the system released it with the process
        assert run.is_dir()


def test_an_unknown_label_set_is_refused_as_the_recipe_is_read_naming_data_label_set(tmp_path: Path) -> None:
    # Looked up only as the run read its data, after the recipe: "field 'label_set'", no file, no line.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data:\n  dataset: jsonl\n  path: data\n  label_set: MELD\n", encoding="utf-8")
    with pytest.raises(InputError, match="unknown label set 'MELD' \\(did you mean 'meld'\\?\\)") as caught:
        TrainConfig.from_yaml(recipe)
    assert caught.value.field == "data.label_set" and caught.value.line == 4 and caught.value.path == str(recipe)


def test_a_max_length_past_the_backbones_learned_positions_is_refused_before_any_step(tmp_path: Path) -> None:
    # A GPT-2 backbone of 64 positions under the default max_length (1024) failed in the first
    # forward pass with "IndexError: index out of range in self".
    from transformers import GPT2Config, GPT2LMHeadModel

    from tiny import tiny_tokenizer

    recipe = base(tmp_path)
    gpt2 = tmp_path / "gpt2"
    tokenizer = tiny_tokenizer()
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4)).save_pretrained(gpt2)
    tokenizer.save_pretrained(gpt2)
    data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    data["backbone"] = {"model": str(gpt2)}
    data["finetune"]["lora"]["target_modules"] = ["c_attn"]
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(InputError, match="learned positions for 64 only: lower it to at most 64") as caught:
        trainer(recipe, tmp_path / "run", max_length=128).run()
    assert caught.value.field == "max_length"
    assert not list((tmp_path / "run").glob("checkpoints/step-*"))
