"""Reaching the transformers model inside the wrappers training and adapters put around it.

Its own module so the forward passes and the attention functions can both use it without
importing each other (``forward`` imports ``sparse_attention`` for its names, not the reverse).
"""

from __future__ import annotations

from typing import Any


def underlying_model(model: Any) -> Any:
    """The transformers model inside a distributed wrapper (DDP: ``.module``) and peft."""
    while hasattr(model, "module") and not hasattr(model, "config"):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model
