"""Scoring a growing conversation with its key/value cache kept between turns.

A conversation's cache holds the keys and values of the last prompt scored for it. The next
prompt is compared token by token with the cached one; the cache is cut back to their longest
common prefix and only the rest is computed. With the ``dialogue-prefix`` template the next
prompt extends the previous one up to its question, so a new turn costs its own line and a
short question, not the whole history. Any template works; the saving is whatever prefix the
prompts share.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Sequence

from instructerc.modeling.forward import cache_argument, cache_kwargs


def crop_cache(cache: Any, length: int) -> None:
    """Cut a transformers cache back to its first ``length`` tokens (v4 and v5 spell this differently)."""
    current = cache.get_seq_length()
    if current <= length:
        return
    parameters = inspect.signature(cache.crop).parameters
    if "tokens_to_remove" in parameters:
        cache.crop(-(current - length))
    else:
        cache.crop(length)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class ConversationCache:
    """The cached keys/values of one conversation and the token ids they were computed for."""

    ids: list[int] = field(default_factory=list)
    past: Any = None

    @property
    def tokens(self) -> int:
        return len(self.ids)


def next_token_logits(model: Any, cache: ConversationCache, sequence: Sequence[int], device: Any) -> Any:
    """Logits after ``sequence``, computing only what the cache does not already hold."""
    import torch
    from transformers import DynamicCache

    shared = common_prefix(cache.ids, sequence)
    if shared == len(sequence):  # at least one token must be fed to get its logits
        shared -= 1
    if cache.past is None or shared == 0:
        cache.past, cache.ids, shared = DynamicCache(), [], 0
    else:
        crop_cache(cache.past, shared)
        cache.ids = cache.ids[:shared]
    new = list(sequence[shared:])
    ids = torch.tensor([new], device=device)
    positions = torch.arange(shared, shared + len(new), device=device)[None]
    with torch.inference_mode():
        out = model(input_ids=ids, position_ids=positions, logits_to_keep=1, **cache_kwargs(model, cache.past))
    cache.past = getattr(out, cache_argument(model))
    cache.ids += new
    return out.logits[0, -1]


def score_incrementally(model: Any, scorer: Any, cache: ConversationCache, prompt_ids: Sequence[int], device: Any) -> Any:
    """Label probabilities of one prompt, reusing and then updating the conversation's cache."""
    logits = [next_token_logits(model, cache, sequence, device) for sequence in scorer.sequences(tuple(prompt_ids))]
    if len(logits) > 1:  # deeper branch points left their answer tokens in the cache: drop them
        crop_cache(cache.past, len(prompt_ids))
        cache.ids = cache.ids[: len(prompt_ids)]
    return scorer.probabilities(logits)
