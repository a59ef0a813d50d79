"""Forward passes that project onto the vocabulary only where a loss or a score needs it."""

from __future__ import annotations

import inspect
from typing import Any


def underlying_model(model: Any) -> Any:
    """The transformers model inside a distributed wrapper (DDP: ``.module``) and peft."""
    while hasattr(model, "module") and not hasattr(model, "config"):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _accepts_logits_to_keep(model: Any) -> bool:
    return "logits_to_keep" in inspect.signature(underlying_model(model).forward).parameters


def model_mask(model: Any, allowed: Any) -> Any:
    """The 4D mask in the form the model's attention takes: boolean for SDPA (valid whatever the
    query dtype, so bf16 autocast works), additive in the weights' dtype for eager attention."""
    import torch

    target = underlying_model(model)
    if getattr(target.config, "_attn_implementation", "sdpa") == "sdpa":
        return allowed
    dtype = next(target.parameters()).dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def kept_logits(model: Any, input_ids: Any, attention_mask: Any, position_ids: Any, keep: Any) -> Any:
    """Logits ``[rows, len(keep), vocab]`` at row positions ``keep`` (shared by all rows).

    ``attention_mask`` is a boolean ``[rows, 1, length, length]`` mask (True: may attend).

    A 1-D ``logits_to_keep`` (transformers >= 4.49) skips the vocabulary projection elsewhere;
    models without it compute every position and are sliced afterwards (same result, slower).
    """
    attention_mask = model_mask(model, attention_mask)
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
