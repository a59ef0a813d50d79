"""Scoring a batch of packed rows in two passes: the shared trunk of each row, then its branches.

A packed row is computed exactly, but its attention is dense: every token is scored against
every other token of the row and the tree mask throws most of that away. In a template whose
prompts differ by a long per-utterance part (the paper's: the utterance restated, the
demonstration, the label statement), most of a row is such private branches, and each branch
needs only its own tokens and its trunk ancestors. So the trunk (the tokens two or more
sequences share) runs first, keeping its keys and values, and the branches then run as short
rows against that cache: the same tokens pass through the model once each, and the attention
work drops from the square of the row to roughly trunk x branch. The result is the same up to
floating-point summation order (tested against scoring each sequence alone).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

from instructerc.modeling.forward import after_prefix, pair_logits
from instructerc.modeling.packing import PackedRow, row_tensors, subtree_sizes

# Split a batch only when the estimated attention work falls below this share of the packed
# pass's: the second pass has a fixed cost (a copy of the trunk cache, one more call per chunk).
WORTH_SPLITTING = 0.6
# A branch chunk's keys and values (context plus branch tokens, per row) stay within this many
# times the batch's token budget.
CONTEXT_BUDGET = 8


@dataclass(frozen=True)
class Branch:
    """The private tail of one sequence: the tokens no other sequence of its row shares.

    Attributes:
        sequence: the sequence's input index.
        row: the row (in the batch) whose trunk it hangs from.
        attach: trunk index of the last token it shares (its parent), -1 for none.
        tokens, depths: its tokens and their positions in the sequence.
    """

    sequence: int
    row: int
    attach: int
    tokens: list[int]
    depths: list[int]


@dataclass
class SplitBatch:
    """A batch of packed rows as trunks, sequences that end inside a trunk, and branches."""

    trunks: list[PackedRow] = field(default_factory=list)
    trunk_ends: list[tuple[int, int, int]] = field(default_factory=list)  # (row, trunk index, sequence)
    branches: list[Branch] = field(default_factory=list)


def split_rows(rows: Sequence[PackedRow], members: Sequence[Sequence[int]]) -> SplitBatch:
    """Split each row into its trunk (tokens on the paths of two or more sequences) and branches.

    ``members[b]`` are the input indices of row ``b``'s sequences, in ``rows[b].ends`` order.
    Counts only fall along a path, so a trunk is closed under parents and a branch is a chain.
    """
    batch = SplitBatch()
    for b, (row, sequences) in enumerate(zip(rows, members)):
        counts = [0] * len(row)
        for path in row.ends:
            for index in path:
                counts[index] += 1
        kept = [i for i in range(len(row)) if counts[i] >= 2]
        new_index = {old: new for new, old in enumerate(kept)}
        trunk = PackedRow(
            tokens=[row.tokens[i] for i in kept],
            parents=[new_index.get(row.parents[i], -1) for i in kept],
            depths=[row.depths[i] for i in kept],
        )
        batch.trunks.append(trunk)
        for path, sequence in zip(row.ends, sequences):
            shared = sum(1 for i in path if counts[i] >= 2)
            if shared == len(path):
                batch.trunk_ends.append((b, new_index[path[-1]], sequence))
                continue
            private = path[shared:]
            attach = new_index[path[shared - 1]] if shared else -1
            batch.branches.append(Branch(sequence, b, attach, [row.tokens[i] for i in private], [row.depths[i] for i in private]))
    return batch


def worth_splitting(rows: Sequence[PackedRow], batch: SplitBatch, prefix: int) -> bool:
    """Whether two passes do clearly less attention work than one packed pass over ``rows``."""
    if any(len(trunk) == 0 for trunk in batch.trunks) or not batch.branches:
        return False
    longest = max(len(r) for r in rows)
    packed = len(rows) * longest * (prefix + longest)
    trunk_length = max(len(t) for t in batch.trunks)
    context = prefix + trunk_length
    split = len(rows) * trunk_length * context + sum(len(b.tokens) * (context + len(b.tokens)) for b in batch.branches)
    return split <= WORTH_SPLITTING * packed


def branch_chunks(branches: Sequence[Branch], context: int, batch_tokens: int) -> list[list[Branch]]:
    """Branches by length, in chunks of at most ``batch_tokens`` padded tokens whose keys and
    values (context included) stay within ``CONTEXT_BUDGET`` times that."""
    chunks: list[list[Branch]] = []
    chunk: list[Branch] = []
    for branch in sorted(branches, key=lambda b: len(b.tokens)):
        width = len(branch.tokens)  # the longest so far: sorted by length
        rows = len(chunk) + 1
        if chunk and (rows * width > batch_tokens or rows * (context + width) > CONTEXT_BUDGET * batch_tokens):
            chunks.append(chunk)
            chunk = []
        chunk.append(branch)
    if chunk:
        chunks.append(chunk)
    return chunks


def ancestors_of(sizes: Any, node: int, width: int) -> Any:
    """Boolean ``[width]``: the trunk tokens ``node`` descends from, itself included, given the
    trunk's subtree sizes (depth-first order: ``j`` is an ancestor of ``node`` when its subtree spans it)."""
    import numpy as np

    allowed = np.zeros(width, dtype=bool)
    if node < 0:
        return allowed
    index = np.arange(len(sizes))
    allowed[: len(sizes)] = (index <= node) & (node < index + sizes)
    return allowed


