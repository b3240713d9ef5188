"""A validation split carved out of a train split (catalogue field `validation_from_train`), for datasets whose only
labelled held-out split is their test split: validation picks checkpoints, so it must not be the test set."""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from core.task_spec import TaskSpec
from core.errors import DataValidationError


def holdout_rows(num_rows: int, size: int | float, seed: int) -> np.ndarray:
    """The sorted row indices of the held-out part: `size` rows (or that fraction of `num_rows`, rounded), drawn by a
    permutation seeded only by `seed`, so the same rows every run whatever the caps, ranks or tokenizer."""
    count = size if isinstance(size, int) else round(size * num_rows)
    if not 0 < count < num_rows:
        raise ValueError(f"cannot hold out {count} of {num_rows} rows (size {size!r}): both parts need rows")
    return np.sort(np.random.default_rng(seed).permutation(num_rows)[:count])


def carve(dataset: Dataset, spec: TaskSpec, split: str) -> Dataset:
    """The `split` part of a task whose entry sets `validation_from_train` ("validation": exactly the held-out rows;
    "train": every other row, in source order); any other task or split unchanged. `select` fingerprints its indices,
    so the two parts (and each `size`/`seed`) get different preprocess cache keys."""
    if not spec.validation_from_train or split not in ("train", "validation"):
        return dataset
    try:
        held = holdout_rows(len(dataset), spec.validation_from_train["size"], spec.validation_from_train["seed"])
    except ValueError as error:
        where = f"task '{spec.name}', split '{split}', field 'validation_from_train'"
        raise DataValidationError(f"{where}: {error}") from error
    if split == "validation":
        return dataset.select(held)
    keep = np.ones(len(dataset), dtype=bool)
    keep[held] = False
    return dataset.select(np.flatnonzero(keep))
