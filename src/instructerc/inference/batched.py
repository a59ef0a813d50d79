"""Running many prompts through a model in packed, length-batched forward passes.

Savings, all exact:

* the prompts of one dialogue are packed as a prefix tree, one dialogue per row, so the
  history they share is computed once and no token attends over other dialogues' tokens
  (attention over a row costs its length squared; on a small model it is a large share of
  the work at 2,048 tokens);
* the prefix that *all* prompts share (the instruction, and in the cache-friendly templates
  the label statement) is computed once, and every row starts from its keys and values.

Two more live outside this module: models loaded for inference on a CPU compute a packed row's
attention in blocks over only the keys each block may see
(:mod:`instructerc.modeling.sparse_attention`), and the batches run on CPU worker threads
(:mod:`instructerc.inference.parallel`).
"""

from __future__ import annotations

from typing import Any, Hashable, Iterator, Sequence

from instructerc.inference.parallel import completed
from instructerc.modeling.forward import accepts_logits_to_keep, after_prefix, cache_argument, cache_kwargs, pair_logits
from instructerc.modeling.packing import PackedRow, pack, row_tensors

# Below this many tokens a shared prefix is not worth a separate forward pass.
MIN_SHARED_PREFIX = 8


def row_batches(rows: Sequence[PackedRow], batch_tokens: int) -> Iterator[list[int]]:
    """Indices of rows grouped by similar length, each group at most ``batch_tokens`` padded tokens."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    group: list[int] = []
    for i in order:
        longest = max([len(rows[j]) for j in group] + [len(rows[i])])
        if group and longest * (len(group) + 1) > batch_tokens:
            yield group
            group = []
        group.append(i)
    if group:
        yield group


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Tokens at the start of every sequence, leaving each at least one token of its own
    (its next-token logits must come from a position of its own row)."""
    first, limit = sequences[0], min(len(s) for s in sequences) - 1
    length = 0
    while length < limit and all(s[length] == first[length] for s in sequences):
        length += 1
    return length


def prefix_cache(model: Any, prefix: Sequence[int], device: Any) -> Any:
    """Keys and values of ``prefix`` (one row), to start every later row from."""
    import torch
    from transformers import DynamicCache

    ids = torch.tensor([list(prefix)], device=device)
    extra = cache_kwargs(model, DynamicCache())
    if accepts_logits_to_keep(model):
        extra["logits_to_keep"] = 1
    with torch.inference_mode():
        out = model(input_ids=ids, position_ids=torch.arange(len(prefix), device=device)[None], **extra)
    return getattr(out, cache_argument(model))


def last_token_logits(
    model: Any,
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    max_tokens: int,
    batch_tokens: int,
    device: Any = "cpu",
    progress: Any = None,
    groups: Sequence[Hashable] | None = None,
    direct_head: bool = False,
    workers: int = 1,
) -> list[Any]:
    """Next-token logits after each sequence (``[vocab]`` tensors, in input order).

    Sequences are packed into prefix trees in the given order, so adjacent sequences that share
    a prefix (the prompts of one dialogue) have it computed once; ``groups`` (say, a dialogue
    id per sequence) puts each group in rows of its own. ``direct_head``: project only the
    hidden states that are needed (:func:`~instructerc.modeling.forward.head_is_plain`).
    ``workers``: run the batches on that many CPU threads (:mod:`instructerc.inference.parallel`).
    """

    shared = shared_prefix_length(sequences) if len(sequences) > 1 else 0
    if shared < MIN_SHARED_PREFIX:
        shared = 0
    past = prefix_cache(model, sequences[0][:shared], device) if shared else None
    packed = pack([s[shared:] for s in sequences], max_tokens, shared_prefix=True, groups=groups)

    def run(group: list[int]) -> list[tuple[int, Any]]:
        rows = [packed[i][0] for i in group]
        members = [packed[i][1] for i in group]
        return packed_pass(model, rows, members, past, shared, pad_id, device, direct_head)

    results: list[Any] = [None] * len(sequences)
    batches = list(row_batches([row for row, _ in packed], batch_tokens))
    # No more workers than passes: each worker gets a share of the intra-op threads, so one pass
    # (a short dialogue, a service request) on two workers ran on half the cores.
    for scored in completed(run, batches, min(workers, len(batches))):
        for sequence_index, logits in scored:
            results[sequence_index] = logits
        if progress is not None:
            progress.update(len(scored))
    return results


def packed_pass(
    model: Any,
    rows: Sequence[PackedRow],
    members: Sequence[Sequence[int]],
    past: Any,
    prefix: int,
    pad_id: int,
    device: Any,
    direct_head: bool,
) -> list[tuple[int, Any]]:
    """(sequence index, next-token logits) for every sequence of the rows, in one pass over them."""
    import torch

    ids, positions, mask = row_tensors(rows, pad_id)
    cache = None
    if past is not None:
        cache, positions, mask = after_prefix(past, prefix, len(rows), positions, mask)
    ends = [(b, row.ends[j][-1], sequences[j]) for b, (row, sequences) in enumerate(zip(rows, members)) for j in range(len(row.ends))]
    row_index = torch.tensor([b for b, _, _ in ends], device=device)
    column_index = torch.tensor([position for _, position, _ in ends], device=device)
    with torch.inference_mode():
        logits = pair_logits(
            model, ids.to(device), mask.to(device), positions.to(device), row_index, column_index, cache=cache, direct_head=direct_head
        )
    return [(sequence, logits[k]) for k, (_, _, sequence) in enumerate(ends)]
