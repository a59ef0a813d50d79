"""Sharded training (FSDP2) on two CPU processes over gloo: the same weights as DDP, exact resume
from sharded checkpoints, and a plain model directory that predicts on one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from instructerc.config import to_mapping
from test_training import recipe

DRIVER = Path(__file__).with_name("train_until.py")


def config_file(data: Path, model: Path, run: Path, strategy: str, method: str, dropout: float = 0.0) -> Path:
    config = recipe(
        data,
        model,
        run,
        stages=[{"tasks": {"erc": 1.0}, "epochs": 1}],
        finetune={"method": method, "lora": {"r": 4, "alpha": 8, "dropout": dropout, "target_modules": ["q_proj", "v_proj", "down_proj"]}},
        backbone__dtype="float32",
        optim__lr=0.01 if method == "lora" else 0.002,
        distributed={"strategy": strategy},
        checkpoint_every_steps=4,
    )
    path = run.with_suffix(".yaml")
    run.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_mapping(config)))
    return path


def launch(config: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = str(29100 + (os.getpid() + hash(config.name) + len(extra)) % 400)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    command += [str(DRIVER), str(config), *extra]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    assert files, f"no weights in {model_dir}"
    return {k: v for f in files for k, v in load_file(f).items()}


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=2e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.fixture(scope="module")
def runs(tiny_data, backbone, tmp_path_factory):
    """Two-process runs by (strategy, method), trained once for the tests below."""
    root = tmp_path_factory.mktemp("fsdp")
    done: dict[tuple[str, str], Path] = {}
    failed: dict[tuple[str, str], str] = {}

    def run(strategy: str, method: str) -> Path:
        key = (strategy, method)
        if key in failed:
            # Launched again, the half-written run would only say it has checkpoints.
            pytest.fail(f"the {strategy}/{method} run failed in an earlier test:\n{failed[key]}")
        if key not in done:
            directory = root / f"{strategy}-{method}"
            try:
                launch(config_file(tiny_data, backbone, directory, strategy, method))
            except AssertionError as error:
                failed[key] = str(error)
                raise
            done[key] = directory
        return done[key]

    return run


def log_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_fsdp_ends_with_the_weights_of_ddp(runs, method):
    fsdp, ddp = runs("fsdp", method), runs("ddp", method)
    log = log_of(fsdp)
    assert log[0]["strategy"] == "fsdp" and log[0]["processes"] == 2
    assert log_of(ddp)[0]["strategy"] == "ddp"
    assert_same_weights(fsdp / "model", ddp / "model")
    # The same learning rate at every step: one scheduler step per optimizer step in both.
    lrs = [[r["lr"] for r in log_of(run) if r["event"] == "step"] for run in (fsdp, ddp)]
    assert lrs[0] == pytest.approx(lrs[1]) and lrs[0][-2] > 0  # decays to 0 at the last step, not before
    assert (fsdp / "checkpoints").is_dir() and all((c / "sharded" / ".metadata").is_file() for c in (fsdp / "checkpoints").iterdir())


def test_fsdp_shards_parameters_and_optimizer_state(runs):
    memory = {s: next(r for r in log_of(runs(s, "full")) if r["event"] == "memory")["per_process"] for s in ("fsdp", "ddp")}
    assert len(memory["fsdp"]) == 2
    for key in ("parameter_bytes", "optimizer_bytes"):
        whole = memory["ddp"][0][key]
        assert all(p[key] == whole for p in memory["ddp"])
        assert sum(p[key] for p in memory["fsdp"]) == pytest.approx(whole, rel=0.02)  # shards add up to the whole
        assert max(p[key] for p in memory["fsdp"]) < 0.6 * whole


@pytest.mark.parametrize("method", ["lora", "full"])
def test_fsdp_resumes_from_a_sharded_checkpoint_to_the_same_weights(runs, tiny_data, backbone, tmp_path, method):
    config = config_file(tiny_data, backbone, tmp_path / "cut", "fsdp", method)
    launch(config, "--stop-after", "6")  # checkpointed at step 4; steps 5-6 are lost, as in a kill
    checkpoints = sorted((tmp_path / "cut" / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-0000004"]
    assert not (tmp_path / "cut" / "model").exists()
    resumed = launch(config, "--resume")
    assert "resuming from step-0000004" in resumed.stdout
    assert_same_weights(tmp_path / "cut" / "model", runs("fsdp", method) / "model")


def test_a_sharded_checkpoint_is_not_resumed_as_data_parallel(tiny_data, backbone, tmp_path):
    config = config_file(tiny_data, backbone, tmp_path / "cut", "fsdp", "lora")
    launch(config, "--stop-after", "4")
    ddp = config_file(tiny_data, backbone, tmp_path / "cut", "ddp", "lora")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "instructerc", "train", str(ddp), "--resume", "--force", "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode != 0
    assert "sharded (FSDP) run" in done.stderr and "step-0000004" in done.stderr


def test_the_exported_model_predicts_on_one_process_as_the_ddp_one(runs, tiny_data):
    from instructerc.data.jsonl import read_jsonl
    from instructerc.inference.predictor import Predictor

    dev = read_jsonl(tiny_data / "dev.jsonl", "dev")
    labels = []
    for strategy in ("fsdp", "ddp"):
        predictor = Predictor.from_directory(runs(strategy, "lora") / "model")
        labels.append([[p.label for p in ps] for ps in predictor.predict(dev)])
        probabilities = [p.scores for ps in predictor.predict(dev[:2]) for p in ps]
    assert labels[0] == labels[1]
    assert all(abs(sum(p.values()) - 1) < 1e-3 for p in probabilities)


def test_a_resumed_data_parallel_run_with_dropout_ends_with_the_uninterrupted_weights(tiny_data, backbone, tmp_path):
    # Each process draws its own dropout masks: every process's random state is checkpointed.
    whole = config_file(tiny_data, backbone, tmp_path / "whole", "ddp", "lora", dropout=0.3)
    launch(whole)
    config = config_file(tiny_data, backbone, tmp_path / "cut", "ddp", "lora", dropout=0.3)
    launch(config, "--stop-after", "6")  # checkpointed at step 4
    launch(config, "--resume")
    assert_same_weights(tmp_path / "cut" / "model", tmp_path / "whole" / "model")
