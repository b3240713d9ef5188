"""Hundreds of tasks (tasksource's scale): the epoch plan and the validation loaders' set-up for 50 and 500 synthetic
tasks, each beside its baseline in the same run, the same total rows in 1 task.

    python bench/many_tasks.py [--rows 200000] [--repeats 3]

Epoch plan: `MultiTaskBatchSampler` built for an epoch and its batches listed (proportional sampling, token budget,
length grouping). Validation loaders: one `DataLoader` per task over its preprocessed split (what
`MultiTaskDataModule.val_dataloader` builds: an EvalBatchSampler and the collator). Times are the best of `repeats`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from datasets import Dataset
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from datamodules.collate import MultiTaskCollator, MultiTaskDataset
from datamodules.eval_sampler import EvalBatchSampler
from datamodules.families import FAMILIES
from datamodules.sampler import MultiTaskBatchSampler

FAMILY = next(iter(FAMILIES.values()))  # one family's collation: the cost measured is per task, not per family


def split_rows(total: int, tasks: int, seed: int = 0) -> list[int]:
    """Task sizes summing to `total`, skewed as real mixtures are (log-uniform)."""
    weights = np.exp(np.random.default_rng(seed).uniform(0, np.log(100), tasks))
    sizes = np.maximum(1, np.floor(weights / weights.sum() * total)).astype(int)
    sizes[0] += total - sizes.sum()
    return sizes.tolist()


def plan_seconds(sizes: list[int], repeats: int) -> tuple[float, int]:
    rng = np.random.default_rng(0)
    lengths = [rng.integers(8, 256, n) for n in sizes]
    best, batches = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        sampler = MultiTaskBatchSampler(lengths, None, max_tokens=8192, seed=0, epoch=0)
        batches = len(list(iter(sampler)))
        best = min(best, time.perf_counter() - start)
    return best, batches


def eval_split(n: int) -> Dataset:
    rng = np.random.default_rng(n)
    lengths = rng.integers(8, 64, n)
    return Dataset.from_dict({"input_ids": [[5] * int(k) for k in lengths], "length": lengths.tolist(),
                              **{key.column: [0.0] * n for key in FAMILY.batch_keys}})


def loaders_seconds(sizes: list[int], repeats: int) -> float:
    splits = [eval_split(max(1, n // 10)) for n in sizes]  # validation ~ a tenth of train
    collator = MultiTaskCollator([FAMILY] * len(sizes), pad_token_id=1)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        loaders = [DataLoader(MultiTaskDataset([ds], [i]), batch_sampler=EvalBatchSampler(len(ds), 64),
                              collate_fn=collator) for i, ds in enumerate(splits)]
        best = min(best, time.perf_counter() - start)
    assert len(loaders) == len(sizes)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="training rows in all, whatever the task count")
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    print(f"{options.rows:,} training rows in all; best of {options.repeats}\n")
    print("| tasks | epoch plan (s) | plan, same rows in 1 task (s) | ratio | batches | "
          "validation loaders set-up (s) | same rows in 1 task (s) | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    one_plan, _ = plan_seconds([options.rows], options.repeats)
    one_loaders = loaders_seconds([options.rows], options.repeats)
    for tasks in (50, 500):
        sizes = split_rows(options.rows, tasks)
        plan, batches = plan_seconds(sizes, options.repeats)
        loaders = loaders_seconds(sizes, options.repeats)
        print(f"| {tasks} | {plan:.3f} | {one_plan:.3f} | {plan / one_plan:.1f}x | {batches:,} | {loaders:.4f} | "
              f"{one_loaders:.4f} | {loaders / one_loaders:.0f}x |")


if __name__ == "__main__":
    main()
