"""Attention over packed rows that skips the key/query pairs the mask rules out.

A packed row holds a tree of prompts (a dialogue's shared history, then each prompt's private
tail), and its boolean mask lets a token see only its ancestors: with the paper's template on
MELD test, about a fifth of the row's pairs. SDPA's CPU kernel computes every pair and masks
afterwards. Here the queries run in blocks, each against only the keys some query of the block
may see (gathered once per forward pass and reused by every layer); the softmax is over the
same keys, so the output equals SDPA's up to summation order (tested).

Measured on the 40 MELD test dialogues of ``benchmarks/inference_throughput.py`` (the
attention calls of their packed rows alone, 30 layers): 35-48 s with SDPA, 18-20 s in blocks
of 128 queries; blocks of 32 or 256 were slower (per-call cost, looser key sets).

It runs only where it pays: a boolean 4D mask, long enough queries, and a plan that does at most
``MAX_WORK`` of the dense work. Anything else (decoding, 2D padding masks turned causal, float
masks, dropout in training) goes to transformers' own SDPA function unchanged. On GPUs, SDPA's
fused kernels or ``flex_attention`` are the better tools; the predictor uses this on CPUs only.
"""

from __future__ import annotations

import functools
import threading
import weakref
from dataclasses import dataclass
from typing import Any

NAME = "instructerc_block_sparse"
# SDPA, but with ``is_causal`` instead of the mask where the mask is causal (training rows).
CAUSAL_NAME = "instructerc_causal_sdpa"
BLOCK = 128
# Above this share of the dense pairs, the per-block calls cost more than they save.
MAX_WORK = 0.75

_last_plan = threading.local()
_last_causal = threading.local()


@dataclass(frozen=True)
class QueryBlock:
    """Queries ``start:end`` of batch row ``row``, the key columns they may see, and their mask there."""

    row: int
    start: int
    end: int
    keys: Any
    mask: Any


def attention_plan(mask: Any, block: int = BLOCK) -> tuple[list[QueryBlock], float]:
    """The query blocks of a boolean ``[rows, 1, queries, keys]`` mask, and the share of the
    dense query x key pairs they compute."""
    rows, _, queries, keys = mask.shape
    blocks, work = [], 0
    for row in range(rows):
        for start in range(0, queries, block):
            end = min(queries, start + block)
            seen = mask[row, 0, start:end].any(0).nonzero().squeeze(1)
            blocks.append(QueryBlock(row, start, end, seen, mask[row : row + 1, :, start:end].index_select(-1, seen)))
            work += (end - start) * len(seen)
    return blocks, work / max(1, rows * queries * keys)


def plan_for(mask: Any) -> tuple[list[QueryBlock], float]:
    """The plan of ``mask``, computed by the first layer and reused by the others (they get the
    same mask object); one per thread, so concurrent forward passes do not share it."""
    cached = getattr(_last_plan, "value", None)
    if cached is not None and cached[0]() is mask:
        return cached[1]
    plan = attention_plan(mask)
    _last_plan.value = (weakref.ref(mask), plan)
    return plan


