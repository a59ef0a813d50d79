"""Packing token sequences into prefix trees, so a shared prefix is computed once.

The prompts of one dialogue repeat each other: the same instruction, the same history lines.
A packed row lays several sequences out as a token trie in depth-first order. Every token
attends to its ancestors in the trie and to itself, and sits at the position it has in its own
sequence, so each sequence is computed exactly as if it were alone, but the shared prefix once.

Loss and scoring positions are given per sequence, so identical sequences still count twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Sequence


@dataclass
class PackedRow:
    """One row of tokens laid out as a prefix tree.

    Attributes:
        tokens: token ids in depth-first order.
        parents: each token's parent index in the row (-1 for a root).
        depths: each token's position within its own sequence.
        ends: for each packed sequence, the row index of every one of its tokens, in order.
    """

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    ends: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)


class _Trie:
    def __init__(self) -> None:
        self.children: list[dict[int, int]] = [{}]  # node 0 is a virtual root
        self.token: list[int] = [-1]
        self.parent: list[int] = [-1]
        self.sequences: list[list[int]] = []

    def new_nodes(self, sequence: Sequence[int]) -> int:
        node, shared = 0, 0
        for token in sequence:
            node = self.children[node].get(token, -1)
            if node < 0:
                break
            shared += 1
        return len(sequence) - shared

    def insert(self, sequence: Sequence[int]) -> None:
        node, path = 0, []
        for token in sequence:
            child = self.children[node].get(token)
            if child is None:
                child = len(self.token)
                self.children[node][token] = child
                self.children.append({})
                self.token.append(token)
                self.parent.append(node)
            node = child
            path.append(node)
        self.sequences.append(path)

    def size(self) -> int:
        return len(self.token) - 1

    def to_row(self) -> PackedRow:
        row = PackedRow()
        index_of: dict[int, int] = {}
        stack = [(child, -1, 0) for child in reversed(list(self.children[0].values()))]
        while stack:
            node, parent_index, depth = stack.pop()
            index_of[node] = len(row.tokens)
            row.tokens.append(self.token[node])
            row.parents.append(parent_index)
            row.depths.append(depth)
            stack.extend((child, index_of[node], depth + 1) for child in reversed(list(self.children[node].values())))
        row.ends = [[index_of[node] for node in path] for path in self.sequences]
        return row


def pack(
    sequences: Sequence[Sequence[int]], max_tokens: int, shared_prefix: bool = True, groups: Sequence[Hashable] | None = None
) -> list[tuple[PackedRow, list[int]]]:
    """Lay sequences into rows of at most ``max_tokens`` tokens (a longer sequence gets a row of its own).

    Returns (row, indices of the input sequences in that row, in ``row.ends`` order). Sequences
    are packed in the order given, so callers keep sequences that share prefixes together.
    ``groups`` (one key per sequence) starts a new row whenever the key changes: one dialogue
    per row, so no token pays attention over another dialogue's tokens.
    """
    rows: list[tuple[PackedRow, list[int]]] = []
    trie, members = _Trie(), []
    for index, sequence in enumerate(sequences):
        new_group = groups is not None and members and groups[index] != groups[members[-1]]
        if members and (new_group or not shared_prefix or trie.size() + trie.new_nodes(sequence) > max_tokens):
            rows.append((trie.to_row(), members))
            trie, members = _Trie(), []
        trie.insert(sequence)
        members.append(index)
    if members:
        rows.append((trie.to_row(), members))
    return rows


def subtree_sizes(parents: Sequence[int]) -> list[int]:
    """How many tokens each token's subtree holds (itself included), from depth-first parents."""
    sizes = [1] * len(parents)
    for i in range(len(parents) - 1, -1, -1):
        if parents[i] >= 0:
            sizes[parents[i]] += sizes[i]
    return sizes


def row_tensors(rows: Sequence[PackedRow], pad_id: int):
    """Batch rows into ``input_ids``, ``position_ids`` and a boolean 4D attention mask (True: may attend).

    In depth-first order every subtree is a contiguous range, so token ``i`` may attend to token
    ``j`` exactly when ``j <= i < j + size(j)``: its ancestors and itself. Padding tokens attend
    only to themselves, so no attention row is empty (an empty row makes scaled-dot-product
    attention return NaN).
    """
    import numpy as np
    import torch

    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), length), dtype=torch.long)
    allowed = np.zeros((len(rows), length, length), dtype=bool)
    index = np.arange(length)
    for b, row in enumerate(rows):
        n = len(row)
        ids[b, :n] = torch.tensor(row.tokens, dtype=torch.long)
        positions[b, :n] = torch.tensor(row.depths, dtype=torch.long)
        ends = index.copy()
        ends[:n] = index[:n] + np.asarray(subtree_sizes(row.parents))  # padding: a subtree of one
        ends[n:] = index[n:] + 1
        allowed[b] = (index[None, :] <= index[:, None]) & (index[:, None] < ends[None, :])
        allowed[b, n:, :n] = False
    return ids, positions, torch.from_numpy(allowed)[:, None]
