"""Which task, which examples, which batch: the multi-task batch sampler.

Every rank computes the same epoch plan from (seed, epoch) with no communication. Each task's examples are
permuted and sharded across ranks (disjoint), drawn in the per-task counts the strategy sets (a task that runs out
is reshuffled and reused), mixed, grouped by length in pools and cut into batches by a token budget or a batch size.
All ranks get exactly the minimum batch count over ranks. Only indices are held, never batches.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

STRATEGIES = ("proportional", "temperature", "uniform")


def target_proportions(sizes: list[int], strategy: str, temperature: float = 2.0) -> np.ndarray:
    """p(task): proportional ~ size, temperature ~ size^(1/T), uniform ~ 1."""
    if strategy not in STRATEGIES:
        raise ValueError(f"data.sampling is '{strategy}'; expected one of {list(STRATEGIES)}")
    sizes_arr = np.asarray(sizes, dtype=np.float64)
    weights = {"proportional": sizes_arr, "temperature": sizes_arr ** (1.0 / temperature),
               "uniform": np.ones_like(sizes_arr)}[strategy]
    return weights / weights.sum()


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Yields lists of global indices (task t's example i is `offsets[t] + i`)."""

    def __init__(self, lengths: list[np.ndarray], rows: list[np.ndarray] | None = None, strategy: str = "proportional",
                 temperature: float = 2.0, caps: list[int | None] | None = None, batch_size: int = 32,
                 max_tokens: int | None = None, homogeneous: bool = False, group_by_length: bool = True,
                 pool_size: int = 4096, epoch_size: int | None = None, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0) -> None:
        self.lengths = [np.asarray(x, dtype=np.int64) for x in lengths]
        self.rows = [np.asarray(r, dtype=np.int64) for r in rows] if rows else [np.ones_like(x) for x in self.lengths]
        self.sizes = [len(x) for x in self.lengths]
        self.caps = caps or [None] * len(self.sizes)
        capped = [min(n, c) if c else n for n, c in zip(self.sizes, self.caps)]
        self.proportions = target_proportions(capped, strategy, temperature)
        total = epoch_size or sum(capped)
        self.counts = np.asarray(capped) if strategy == "proportional" and not epoch_size \
            else np.maximum(1, np.round(self.proportions * total)).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.batch_size, self.max_tokens, self.homogeneous = batch_size, max_tokens, homogeneous
        self.group_by_length, self.pool_size = group_by_length, pool_size
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.epoch = 0
        self._resume: tuple[int, int] | None = None
        self._plan: tuple[int, list[np.ndarray]] | None = None
        self._length: tuple[int, int] | None = None

    # ---- the plan --------------------------------------------------------------------------------------------
    def _draw(self, task: int, rank: int) -> np.ndarray:
        """This rank's examples of `task` for the epoch: its shard of a permutation, reshuffled when exhausted."""
        shard = np.random.default_rng([self.seed, self.epoch, task]).permutation(self.sizes[task])
        shard = shard[rank::self.num_replicas]
        need = int(self.counts[task]) // self.num_replicas
        if len(shard) == 0:
            shard = np.random.default_rng([self.seed, self.epoch, task]).permutation(self.sizes[task])
        reuse = [np.random.default_rng([self.seed, self.epoch, task, rank, k]).permutation(shard)
                 for k in range(need // len(shard))]
        return np.concatenate([shard, *reuse])[:need] + self.offsets[task]

    def _cut(self, indices: np.ndarray) -> list[np.ndarray]:
        """Cut an ordered run of examples into batches by token budget (rows x longest row) or batch size."""
        if self.max_tokens is None:
            return [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        row_len, rows = self._row_len[indices], self._rows[indices]
        batches, start, longest, count = [], 0, 0, 0
        for i in range(len(indices)):
            longest_i, count_i = max(longest, row_len[i]), count + rows[i]
            if i > start and longest_i * count_i > self.max_tokens:
                batches.append(indices[start:i])
                start, longest_i, count_i = i, row_len[i], rows[i]
            longest, count = longest_i, count_i
        return batches + [indices[start:]] if len(indices) > start else batches

    def _batches_of(self, stream: np.ndarray) -> list[np.ndarray]:
        """Without grouping the stream is cut as it is; with it, each pool is sorted by row length first."""
        if not self.group_by_length:
            return self._cut(stream)
        batches = []
        for p in range(0, len(stream), self.pool_size):
            pool = stream[p:p + self.pool_size]
            batches += self._cut(pool[np.argsort(self._row_len[pool], kind="stable")])
        return batches

    def _rank_batches(self, rank: int) -> list[np.ndarray]:
        draws = [self._draw(t, rank) for t in range(len(self.sizes))]
        mix = np.random.default_rng([self.seed, self.epoch, rank, 1 << 20])
        if self.homogeneous:
            batches = [b for d in draws for b in self._batches_of(d)]
        else:
            stream = np.concatenate(draws)
            batches = self._batches_of(stream[mix.permutation(len(stream))])
        return [batches[i] for i in mix.permutation(len(batches))]

    @property
    def _rows(self) -> np.ndarray:
        return self._flat("_rows_cache", self.rows)

    @property
    def _row_len(self) -> np.ndarray:
        return self._flat("_row_len_cache", [-(-x // r) for x, r in zip(self.lengths, self.rows)])

    def _flat(self, name: str, parts: list[np.ndarray]) -> np.ndarray:
        if not hasattr(self, name):
            setattr(self, name, np.concatenate(parts))
        return getattr(self, name)

    def _epoch_batches(self) -> list[np.ndarray]:
        if self._plan is None or self._plan[0] != self.epoch:
            self._plan = (self.epoch, self._rank_batches(self.rank))
        return self._plan[1]

    def __len__(self) -> int:
        """Batches per rank this epoch: the minimum over ranks, so every rank steps the same number of times."""
        if self._length is None or self._length[0] != self.epoch:
            counts = [len(self._epoch_batches()) if r == self.rank else len(self._rank_batches(r))
                      for r in range(self.num_replicas)]
            self._length = (self.epoch, min(counts))
        return self._length[1]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._epoch_batches()[:len(self)]
        start = self._resume[1] if self._resume and self._resume[0] == self.epoch else 0
        self._resume = None
        for batch in batches[start:]:
            yield batch.tolist()

    # ---- epochs and resume --------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_from(self, epoch: int, batches_done: int) -> None:
        """The next iteration over `epoch` starts after its first `batches_done` batches."""
        self._resume = (epoch, batches_done)
