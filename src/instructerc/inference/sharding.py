"""Prediction across processes: ``instructerc predict`` under ``accelerate launch`` or ``torchrun``.

The input is cut into the chunks a single process would predict one after another, and chunk
``k`` goes to process ``k % world``: each chunk is then computed exactly as a single process
computes it (same dialogues in the same batches), so the merged output equals a single-process
run. Each process writes its chunks to a part file beside the output; after a barrier the
first process interleaves the parts back into input order, writes the output atomically and
removes the parts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

from instructerc.files import atomic_write


@dataclass(frozen=True)
class Shard:
    """This process's share of the chunks; ``state`` is accelerate's process state (None: one process)."""

    rank: int = 0
    world: int = 1
    state: Any = None

    def owns(self, chunk: int) -> bool:
        return chunk % self.world == self.rank

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def current_shard() -> tuple[Shard, Any]:
    """This process's shard and device: under a multi-process launcher, accelerate's rank,
    world size and device (a GPU per process, or the CPU over gloo); else one process and no
    device chosen (the predictor's default)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard(), None
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return Shard(state.process_index, state.num_processes, state), state.device


def part_path(output: Path, shard: Shard) -> Path:
    return output.with_name(f".{output.name}.part-{shard.rank:05d}-of-{shard.world:05d}")


@contextlib.contextmanager
def shard_output(output: Path, shard: Shard) -> Iterator[IO[str]]:
    """Where this process writes its chunks' records: the output itself for one process (written
    atomically), else its part file."""
    if shard.world == 1:
        with atomic_write(output) as handle:
            yield handle
        return
    with atomic_write(part_path(output, shard)) as handle:
        yield handle


def merge_parts(output: Path, shard: Shard, chunk_lines: list[int]) -> None:
    """After every process has written its part: the first process writes the output, the
    parts' lines in input order (``chunk_lines[k]``: lines of chunk ``k``), and removes the parts."""
    if shard.world == 1:
        return
    shard.wait()
    if shard.main:
        parts = [part_path(output, Shard(rank, shard.world)) for rank in range(shard.world)]
        handles = [part.open(encoding="utf-8") for part in parts]
        try:
            with atomic_write(output) as merged:
                for chunk, lines in enumerate(chunk_lines):
                    source = handles[chunk % shard.world]
                    for _ in range(lines):
                        line = source.readline()
                        if not line:
                            raise RuntimeError(f"{parts[chunk % shard.world]} ends before chunk {chunk}: a process did not finish")
                        merged.write(line)
        finally:
            for handle in handles:
                handle.close()
        for part in parts:
            part.unlink()
    shard.wait()