def split_pass(
    model: Any,
    batch: SplitBatch,
    past: Any,
    prefix: int,
    pad_id: int,
    batch_tokens: int,
    device: Any,
    direct_head: bool,
) -> list[tuple[int, Any]]:
    """(sequence index, next-token logits) for every sequence of the batch, in two passes."""
    import numpy as np
    import torch
    from transformers import DynamicCache

    rows = len(batch.trunks)
    ids, positions, mask = row_tensors(batch.trunks, pad_id)
    if past is not None:
        cache, positions, mask = after_prefix(past, prefix, rows, positions, mask)
    else:
        cache = DynamicCache()
    # The trunk pass must run even when no sequence ends inside a trunk: a dummy pair keeps it uniform.
    ends = batch.trunk_ends or [(0, 0, -1)]
    row_index = torch.tensor([b for b, _, _ in ends], device=device)
    column_index = torch.tensor([c for _, c, _ in ends], device=device)
    results: list[tuple[int, Any]] = []
    with torch.inference_mode():
        logits = pair_logits(
            model, ids.to(device), mask.to(device), positions.to(device), row_index, column_index, cache=cache, direct_head=direct_head
        )
    results += [(sequence, logits[k]) for k, (_, _, sequence) in enumerate(ends) if sequence >= 0]

    trunk_sizes = [np.asarray(subtree_sizes(trunk.parents), dtype=np.int64) for trunk in batch.trunks]
    trunk_width = ids.shape[1]
    context = prefix + trunk_width
    for chunk in branch_chunks(batch.branches, context, batch_tokens):
        width = max(len(b.tokens) for b in chunk)
        branch_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        branch_positions = torch.zeros((len(chunk), width), dtype=torch.long)
        allowed = np.zeros((len(chunk), width, context + width), dtype=bool)
        causal = np.tril(np.ones((width, width), dtype=bool))
        for k, branch in enumerate(chunk):
            n = len(branch.tokens)
            branch_ids[k, :n] = torch.tensor(branch.tokens, dtype=torch.long)
            branch_positions[k, :n] = torch.tensor(branch.depths, dtype=torch.long) + prefix
            allowed[k, :n, :prefix] = True
            allowed[k, :n, prefix:context] = ancestors_of(trunk_sizes[branch.row], branch.attach, trunk_width)
            allowed[k, :, context:] = causal
            allowed[k, n:, context:] = np.eye(width, dtype=bool)[n:]  # padding attends only to itself
        chunk_cache = copy.deepcopy(cache)
        chunk_cache.batch_select_indices(torch.tensor([b.row for b in chunk], device=device))
        last = torch.tensor([len(b.tokens) - 1 for b in chunk], device=device)
        with torch.inference_mode():
            logits = pair_logits(
                model,
                branch_ids.to(device),
                torch.from_numpy(allowed)[:, None].to(device),
                branch_positions.to(device),
                torch.arange(len(chunk), device=device),
                last,
                cache=chunk_cache,
                direct_head=direct_head,
            )
        results += [(branch.sequence, logits[k]) for k, branch in enumerate(chunk)]
    return results
