"""Forward passes that project onto the vocabulary only where a loss or a score needs it."""

from __future__ import annotations

import inspect
from typing import Any


def _accepts_logits_to_keep(model: Any) -> bool:
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(target.forward).parameters


def kept_logits(model: Any, input_ids: Any, attention_mask: Any, position_ids: Any, keep: Any) -> Any:
    """Logits ``[rows, len(keep), vocab]`` at row positions ``keep`` (shared by all rows).

    A 1-D ``logits_to_keep`` (transformers >= 4.49) skips the vocabulary projection elsewhere;
    models without it compute every position and are sliced afterwards (same result, slower).
    """
    if _accepts_logits_to_keep(model):
        return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=keep, use_cache=False).logits
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).logits
    return logits[:, keep]


def example_losses(model: Any, batch: Any) -> Any:
    """Mean token cross-entropy of every example's target in a :class:`MicroBatch`."""
    import torch
    import torch.nn.functional as F

    logits = kept_logits(model, batch.input_ids, batch.attention_mask, batch.position_ids, batch.keep)
    picked = logits[batch.pick_row, batch.pick_keep].float()
    token_loss = F.cross_entropy(picked, batch.labels, reduction="none")
    totals = torch.zeros(batch.examples, device=token_loss.device).index_add_(0, batch.example_of, token_loss)
    counts = torch.zeros(batch.examples, device=token_loss.device).index_add_(0, batch.example_of, torch.ones_like(token_loss))
    return totals / counts.clamp_min(1)
