"""What an entry leaves to the data, settled when the data is prepared (before the model is built: heads need the
number of classes). An entry may leave:

* `from_data.inputs`: input columns used where the data has them (tasksource's unset second sentence: the dataset's
  `sentence2` where it has one), appended to `inputs`;
* `from_data.holdout: {size, seed}`: where the data has no split of the name `splits.validation` gives, validation
  is carved out of train (`validation_from_train`) instead; a `test` split the data lacks is dropped;
* a family field set to `features` (`num_labels`, `num_choices`): the family reads it from the data
  (`DataFamily.resolve`), e.g. a ClassLabel's names.

The resolved entry is parsed again by the catalogue (so it passes the same checks) and every decision is logged.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from datasets import Dataset, ReadInstruction

from core.errors import CatalogueError
from core.task_spec import FROM_FEATURES, TaskSpec
from datamodules.catalogue import spec_from_dict
from datamodules.families import FAMILIES


def needs_data(spec: TaskSpec) -> bool:
    own = dataclasses.asdict(spec.fields) if dataclasses.is_dataclass(spec.fields) else {}
    return bool(spec.from_data) or FROM_FEATURES in [v for v in own.values() if isinstance(v, str)]


def split_name(name: str) -> str:
    return re.sub(r"\[.*\]$", "", name)


def split_rows(dataset: Dataset, split: str, task: str) -> Dataset:
    """The rows of a whole split that a split spec with a slice (`train[:10%]`, `train[100:]+train[:50]`) names, as
    `load_dataset(split=...)` reads them (datasets' own ReadInstruction), for entries whose data is read whole."""
    if split_name(split) == split:
        return dataset
    try:
        parts = ReadInstruction.from_spec(split).to_absolute({split_name(split): len(dataset)})
    except (ValueError, AssertionError) as error:
        raise CatalogueError(f"split '{split}' is not a split spec `datasets` reads ({error})", task=task,
                             field="splits") from error
    return dataset.select([i for part in parts for i in range(part.from_, part.to)])


def resolve(spec: TaskSpec, data: dict[str, Dataset]) -> tuple[TaskSpec, list[str]]:
    """The entry with what it leaves to the data settled from `data` (the source's splits by name), and one log line
    per decision."""
    values: dict[str, Any] = {**spec.to_dict(), "from_data": None}
    lines: list[str] = []
    splits, holdout = dict(spec.splits), (spec.from_data or {}).get("holdout")
    if split_name(splits["train"]) not in data:
        raise CatalogueError(f"the data has no split '{splits['train']}' to train on (it has {sorted(data)})",
                             task=spec.name, field="splits")
    if holdout and not spec.validation_from_train and split_name(splits["validation"]) not in data:
        values["validation_from_train"] = holdout
        lines.append(f"validation carved from train ({holdout['size']} of its rows, seed {holdout['seed']}): the data "
                     f"has no split '{splits.pop('validation')}' (it has {sorted(data)})")
    if holdout and "test" in splits and split_name(splits["test"]) not in data:
        lines.append(f"no test split: the data has no split '{splits.pop('test')}'")
    if spec.validation_from_train or values.get("validation_from_train"):
        splits.pop("validation", None)
    values["splits"] = splits
    train = data[split_name(splits["train"])]
    optional = (spec.from_data or {}).get("inputs") or []
    found = [c for c in optional if c.split(".")[0] in train.column_names]
    values["inputs"] = [*spec.inputs, *found]
    if optional:
        lines.append(f"inputs {values['inputs']}" + (f" (the data has no {sorted(set(optional) - set(found))})"
                                                      if set(optional) - set(found) else ""))
    roles = {role: data[split_name(name)] for role, name in splits.items() if split_name(name) in data}
    changes, family_lines = FAMILIES[spec.family].resolve(spec, roles)
    values.update(changes)
    resolved = spec_from_dict(values)
    return resolved, lines + family_lines
