"""Entries that run tasksource's own preprocessing when the data is prepared (`source.tasksource: <task id>`, written
by datamodules/tasksource_import.py where a definition needs tasksource's code: a function for a field, a
`pre_process`/`post_process`). The rest of `source` is the `datasets.load_dataset` call, so a local copy works as for
any entry. tasksource is an optional package (requirements-tasksource.txt).

What runs is the definition's own code: `pre_process`, then each field (a column name or a function of the row),
`post_process`, and tasksource's label casts (`label_values`; string labels to classes as `fix_labels` sorts them).
What does not run is its loader's split and choice handling: every split keeps its name (the entry's `splits` pick
them; the official validation split stays whole), every choice is kept in the source's order, and a ClassLabel's ids
are kept.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset

from core.errors import CatalogueError, MissingPackageError
from core.task_spec import TaskSpec
from datamodules.families import FAMILIES
from datamodules.families.base import named_classes

TASKSOURCE = "tasksource"  # the key of `source` naming the task; also the package
PIN = "tasksource==0.1.1"
INSTALL = "pip install -r requirements-tasksource.txt"
_NOT_FIELDS = {"preserve_choices"}  # definition attributes that are neither shared settings nor fields


def is_tasksource(spec: TaskSpec) -> bool:
    return TASKSOURCE in spec.source


def package(spec: TaskSpec) -> Any:
    """The tasksource package, or MissingPackageError naming the task."""
    try:
        import tasksource
    except ImportError:
        raise MissingPackageError(spec.name, PIN, INSTALL, f"runs tasksource's preprocessing of "
                                                           f"'{spec.source[TASKSOURCE]}'") from None
    return tasksource


def check_installed(specs: list[TaskSpec]) -> None:
    """Fail before anything runs when a selected entry needs tasksource and it is missing."""
    for spec in specs:
        if is_tasksource(spec):
            package(spec)


def definition(spec: TaskSpec) -> Any:
    """The task's tasksource definition (a SoftLabeling annotation: its hard view)."""
    tasksource = package(spec)
    try:
        mapping = tasksource.load_preprocessing(id=spec.source[TASKSOURCE])
    except (KeyError, ValueError) as error:
        raise CatalogueError(f"field 'source': the installed tasksource has no task '{spec.source[TASKSOURCE]}' "
                             f"({error}); this catalogue was generated with {PIN}", task=spec.name,
                             field="source") from None
    return mapping.view(False) if isinstance(mapping, tasksource.SoftLabeling) else mapping


def load(spec: TaskSpec) -> DatasetDict:
    """Every split of the source, through the definition's preprocessing, in the columns it writes."""
    tasksource = package(spec)
    mapping = definition(spec)
    kwargs = spec.load_kwargs()
    kwargs.pop(TASKSOURCE)
    data = load_dataset(**kwargs)
    data = mapping.pre_process(data)
    shared = {f.name for f in dataclasses.fields(tasksource.preprocess.SharedFields)} | _NOT_FIELDS
    fields = {k: v for k, v in mapping.to_dict().items() if k not in shared and v is not None}
    # `name(column, classes)` turns the column's ids into names that fix_labels then sorts: keep the ids instead
    fields = {k: named[0] if (named := named_classes(v)) else v for k, v in fields.items()}
    data = DatasetDict({split: _fields(rows, fields, f"{spec.name}/{split}") for split, rows in data.items()})
    gold = FAMILIES[spec.family].gold_column(spec)
    data = _labels(tasksource, mapping, data, gold) if gold else data
    return mapping.post_process(data)


def _fields(rows: Dataset, fields: dict[str, Any], what: str) -> Dataset:
    """The definition's fields of each row: a column renamed (its feature kept: a ClassLabel stays one), or the value
    of its function; a column the data lacks is left out (an unset second sentence)."""
    columns = {k: v for k, v in fields.items() if isinstance(v, str) and v in rows.column_names}
    functions = {k: v for k, v in fields.items() if not isinstance(v, str)}

    def row_fields(row: dict[str, Any]) -> dict[str, Any]:
        return {**{k: row[v] for k, v in columns.items()}, **{k: f(row) for k, f in functions.items()}}
    out = rows.map(row_fields, remove_columns=rows.column_names, desc=f"tasksource fields of {what}")
    for key, source in columns.items():
        if out.features[key] != rows.features[source]:
            out = out.cast_column(key, rows.features[source])
    return out


def _labels(tasksource: Any, mapping: Any, data: DatasetDict, gold: str) -> DatasetDict:
    """Rows without a label dropped (null, or a ClassLabel's -1); string labels to classes as tasksource does
    (`label_values` in their order, else `fix_labels`: sorted, the NLI triple in its usual order)."""
    first = next(iter(data.values()))
    hidden = {None, -1} if isinstance(first.features.get(gold), ClassLabel) else {None}
    data = DatasetDict({k: rows.filter(lambda v: v not in hidden, input_columns=gold) for k, rows in data.items()})
    if mapping.label_values:
        return tasksource.preprocess.cast_explicit_label_values(data, mapping.label_values)
    if "train" in data and not isinstance(data["train"].features.get(gold), ClassLabel):
        return tasksource.preprocess.fix_labels(data, label_key=gold)
    return data
