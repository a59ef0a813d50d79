"""The model shipped inside the package, used when a command is given no ``--model``."""

from __future__ import annotations

from pathlib import Path

from instructerc.errors import InputError

# The manifest every model directory holds (read and written by model_dir). Defined here, the
# module that imports nothing of the modeling package: model_dir imports finetune, which resolves
# ``init_adapter: default`` through this module, so importing model_dir here made a cycle.
MANIFEST = "instructerc.json"

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "resources" / "default_model"


def default_model_dir() -> Path:
    """``instructerc/resources/default_model/``, or an :class:`InputError` when this install has none."""
    if not (DEFAULT_MODEL_DIR / MANIFEST).is_file():
        raise InputError(
            "this installation ships no default model: pass --model DIR (a model directory written by 'instructerc train')",
            path=DEFAULT_MODEL_DIR,
        )
    return DEFAULT_MODEL_DIR
