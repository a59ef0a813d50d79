"""What a resumed run may change: keys that alter nothing the run computes are not differences."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from instructerc.errors import InputError
from instructerc.training.checkpoint import check_resumable
from instructerc.training.config import TrainConfig


def _saved(tmp_path: Path, **changes) -> Path:
    config = TrainConfig().to_dict()
    for dotted, value in changes.items():
        section, _, key = dotted.rpartition("__")
        (config[section] if section else config)[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _config(**changes) -> dict:
    config = TrainConfig().to_dict()
    for dotted, value in changes.items():
        section, _, key = dotted.rpartition("__")
        (config[section] if section else config)[key] = value
    return config


def test_a_run_resumes_under_another_spelling_or_place_of_its_output_dir(tmp_path: Path) -> None:
    saved = _saved(tmp_path, output_dir="runs/a")
    assert check_resumable(saved, _config(output_dir=str((Path.cwd() / "runs/a").resolve()))) == []
    assert check_resumable(saved, _config(output_dir="/moved/elsewhere/a")) == []


def test_auto_precision_resumes_as_the_type_it_meant(tmp_path: Path) -> None:
    import torch

    from instructerc.modeling.precision import resolve_dtype

    meant = resolve_dtype("auto", "cuda" if torch.cuda.is_available() else "cpu")  # the trainer's device
    other = "float32" if meant == "bfloat16" else "bfloat16"
    assert check_resumable(_saved(tmp_path, backbone__dtype="auto"), _config(backbone__dtype=meant)) == []
    assert check_resumable(_saved(tmp_path, backbone__dtype=meant), _config(backbone__dtype="auto")) == []
    # Another type computes another run: still refused, in the user's spelling.
    with pytest.raises(InputError, match=f"backbone.dtype: 'auto' -> '{other}'"):
        check_resumable(_saved(tmp_path, backbone__dtype="auto"), _config(backbone__dtype=other))
