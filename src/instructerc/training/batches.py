"""From encoded examples to optimizer steps and packed, padded micro-batches."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from instructerc.errors import InputError
from instructerc.modeling.packing import PackedRow, pack, row_tensors
from instructerc.prompts.encoding import EncodedExample
from instructerc.prompts.example import Task


def epoch_order(examples: Sequence[EncodedExample], seed: int, by_dialogue: bool, chunk: int | None = None) -> list[int]:
    """A seeded permutation of the examples for one epoch.

    With ``by_dialogue`` the dialogues are shuffled and each keeps its examples together (in
    utterance order), so the examples of one step share prefixes and pack tightly; with ``chunk``
    too, runs of at most ``chunk`` consecutive examples of a dialogue are shuffled instead.
    Otherwise the examples themselves are shuffled.
    """
    rng = random.Random(seed)
    if not by_dialogue:
        order = list(range(len(examples)))
        rng.shuffle(order)
        return order
    groups: dict[tuple[str, str], list[int]] = {}
    for position, encoded in enumerate(examples):
        groups.setdefault((encoded.example.dataset, encoded.example.dialogue_id), []).append(position)
    runs = list(groups.values())
    if chunk is not None:
        runs = [run[start : start + chunk] for run in runs for start in range(0, len(run), chunk)]
    rng.shuffle(runs)
    return [position for run in runs for position in run]


def steps(order: list[int], batch_size: int, world_size: int) -> list[list[int]]:
    """Global batches of ``batch_size`` examples; a last batch too small to give every process
    an example is dropped (a process without data would stall the gradient all-reduce)."""
    check_batch_size(batch_size, world_size)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if batches and len(batches[-1]) < world_size:
        batches.pop()
    return batches


def check_batch_size(batch_size: int, world_size: int) -> None:
    """Refuses a global batch smaller than the number of processes. Every batch would then
    leave a process without an example: under data parallelism it skips the backward whose
    gradient all-reduce the others wait in, and the run hangs at its first step."""
    if batch_size < world_size:
        raise InputError(
            f"the global batch of {batch_size} example(s) is smaller than the {world_size} processes, and every process "
            f"needs an example per step: set optim.batch_size to at least {world_size}, or launch fewer processes",
            field="optim.batch_size",
        )


def shard(batch: list[int], rank: int, world_size: int) -> list[int]:
    """This process's contiguous share of a global batch (contiguous keeps dialogues together)."""
    size, extra = divmod(len(batch), world_size)
    start = rank * size + min(rank, extra)
    return batch[start : start + size + (1 if rank < extra else 0)]


@dataclass
class MicroBatch:
    """Tensors for one forward pass and where each example's loss tokens are.

    Attributes:
        input_ids, position_ids, attention_mask: the packed rows, padded (a boolean 4D mask).
        keep: sorted row positions whose logits are computed (the union over rows).
        pick_row, pick_keep: for every loss token, its row and its index in ``keep``.
        labels: the token each loss position must predict.
        example_of: for every loss token, which example (0..n-1 in this micro-batch) it belongs to.
        examples: how many examples the micro-batch holds.
        tokens: real (unpadded) tokens, for throughput accounting.
    """

    input_ids: Any
    position_ids: Any
    attention_mask: Any
    keep: Any
    pick_row: Any
    pick_keep: Any
    labels: Any
    example_of: Any
    examples: int
    tokens: int

    def to(self, device: Any) -> "MicroBatch":
        for name in ("input_ids", "position_ids", "attention_mask", "keep", "pick_row", "pick_keep", "labels", "example_of"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def collate(examples: Sequence[EncodedExample], pad_id: int, max_tokens: int, shared_prefix: bool) -> MicroBatch:
    """Pack examples (prompt + target) into prefix-tree rows and mark their target tokens."""
    import torch

    sequences = [list(e.input_ids) for e in examples]
    packed = pack(sequences, max_tokens, shared_prefix)
    rows: list[PackedRow] = [row for row, _ in packed]
    ids, positions, mask = row_tensors(rows, pad_id)
    picks: list[tuple[int, int, int, int]] = []  # (row, position, label, example)
    for b, (row, members) in enumerate(packed):
        for ends, member in zip(row.ends, members):
            encoded = examples[member]
            start = len(encoded.prompt_ids)
            for k in range(start, len(encoded.input_ids)):
                picks.append((b, ends[k - 1], encoded.input_ids[k], member))
    keep = sorted({position for _, position, _, _ in picks})
    index_in_keep = {position: i for i, position in enumerate(keep)}
    return MicroBatch(
        input_ids=ids,
        position_ids=positions,
        attention_mask=mask,
        keep=torch.tensor(keep, dtype=torch.long),
        pick_row=torch.tensor([p[0] for p in picks], dtype=torch.long),
        pick_keep=torch.tensor([index_in_keep[p[1]] for p in picks], dtype=torch.long),
        labels=torch.tensor([p[2] for p in picks], dtype=torch.long),
        example_of=torch.tensor([p[3] for p in picks], dtype=torch.long),
        examples=len(examples),
        tokens=sum(len(r) for r in rows),
    )


def micro_batches(indices: list[int], examples: Sequence[EncodedExample], micro_batch_size: int) -> list[list[EncodedExample]]:
    return [[examples[i] for i in indices[j : j + micro_batch_size]] for j in range(0, len(indices), micro_batch_size)]


def class_weights(examples: Sequence[EncodedExample], power: float) -> list[float] | None:
    """Per example, its loss weight under ``optim.class_balance`` = ``power`` (``None`` at 0:
    unweighted). Emotion examples are counted per task, source dataset and gold label, since one
    label is common in one dataset and rare in another; other examples weigh 1."""
    if power == 0:
        return None
    emotion_tasks = (Task.ERC, Task.EMOTION_PREDICTION)
    keys = [(e.example.task, e.example.dataset, e.example.label) if e.example.task in emotion_tasks else None for e in examples]
    counts = Counter(key for key in keys if key is not None)
    if not counts:
        return None
    raw = {key: count**-power for key, count in counts.items()}
    scale = sum(counts.values()) / sum(raw[key] * count for key, count in counts.items())
    return [1.0 if key is None else raw[key] * scale for key in keys]