@functools.lru_cache(maxsize=1)
def _sdpa_takes_gqa() -> bool:
    """Whether this PyTorch's SDPA takes ``enable_gqa`` (2.5 and later)."""
    import inspect

    import torch

    try:
        return "enable_gqa" in inspect.signature(torch.nn.functional.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return "enable_gqa" in (torch.nn.functional.scaled_dot_product_attention.__doc__ or "")


def causal_rows(mask: Any) -> bool:
    """Whether a boolean ``[rows, 1, n, n]`` mask lets every real token see exactly the tokens
    before it and itself: a row that is one chain, as the prompts of a ``dialogue-stream``
    dialogue are (each a prefix of the next). Padding tokens (at a row's end, seeing neither
    position 0 nor any real token) may differ: their outputs are never used, and under a causal
    mask no real token sees them. Computed by the first layer and reused by the others."""
    import torch

    cached = getattr(_last_causal, "value", None)
    if cached is not None and cached[0]() is mask:
        return cached[1]
    allowed = mask[:, 0]
    real = allowed[:, :, 0]
    tril = torch.ones(allowed.shape[-2:], dtype=torch.bool, device=mask.device).tril()
    answer = bool(torch.equal(allowed & real[..., None], tril[None] & real[..., None]))
    _last_causal.value = (weakref.ref(mask), answer)
    return answer


def causal_sdpa_attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0, scaling: float | None = None, **kwargs: Any
) -> tuple[Any, None]:
    """transformers' SDPA attention, run with ``is_causal`` where the mask is causal
    (:func:`causal_rows`): exact for every real token, and the kernels skip the masked half
    (a training step of ``dialogue-stream`` rows: 1.4x faster attention in bf16 on a CPU)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (
        attention_mask is not None
        and attention_mask.dtype == torch.bool
        and attention_mask.dim() == 4
        and attention_mask.shape[1] == 1
        and query.shape[2] == key.shape[2] == attention_mask.shape[2] == attention_mask.shape[3] > 1
        and causal_rows(attention_mask)
    ):
        kwargs.pop("is_causal", None)
        return sdpa_attention_forward(module, query, key, value, None, dropout=dropout, scaling=scaling, is_causal=True, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def block_sparse_attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0, scaling: float | None = None, **kwargs: Any
) -> tuple[Any, None]:
    """An attention function of transformers' ``AttentionInterface``: ``query`` is ``[rows, heads,
    queries, dim]``, ``key``/``value`` ``[rows, kv_heads, keys, dim]``; returns ``[rows, queries, heads, dim]``."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    usable = (
        attention_mask is not None
        and attention_mask.dtype == torch.bool
        and attention_mask.dim() == 4
        and attention_mask.shape[1] == 1
        and attention_mask.shape[2] == query.shape[2] >= 2 * BLOCK
        and not (dropout and module.training)
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
    )
    plan = plan_for(attention_mask) if usable else None
    if plan is None or plan[1] > MAX_WORK:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    # Grouped-query attention inside the kernel, not by copying keys and values per head group
    # (one block, 9 query heads on 3 key heads, bf16: 1.8 ms against 3.3 ms with the copies).
    native_gqa = groups > 1 and _sdpa_takes_gqa()
    out = query.new_empty(query.shape[:3] + value.shape[-1:])
    for part in plan[0]:
        row = slice(part.row, part.row + 1)
        keys, values = key[row].index_select(2, part.keys), value[row].index_select(2, part.keys)
        if not native_gqa:
            keys, values = repeat_kv(keys, groups), repeat_kv(values, groups)
        out[row, :, part.start : part.end] = torch.nn.functional.scaled_dot_product_attention(
            query[row, :, part.start : part.end],
            keys,
            values,
            attn_mask=part.mask,
            scale=scaling,
            **({"enable_gqa": True} if native_gqa else {}),
        )
    return out.transpose(1, 2).contiguous(), None


def use_block_sparse_attention(model: Any) -> bool:
    """Switch ``model`` (a transformers model, possibly inside peft) to block-sparse attention
    where it currently uses SDPA. Returns whether it did; models that do not dispatch through
    ``AttentionInterface`` keep their own attention."""
    return _use_attention(model, NAME, block_sparse_attention)


def use_causal_sdpa_attention(model: Any) -> bool:
    """Switch ``model`` to :func:`causal_sdpa_attention` where it currently uses SDPA."""
    return _use_attention(model, CAUSAL_NAME, causal_sdpa_attention)


def _use_attention(model: Any, name: str, function: Any) -> bool:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    from instructerc.modeling.wrappers import underlying_model

    target = underlying_model(model)
    if getattr(target.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(name, function)
    # Masks built by transformers itself (generation's padding masks) take SDPA's boolean form.
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)
    try:
        target.set_attn_implementation(name)
    except (ValueError, KeyError, NotImplementedError):
        return False
    return target.config._attn_implementation == name
