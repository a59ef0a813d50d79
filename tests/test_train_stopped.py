"""A training run stopped by Ctrl-C or SIGTERM says how to continue it."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructerc.cli.main import Terminated
from instructerc.training.trainer import Trainer
from test_train_input_checks import write_recipe
from test_training import recipe


def stopping(error: BaseException, checkpoint: bool):
    def run(self, resume: bool = False):
        if checkpoint:
            step = Path(self.config.output_dir) / "checkpoints" / "step-0000005"
            step.mkdir(parents=True)
            (step / "state.json").write_text("{}", encoding="utf-8")
        raise error

    return run


@pytest.mark.parametrize("error, status, said", [(KeyboardInterrupt(), 130, "interrupted"), (Terminated(143), 143, "terminated")])
def test_a_stopped_run_with_a_checkpoint_names_it_and_resume(run_cli, tiny_data, backbone, tmp_path, monkeypatch, error, status, said):
    output = tmp_path / "run"
    monkeypatch.setattr(Trainer, "run", stopping(error, checkpoint=True))
    result = run_cli("train", write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, output)), "--no-progress")
    assert result.code == status and said in result.err
    assert f"the run is kept up to {output / 'checkpoints' / 'step-0000005'}; the same command with --resume continues it" in result.err


def test_a_run_stopped_before_its_first_checkpoint_says_nothing_about_resume(run_cli, tiny_data, backbone, tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "run", stopping(KeyboardInterrupt(), checkpoint=False))
    result = run_cli("train", write_recipe(tmp_path / "recipe.yaml", recipe(tiny_data, backbone, tmp_path / "run")), "--no-progress")
    assert result.code == 130 and "--resume" not in result.err
