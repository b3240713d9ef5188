"""Checks of a task's raw split before anything is tokenized or written: errors name the task, split and field,
and for bad rows how many there are and the first index."""

from __future__ import annotations

from datasets import Dataset

from datamodules.catalogue import TaskSpec
from datamodules.families import FAMILIES, column, texts_bad

CHECK_BATCH = 10_000


class DataValidationError(ValueError):
    """A split that cannot be trained on."""


def validate_split(spec: TaskSpec, split: str, dataset: Dataset) -> None:
    where = f"task '{spec.name}', split '{split}'"
    if len(dataset) == 0:
        raise DataValidationError(f"{where}: the split is empty")
    missing = sorted({c.split(".")[0] for c in spec.columns()} - set(dataset.column_names))
    if missing:
        raise DataValidationError(f"{where}: missing column(s) {missing}; the data has {dataset.column_names}")
    checks = {name: (lambda b, n=name: texts_bad(column(b, n))) for name in spec.inputs}
    checks |= FAMILIES[spec.family].checks(spec)
    roots = sorted({c.split(".")[0] for c in spec.columns()})
    bad_counts = {name: 0 for name in checks}
    first_bad: dict[str, int] = {}
    for offset in range(0, len(dataset), CHECK_BATCH):
        batch = dataset.select_columns(roots)[offset:offset + CHECK_BATCH]
        for name, check in checks.items():
            flags = check(batch)
            bad_counts[name] += sum(flags)
            if name not in first_bad and any(flags):
                first_bad[name] = offset + flags.index(True)
    for name, count in bad_counts.items():
        if count:
            problem = "null or not text" if name in spec.inputs else FAMILIES[spec.family].problem
            raise DataValidationError(f"{where}: field '{name}' is {problem} in {count} row(s), first at index "
                                      f"{first_bad[name]}")
