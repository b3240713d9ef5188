"""Few-shot training subsets (`data.train_fraction`, `data.train_examples`): a seeded subset of each selected task's
train split, for data-efficiency studies. The subset is a prefix of one permutation seeded by (seed, task name), so
for a fixed seed the subsets are nested: the 10% subset lies inside the 20% subset, 100 examples inside 200."""

from __future__ import annotations

import zlib

import numpy as np
from datasets import Dataset

from core.errors import OptionError


def check_subset(fraction: float | None, examples: int | None) -> None:
    """Raise a ValueError naming the option when the subset options are not usable."""
    if fraction is not None and examples is not None:
        raise OptionError("data.train_fraction", "data.train_fraction and data.train_examples are both set; set one "
                                                 "of them")
    if fraction is not None and (isinstance(fraction, bool) or not 0 < fraction <= 1):
        raise OptionError("data.train_fraction", f"data.train_fraction must be in (0, 1], got {fraction!r}")
    if examples is not None and (isinstance(examples, bool) or not isinstance(examples, int) or examples < 1):
        raise OptionError("data.train_examples", f"data.train_examples must be an integer >= 1, got {examples!r}")


def subset_rows(num_rows: int, fraction: float | None, examples: int | None, seed: int, task: str) -> np.ndarray:
    """Sorted row indices of the subset: the first k of a permutation seeded by (seed, task), k = `examples`
    (at most `num_rows`) or `fraction` x `num_rows` rounded (at least 1)."""
    count = min(examples, num_rows) if examples is not None else max(1, round(fraction * num_rows))
    order = np.random.default_rng([seed, zlib.crc32(task.encode())]).permutation(num_rows)
    return np.sort(order[:count])


def train_subset(dataset: Dataset, fraction: float | None, examples: int | None, seed: int, task: str) -> Dataset:
    """The dataset itself when no subset is asked for or it would hold every row; else its subset rows in source
    order. `select` fingerprints its indices, so every (fraction or count, seed) gets its own preprocess cache key."""
    if fraction is None and examples is None:
        return dataset
    rows = subset_rows(len(dataset), fraction, examples, seed, task)
    return dataset if len(rows) == len(dataset) else dataset.select(rows)
