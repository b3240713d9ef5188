"""Which task, which examples, which batch: the multi-task batch sampler.

Every rank computes the same global epoch plan from (seed, epoch) with no communication: each task's examples are
permuted and drawn in the counts the strategy sets (a task that runs out is reshuffled and reused), then batched by
one of three schemes (`BATCHING`), grouped by length in pools and cut by a token budget or a batch size. The
batch order is shuffled and batch i goes to rank i % world_size, so ranks hold disjoint examples and step equally
often (batches are split in two until their count divides evenly). With proportional sampling and no caps every
example is seen exactly once per epoch. Only index arrays are held, never batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from core.errors import DataValidationError, OptionError

STRATEGIES = ("proportional", "temperature", "uniform")
# mixed: every batch mixes tasks; task_per_batch: one task per micro-batch, many tasks per update through ranks and
# accumulation (the paper's scheme); task_per_update: every micro-batch of an update from one task (ablation)
BATCHING = ("mixed", "task_per_batch", "task_per_update")


def target_proportions(sizes: list[int], strategy: str, temperature: float = 2.0,
                       weights: list[float] | None = None) -> np.ndarray:
    """p(task): proportional ~ size, temperature ~ size^(1/T), uniform ~ 1; each times the task's sampling weight
    (`weights`, default 1) before normalising."""
    if strategy not in STRATEGIES:
        raise OptionError("data.sampling", f"data.sampling is '{strategy}'; expected one of {list(STRATEGIES)}")
    sizes_arr = np.asarray(sizes, dtype=np.float64)
    strength = {"proportional": sizes_arr, "temperature": sizes_arr ** (1.0 / temperature),
                "uniform": np.ones_like(sizes_arr)}[strategy]
    if weights is not None:
        strength = strength * np.asarray(weights, dtype=np.float64)
    return strength / strength.sum()


def total_variation(realized: list[float] | np.ndarray, target: list[float] | np.ndarray) -> float:
    """How far the realized mixture is from the target: 0.5 x sum |realized - target| (0 = equal, 1 = disjoint)."""
    return 0.5 * float(np.abs(np.asarray(realized, dtype=np.float64) - np.asarray(target, dtype=np.float64)).sum())


class _EpochHook:
    """Lightning calls `set_epoch` on `dataloader.batch_sampler.sampler`; this forwards it to the batch sampler."""

    def __init__(self, owner: MultiTaskBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Yields lists of global indices (task t's example i is `offsets[t] + i`)."""

    def __init__(self, lengths: list[np.ndarray], rows: list[np.ndarray] | None = None, strategy: str = "proportional",
                 temperature: float = 2.0, caps: list[int | None] | None = None, batch_size: int = 32,
                 max_tokens: int | None = None, homogeneous: bool = False, group_by_length: bool = True,
                 pool_size: int = 4096, epoch_size: int | None = None, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0, batching: str | None = None, accumulate: int = 1, epoch: int = 0,
                 weights: list[float] | None = None) -> None:
        """homogeneous: shorthand for batching='task_per_batch'. accumulate: micro-batches per update (used by
        `task_per_update`). weights: each task's sampling weight (default 1), times the strategy's."""
        batching = batching or ("task_per_batch" if homogeneous else "mixed")
        if batching not in BATCHING:
            raise OptionError("data.batching", f"data.batching is '{batching}'; expected one of {list(BATCHING)}")
        self.lengths = [np.asarray(x, dtype=np.int64) for x in lengths]
        self.rows = [np.asarray(r, dtype=np.int64) for r in rows] if rows else [np.ones_like(x) for x in self.lengths]
        self.sizes = [len(x) for x in self.lengths]
        if not any(self.sizes):
            raise DataValidationError("no training examples in any selected task (check data.train_fraction, "
                                      "data.train_examples and the tasks' train splits)")
        self.caps = caps or [None] * len(self.sizes)
        capped = [min(n, c) if c else n for n, c in zip(self.sizes, self.caps)]
        self.proportions = target_proportions(capped, strategy, temperature, weights)
        total = epoch_size or sum(capped)
        unweighted = weights is None or all(w == 1 for w in weights)
        self.counts = np.asarray(capped) if strategy == "proportional" and not epoch_size and unweighted \
            else np.maximum(1, np.round(self.proportions * total)).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.task_of_index = np.repeat(np.arange(len(self.sizes)), self.sizes)
        self.flat_rows = np.concatenate(self.rows)
        self.row_len = np.concatenate([-(-x // np.maximum(r, 1)) for x, r in zip(self.lengths, self.rows)])
        self.batch_size, self.max_tokens, self.batching = batch_size, max_tokens, batching
        self.group_by_length, self.pool_size = group_by_length, pool_size
        self.num_replicas, self.rank, self.seed, self.accumulate = num_replicas, rank, seed, max(1, accumulate)
        self.epoch = epoch
        self.sampler = _EpochHook(self)
        self._resume: tuple[int, int] | None = None
        self._plan: tuple[int, list[np.ndarray]] | None = None

    # ---- the plan --------------------------------------------------------------------------------------------
    def _draw(self, task: int) -> np.ndarray:
        """The epoch's examples of `task` (global indices): a permutation, reshuffled and reused when exhausted."""
        need, size = int(self.counts[task]), self.sizes[task]
        rounds = [np.random.default_rng([self.seed, self.epoch, task, k]).permutation(size)
                  for k in range(-(-need // size))]
        return np.concatenate(rounds)[:need] + self.offsets[task]

    def _cut(self, indices: np.ndarray) -> list[np.ndarray]:
        """Cut an ordered run of examples into batches by token budget (rows x longest row) or batch size."""
        if self.max_tokens is None:
            return [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        row_len, cum_rows = self.row_len[indices], np.cumsum(self.flat_rows[indices])
        if len(row_len) > 1 and np.all(row_len[1:] >= row_len[:-1]):
            return self._cut_sorted(indices, row_len.tolist(), cum_rows.tolist())
        batches, start, longest, count = [], 0, 0, 0
        rows = self.flat_rows[indices].tolist()
        for i, length in enumerate(row_len.tolist()):
            longest_i, count_i = max(longest, length), count + rows[i]
            if i > start and longest_i * count_i > self.max_tokens:
                batches.append(indices[start:i])
                start, longest_i, count_i = i, length, rows[i]
            longest, count = longest_i, count_i
        return batches + [indices[start:]] if len(indices) > start else batches

    def _cut_sorted(self, indices: np.ndarray, row_len: list[int], cum_rows: list[int]) -> list[np.ndarray]:
        """Greedy cut of a run sorted by row length: the cost of [s, i] is row_len[i] x rows in it, increasing in
        i, so each batch end is a binary search (one Python step per batch, not per example)."""
        batches, start, n = [], 0, len(row_len)
        while start < n:
            before = cum_rows[start - 1] if start else 0
            lo, hi = start + 1, n  # find the first end e > start whose batch [start, e] exceeds the budget
            while lo < hi:
                mid = (lo + hi) // 2
                if row_len[mid] * (cum_rows[mid] - before) > self.max_tokens:
                    hi = mid
                else:
                    lo = mid + 1
            batches.append(indices[start:lo])
            start = lo
        return batches

    def _batches_of(self, stream: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Without grouping the stream is cut as it is; with it, each pool is sorted by row length first."""
        if not self.group_by_length:
            return self._cut(stream)
        batches = []
        for p in range(0, len(stream), self.pool_size):
            pool = stream[p:p + self.pool_size]
            batches += self._cut(pool[np.argsort(self.row_len[pool], kind="stable")])
        return batches

    def _split_until(self, batches: list[np.ndarray], multiple: int) -> list[np.ndarray]:
        """Split the largest batches in two until the count is a multiple of `multiple` (no example dropped). The
        costs (examples x longest row; -1 for a single example) are computed once, vectorised, and updated per split:
        recomputing them per split cost minutes for a 4.8M-example epoch on 64 ranks."""
        if not (len(batches) % multiple or len(batches) < multiple):
            return batches
        costs = self._costs(batches)
        while len(batches) % multiple or len(batches) < multiple:
            largest = int(np.argmax(costs)) if len(costs) else 0
            if not len(costs) or costs[largest] < 0:
                raise DataValidationError(f"{sum(map(len, batches))} training example(s) cannot fill {multiple} "
                                          f"batch(es) (ranks x trainer.accumulate_grad_batches): too few training "
                                          f"examples for this many processes")
            half = len(batches[largest]) // 2
            batches[largest:largest + 1] = [batches[largest][:half], batches[largest][half:]]
            costs = np.concatenate([costs[:largest], self._costs(batches[largest:largest + 2]), costs[largest + 1:]])
        return batches

    def _costs(self, batches: list[np.ndarray]) -> np.ndarray:
        """examples x longest row of each batch, -1 where it holds a single example (it cannot be split)."""
        sizes = np.fromiter(map(len, batches), dtype=np.int64, count=len(batches))
        if not len(batches) or not sizes.min():
            return np.array([len(b) * int(self.row_len[b].max()) if len(b) > 1 else -1 for b in batches],
                            dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        longest = np.maximum.reduceat(self.row_len[np.concatenate(batches)], starts)
        return np.where(sizes > 1, sizes * longest, -1)

    def _global_batches(self) -> list[np.ndarray]:
        """Every rank's batches of the epoch, in order; rank r takes positions r, r + R, r + 2R, ..."""
        draws = [self._draw(t) for t in range(len(self.sizes))]
        rng = np.random.default_rng([self.seed, self.epoch, 1 << 20])
        if self.batching == "mixed":
            stream = np.concatenate(draws)
            batches = self._split_until(self._batches_of(stream[rng.permutation(len(stream))], rng),
                                        self.num_replicas)
            return [batches[i] for i in rng.permutation(len(batches))]
        if self.batching == "task_per_batch":
            batches = [b for d in draws if len(d) for b in self._batches_of(d, rng)]
            batches = self._split_until(batches, self.num_replicas)
            return [batches[i] for i in rng.permutation(len(batches))]
        update = self.num_replicas * self.accumulate  # task_per_update: groups of `update` batches of one task
        groups = []
        for d in draws:
            if not len(d):
                continue
            task_batches = self._batches_of(d, rng)
            full = len(task_batches) // update * update
            tail = task_batches[full:]
            groups += [task_batches[i:i + update] for i in range(0, full, update)]
            if tail:
                groups.append(self._split_until(tail, update)[:update] if sum(map(len, tail)) >= update
                              else self._split_until(task_batches[:update], update)[:update])
        return [b for g in rng.permutation(len(groups)) for b in groups[g]]

    def _epoch_batches(self) -> list[np.ndarray]:
        if self._plan is None or self._plan[0] != self.epoch:
            self._plan = (self.epoch, self._global_batches()[self.rank::self.num_replicas])
        return self._plan[1]

    def __len__(self) -> int:
        """Batches per rank this epoch (equal on every rank by construction)."""
        return len(self._epoch_batches())

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._epoch_batches()
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

    def tasks_per_batch(self) -> np.ndarray:
        """Distinct tasks in each of this rank's batches this epoch."""
        return np.array([len(np.unique(self.task_of_index[b])) for b in self._epoch_batches()])
