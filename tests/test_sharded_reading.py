"""A sharded checkpoint is read without letting its pickles run code: the index builds only the
checkpoint format's classes, and non-tensor values only plain data."""

from __future__ import annotations

import io
import os
import pickle
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from instructerc.errors import InputError
from test_distributed_probe2 import Adapter, load, sharded_checkpoint


class RunsCommand:
    """A pickle that, loaded with plain pickle, would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_an_index_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    directory = sharded_checkpoint(tmp_path / "ckpt")
    marker = tmp_path / "ran"
    (directory / ".metadata").write_bytes(pickle.dumps(RunsCommand(marker)))

    with pytest.raises(InputError, match="never holds") as error:
        load(directory, Adapter(4))
    assert error.value.path == str(directory / ".metadata")
    assert not marker.exists()


def test_a_genuine_checkpoint_with_optimizer_state_still_loads(tmp_path: Path) -> None:
    from instructerc.training.fsdp import load_sharded, save_sharded

    model = Adapter(4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    x = torch.randn(2, 8)
    (model.layers["q"](x).sum() + model.layers["v"](x).sum()).backward()
    optimizer.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_sharded(tmp_path / "ckpt", model, optimizer)
        restored = Adapter(4)
        restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=0.5)
        load_sharded(tmp_path / "ckpt", restored, restored_optimizer)
    assert torch.equal(restored.layers["q"].weight, model.layers["q"].weight)
    assert restored_optimizer.param_groups[0]["lr"] == 1e-3 and restored_optimizer.param_groups[0]["betas"] == (0.9, 0.95)


def test_a_stored_value_that_would_run_code_is_refused_before_it_is_loaded(tmp_path: Path) -> None:
    from instructerc.training.sharded_reading import DataOnlyLoadPlanner

    marker = tmp_path / "ran"
    value = io.BytesIO()
    torch.save(RunsCommand(marker), value)
    value.seek(0)
    item = SimpleNamespace(dest_index=SimpleNamespace(fqn="optimizer.param_groups.0.lr"))

    with pytest.raises(pickle.UnpicklingError, match="optimizer.param_groups.0.lr: not plain data"):
        DataOnlyLoadPlanner().load_bytes(item, value)
    assert not marker.exists()
