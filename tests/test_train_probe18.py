"""Recipes, run folders and grids in states users leave them in (tiny models)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tiny import write_tiny_base


@pytest.fixture(scope="module")
def small_base(tmp_path_factory) -> Path:
    """A base recipe over a tiny backbone and a small JSONL dataset with a test split."""
    return write_tiny_base(tmp_path_factory.mktemp("probe18"), {"train": 8, "dev": 3, "test": 3})


def test_a_run_that_fails_in_the_middle_of_a_grid_does_not_stop_the_others(small_base: Path, tmp_path: Path, run_cli) -> None:
    # The data's emotions are not IEMOCAP's: that run fails only once its data is read. The grid
    # stopped there, never trained the run after it and wrote no report.
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        yaml.safe_dump(
            {
                "name": "failing",
                "base": str(small_base),
                "output_dir": "runs",
                "seeds": [1],
                "axes": {"v": {"a": {}, "bad": {"data.label_set": "iemocap"}, "c": {"optim.lr": 0.005}}},
            }
        ),
        encoding="utf-8",
    )
    result = run_cli("experiment", grid, "--no-progress")
    assert result.code == 2
    assert "v=c__seed=1" in result.out and "wrote" in result.out
    last = result.err.strip().splitlines()[-1]
    assert last.startswith(f"instructerc: error: {grid}: 1 run(s) of the grid failed (v=bad__seed=1: ")
    assert "unknown emotion" in last
    assert len(list((tmp_path / "runs").glob("run-*/result.json"))) == 2
    table = (tmp_path / "runs" / "failing.md").read_text(encoding="utf-8")
    assert "| a | data |" in table and "| c | data |" in table
    assert "1 run(s) failed" in table and "| v=bad__seed=1 | " in table


@pytest.fixture
def stopped_run(small_base: Path, tmp_path: Path) -> Path:
    """A run stopped after one step, with its checkpoint."""
    from instructerc.evaluation.dev_scoring import predictor_dev_scoring
    from instructerc.training.config import TrainConfig
    from instructerc.training.trainer import Trainer

    run = tmp_path / "run"
    config = TrainConfig.from_yaml(small_base, {"output_dir": str(run), "checkpoint_every_steps": 1})
    Trainer(config, progress=False, dev_scoring=predictor_dev_scoring, stop_after_steps=1).run()
    assert any((run / "checkpoints").glob("step-*")) and (run / "config.yaml").is_file()
    return run


DAMAGES = [("delete", "is missing"), ("empty", "is empty"), ("list", "is not a recipe (a mapping of keys)")]


@pytest.mark.parametrize(("damage", "problem"), DAMAGES)
def test_resuming_a_run_whose_saved_config_is_gone_or_emptied_is_refused_without_force(
    small_base: Path, stopped_run: Path, run_cli, damage: str, problem: str
) -> None:
    # A deleted config.yaml let --resume continue under any recipe unchecked; an emptied one
    # listed the whole new recipe as "config: None -> {...}".
    saved = stopped_run / "config.yaml"
    if damage == "delete":
        saved.unlink()
    else:
        saved.write_text("" if damage == "empty" else "- a\n", encoding="utf-8")
    args = ("train", small_base, "--output", stopped_run, "--set", "checkpoint_every_steps=1", "--no-progress")
    result = run_cli(*args, "--resume")
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert f"instructerc: error: {saved}: the run's saved config {problem}, so this recipe cannot be checked" in result.err
    assert "pass --force" in result.err and not (stopped_run / "model").exists()
    if damage == "delete":
        forced = run_cli(*args, "--resume", "--force")
        assert forced.code == 0, forced.err
        card = (stopped_run / "model" / "README.md").read_text(encoding="utf-8")
        assert "config.yaml: the saved config is missing; resumed under the recipe given" in card


def test_invalid_yaml_in_a_grid_is_named_with_its_line(tmp_path: Path, run_cli) -> None:
    # The grid's loader re-raised the reader's error with the path and field only: the line went.
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: g\nbase: base.yaml\noutput_dir: runs\noverrides: {stages[3].epochs: 1}\n", encoding="utf-8")
    result = run_cli("experiment", grid, "--list")
    assert result.code == 2
    assert result.err.startswith(f"instructerc: error: {grid}:4: invalid YAML: ")


@pytest.mark.parametrize("kind", ["to nothing", "loop"])
def test_an_output_that_is_a_broken_symlink_is_named_before_anything_loads(small_base: Path, tmp_path: Path, run_cli, kind: str) -> None:
    # Read as absent, a dangling link passed every check and failed at mkdir with a bare
    # "File exists" (exit 1); a loop failed with "Too many levels of symbolic links".
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "gone" if kind == "to nothing" else link)
    result = run_cli("train", small_base, "--output", link, "--no-progress")
    assert result.code == 2 and len(result.err.splitlines()) == 1
    expected = "is a symlink to" if kind == "to nothing" else "is a symlink loop"
    assert result.err.startswith(f"instructerc: error: {link}: field 'output_dir': {expected}")


def test_set_into_a_list_the_recipe_leaves_to_its_default(tmp_path: Path) -> None:
    # README: --set stages[1].epochs=2. On a recipe without 'stages' (or 'optim.betas') the
    # override was refused as "'stages' is not a list", though the recipe's stages are a list.
    from instructerc.training.config import TrainConfig

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("optim: {lr: 0.01}\n", encoding="utf-8")
    config = TrainConfig.from_yaml(recipe, {"stages[0].epochs": 2, "optim.betas[1]": 0.5})
    assert [(stage.tasks, stage.epochs) for stage in config.stages] == [({"erc": 1.0}, 2.0)]
    assert config.optim.betas == [0.9, 0.5] and config.optim.lr == 0.01


def test_a_results_folder_that_is_a_file_is_refused_before_any_run(small_base: Path, tmp_path: Path, run_cli) -> None:
    # It was found only once every run had trained, as "cannot write the report: File exists".
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "base": str(small_base), "output_dir": "runs"}), encoding="utf-8")
    taken = tmp_path / "taken"
    taken.write_text("", encoding="utf-8")
    result = run_cli("experiment", grid, "--results", taken, "--no-progress")
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert f"{taken}: field 'results': is not a folder" in result.err and "choose another --results folder" in result.err
    assert not (tmp_path / "runs").exists()


def test_a_run_whose_result_is_damaged_fails_alone_and_the_report_is_still_written(small_base: Path, tmp_path: Path, run_cli) -> None:
    grid = tmp_path / "grid.yaml"
    axes = {"v": {"a": {}, "c": {"optim.lr": 0.005}}}
    grid.write_text(yaml.safe_dump({"name": "g", "base": str(small_base), "output_dir": "runs", "axes": axes}), encoding="utf-8")
    assert run_cli("experiment", grid, "--no-progress").code == 0
    damaged = next(p for p in (tmp_path / "runs").glob("run-*/result.json") if '"v=a__' in p.read_text(encoding="utf-8"))
    damaged.write_text("{", encoding="utf-8")
    result = run_cli("experiment", grid, "--no-progress")
    assert result.code == 2 and f"wrote {tmp_path / 'runs' / 'g.md'}" in result.out
    assert f"1 run(s) of the grid failed (v=a__seed=42: {damaged}: unreadable run result" in result.err
    table = (tmp_path / "runs" / "g.md").read_text(encoding="utf-8")
    assert "| c | data |" in table and "| v=a__seed=42 | " in table


def test_ctrl_c_during_a_grid_names_the_run_it_stopped(small_base: Path, tmp_path: Path, run_cli, monkeypatch) -> None:
    # It ended with "instructerc: interrupted" alone: not which run, nor that the grid goes on.
    from instructerc.experiments import runner

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_one", stopped)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "base": str(small_base), "output_dir": "runs"}), encoding="utf-8")
    result = run_cli("experiment", grid, "--no-progress")
    assert result.code == 130
    assert "instructerc: the grid stopped during run seed=42; the same command continues the grid" in result.err


def test_more_evaluations_per_epoch_than_steps_scores_after_every_step_at_once(small_base: Path, tmp_path: Path) -> None:
    # The check looped over every evaluation of the epoch at each step: evals_per_epoch: 1e12
    # hung the run. Two seconds of alarm stand for the hang.
    import signal

    from instructerc.evaluation.dev_scoring import predictor_dev_scoring
    from instructerc.training.checkpoint import TrainState
    from instructerc.training.config import TrainConfig
    from instructerc.training.trainer import Trainer

    config = TrainConfig.from_yaml(small_base, {"evals_per_epoch": 10**12, "output_dir": str(tmp_path / "run")})
    trainer = Trainer(config, progress=False, dev_scoring=predictor_dev_scoring)

    def hung(signum, frame):
        raise TimeoutError("the evaluation schedule did not answer within 2 seconds")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(2)
    try:
        due = [trainer._evaluation_due(TrainState(), done, steps_per_epoch=6, total_steps=12) for done in range(1, 13)]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert due == [True] * 12
