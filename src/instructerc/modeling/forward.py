"""Forward passes that project onto the vocabulary only where a loss or a score needs it."""

from __future__ import annotations

import inspect
from typing import Any

from instructerc.modeling.sparse_attention import CAUSAL_NAME
from instructerc.modeling.sparse_attention import NAME as BLOCK_SPARSE
from instructerc.modeling.wrappers import underlying_model


def accepts_logits_to_keep(model: Any) -> bool:
    return "logits_to_keep" in inspect.signature(underlying_model(model).forward).parameters


def model_mask(model: Any, allowed: Any) -> Any:
    """The 4D mask in the form the model's attention takes: boolean for SDPA and block-sparse
    attention (valid whatever the query dtype, so bf16 autocast works), additive in the weights'
    dtype for eager attention."""
    import torch

    target = underlying_model(model)
    if getattr(target.config, "_attn_implementation", "sdpa") in ("sdpa", BLOCK_SPARSE, CAUSAL_NAME):
        return allowed
    dtype = next(target.parameters()).dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def cache_argument(model: Any) -> str:
    """The keyword a model's forward takes its key/value cache by: transformers 5.x calls it
    ``cache``, earlier releases ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(underlying_model(model).forward).parameters else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The forward keywords that run ``model`` without a cache (``None``) or extending ``cache``."""
    return {"use_cache": False} if cache is None else {"use_cache": True, cache_argument(model): cache}


def after_prefix(past: Any, prefix: int, rows: int, positions: Any, mask: Any) -> tuple[Any, Any, Any]:
    """Rows that continue a one-row cache ``past`` of ``prefix`` tokens: a copy of the cache per
    row, and the rows' positions and boolean ``[rows, 1, length, length]`` mask shifted to follow
    it (every row sees the whole prefix)."""
    import copy

    import torch

    cache = copy.deepcopy(past)
    cache.batch_repeat_interleave(rows)
    mask = torch.cat([torch.ones(mask.shape[:3] + (prefix,), dtype=torch.bool, device=mask.device), mask], dim=-1)
    return cache, positions + prefix, mask


def kept_logits(model: Any, input_ids: Any, attention_mask: Any, position_ids: Any, keep: Any, cache: Any = None) -> Any:
    """Logits ``[rows, len(keep), vocab]`` at row positions ``keep`` (shared by all rows).

    ``attention_mask`` is a boolean ``[rows, 1, length, past + length]`` mask (True: may attend),
    where ``past`` is the length of ``cache`` (keys and values computed earlier; none by default).

    A 1-D ``logits_to_keep`` (transformers >= 4.49) skips the vocabulary projection elsewhere;
    models without it compute every position and are sliced afterwards (same result, slower).
    """
    attention_mask = model_mask(model, attention_mask)
    extra = cache_kwargs(model, cache)
    if accepts_logits_to_keep(model):
        return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=keep, **extra).logits
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **extra).logits
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


def _decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    target = underlying_model(model)
    try:
        decoder, head = target.get_decoder(), target.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return (decoder, head) if decoder is not None and head is not None else None


def pair_logits(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    position_ids: Any,
    rows: Any,
    columns: Any,
    cache: Any = None,
    direct_head: bool = False,
) -> Any:
    """Logits ``[n, vocab]`` at the ``n`` (row, column) pairs, for rows that each need different positions.

    ``direct_head`` runs the decoder stack and projects only the chosen hidden states (see
    :func:`head_is_plain`); otherwise the model's own forward projects every chosen column of
    every row, which for many short rows is mostly waste.
    """
    import torch

    parts = _decoder_and_head(model) if direct_head else None
    if parts is None:
        keep = torch.unique(columns)
        logits = kept_logits(model, input_ids, attention_mask, position_ids, keep, cache=cache)
        return logits[rows, torch.searchsorted(keep, columns)]
    decoder, head = parts
    hidden = decoder(
        input_ids=input_ids, attention_mask=model_mask(model, attention_mask), position_ids=position_ids, **cache_kwargs(decoder, cache)
    ).last_hidden_state
    return head(hidden[rows, columns])


def head_is_plain(model: Any, device: Any = "cpu") -> bool:
    """Whether the model's logits are its output embedding applied to the decoder's last hidden
    state, checked on a probe. Some families scale or soft-cap logits in their forward; for them
    the direct projection would be wrong, so it is used only where it reproduces the model."""
    import torch

    if _decoder_and_head(model) is None:
        return False
    length = 6
    ids = torch.arange(10, 10 + length, device=device)[None]
    positions = torch.arange(length, device=device)[None]
    mask = torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]
    last = torch.tensor([length - 1], device=device)
    with torch.inference_mode():
        reference = kept_logits(model, ids, mask, positions, last)[0].float()
        direct = pair_logits(model, ids, mask, positions, torch.tensor([0], device=device), last, direct_head=True).float()
    if not (torch.isfinite(reference).all() and torch.isfinite(direct).all()):
        return False  # overflowed (float16) or damaged weights: nothing to compare, and the caller reports it
    return bool(torch.allclose(reference, direct, rtol=1e-3, atol=1e-3 * float(reference.abs().max().clamp_min(1))))
