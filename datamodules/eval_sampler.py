"""Evaluation batches: whole examples (all windows of a span-QA example together), examples sharded across ranks
without duplicates, so per-task metrics are exact under DDP; every rank yields the same number of batches (a rank
with fewer examples ends with filler batches that count in no metric), so no rank waits in a collective."""

from __future__ import annotations

from typing import Iterator

from torch.utils.data import Sampler

from datamodules.collate import PaddingBatch


class EvalBatchSampler(Sampler[list[int]]):
    def __init__(self, num_rows: int, batch_size: int, groups: list[int] | None = None, num_replicas: int = 1,
                 rank: int = 0) -> None:
        """groups: example id of each row (rows of one example are contiguous); None = one row per example."""
        examples: list[list[int]] = []
        for row in range(num_rows):
            if groups is not None and examples and groups[row] == groups[row - 1]:
                examples[-1].append(row)
            else:
                examples.append([row])
        mine = examples[rank::num_replicas]
        self.batches = [sum(mine[i:i + batch_size], []) for i in range(0, len(mine), batch_size)]
        most = -(-len(examples[0::num_replicas]) // batch_size) if examples else 0  # rank 0 has the most
        filler = self.batches[0] if self.batches else (examples[0] if examples else [])
        self.batches += [PaddingBatch(filler) for _ in range(most - len(self.batches))]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)
