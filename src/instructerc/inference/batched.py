"""Running many prompts through a model in packed, length-batched forward passes."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from instructerc.modeling.forward import kept_logits
from instructerc.training.packing import PackedRow, pack, row_tensors


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


def last_token_logits(
    model: Any,
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    max_tokens: int,
    batch_tokens: int,
    device: Any = "cpu",
    progress: Any = None,
) -> list[Any]:
    """Next-token logits after each sequence (``[vocab]`` tensors, in input order).

    Sequences are packed into prefix trees in the given order, so adjacent sequences that share
    a prefix (the prompts of one dialogue) have it computed once.
    """
    import torch

    packed = pack(sequences, max_tokens, shared_prefix=True)
    results: list[Any] = [None] * len(sequences)
    for group in row_batches([row for row, _ in packed], batch_tokens):
        rows = [packed[i][0] for i in group]
        ids, positions, mask = row_tensors(rows, pad_id)
        ends = [(b, row.ends[j][-1], packed[i][1][j]) for b, (i, row) in enumerate(zip(group, rows)) for j in range(len(row.ends))]
        keep = sorted({position for _, position, _ in ends})
        where = {position: k for k, position in enumerate(keep)}
        with torch.inference_mode():
            logits = kept_logits(model, ids.to(device), mask.to(device), positions.to(device), torch.tensor(keep, device=device))
        for b, position, sequence_index in ends:
            results[sequence_index] = logits[b, where[position]]
        if progress is not None:
            progress.update(sum(len(packed[i][1]) for i in group))
    return results
