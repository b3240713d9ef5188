"""Checks of a task's raw split before anything is tokenized or written: errors name the task, split and field,
and for bad rows how many there are and the first index. What a good row is, the task's family says."""

from __future__ import annotations

from datasets import Dataset

from core.errors import DataValidationError
from core.task_spec import TaskSpec
from datamodules.families import FAMILIES

CHECK_BATCH = 10_000
__all__ = ["DataValidationError", "validate_split"]


def validate_split(spec: TaskSpec, split: str, dataset: Dataset) -> None:
    where = f"task '{spec.name}', split '{split}'"
    if len(dataset) == 0:
        raise DataValidationError(f"{where}: the split is empty")
    missing = sorted({c.split(".")[0] for c in spec.columns()} - set(dataset.column_names))
    if missing:
        raise DataValidationError(f"{where}: missing column(s) {missing}; the data has {dataset.column_names}")
    family = FAMILIES[spec.family]
    inputs = family.input_checks(spec)
    checks = {**inputs, **family.target_checks(spec)}
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
            problem = family.input_problem(spec) if name in inputs else family.problem
            raise DataValidationError(f"{where}: field '{name}' is {problem} in {count} row(s), first at index "
                                      f"{first_bad[name]}")
