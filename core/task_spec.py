"""One resolved catalogue entry. The fields every task has live here; a family's own fields (label, choices,
answers, ...) live in its data-side file (`datamodules/families/`) and reach the spec as `fields`, an object of the
family's field class. The catalogue (`datamodules/catalogue.py`) parses entries into specs."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# fields of every entry, besides `family` and the family's own: field -> (check of a non-null value, what it must be)
GENERIC_FIELDS = ("source", "inputs", "splits", "validation_from_train", "metrics", "max_train_examples",
                  "max_eval_examples", "id", "local", "sampling_weight", "loss_weight", "from_data", "license")


@dataclass
class TaskSpec:
    """The YAML keys of an entry (table in docs/architecture.md, "Task spec")."""

    name: str  # the entry's key: lowercase and stable (it keys heads, metrics and checkpoints)
    family: str  # a registered family (datamodules/families/__init__.py)
    source: dict[str, Any]  # `datasets.load_dataset` kwargs: path, name, data_files, revision
    inputs: list[str]  # input columns; dotted names reach into nested columns
    # source split names per role; values may slice (`train[:90%]`)
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "validation": "validation"})
    # carve `validation` out of `train` instead of naming a split: {size: rows (int) or fraction (< 1), seed: int}
    validation_from_train: dict[str, Any] | None = None
    metrics: list[str] = field(default_factory=list)  # metric names of the family; first = primary
    max_train_examples: int | None = None  # cap on this task's training examples per epoch
    max_eval_examples: int | None = None  # cap on this task's validation/test examples
    id: str | None = None  # column naming each example (e.g. SQuAD's `id`), written beside its prediction
    # the same task read from a local copy under the data root (`data.data_root`): fields that differ from the hub
    # entry (at least `source`); relative `data_files`/`data_dir` resolve against the data root
    local: dict[str, Any] | None = None
    # x the sampling strategy's weight of this task before normalising (how often it is drawn); unset = 1
    sampling_weight: float | None = None
    # x this task's scaled loss, after 1/log n (how much it counts); unset = 1
    loss_weight: float | None = None
    # what is settled when the data is prepared (datamodules/from_data.py): {inputs: [columns used where the data has
    # them], holdout: {size, seed} carving validation out of train where the data has no split of that name}
    from_data: dict[str, Any] | None = None
    license: str | None = None  # the data's license as its source states it (shown by the task search)
    fields: Any = None  # the family's own fields (a dataclass of its data-side file)
    catalogue_dir: str = "."  # folder of the YAML file; relative `data_files` resolve against it
    data_root: str | None = None  # where the entry's local copy was read from, when it was

    def __getattr__(self, name: str) -> Any:
        """The family's own fields read through the spec (`spec.label` is `spec.fields.label`), for convenience in
        tests and notebooks; the project's code reads `spec.fields`."""
        fields = self.__dict__.get("fields")
        if fields is not None and not name.startswith("_") and hasattr(fields, name):
            return getattr(fields, name)
        raise AttributeError(f"{type(self).__name__} '{self.__dict__.get('name')}' has no field '{name}'")

    def columns(self) -> list[str]:
        """Every source column this task reads (dotted names reach into nested columns)."""
        own = self.fields.columns() if hasattr(self.fields, "columns") else []
        return [c for c in dict.fromkeys([*self.inputs, *own, self.id]) if c]

    def load_kwargs(self) -> dict[str, Any]:
        """`datasets.load_dataset` keyword arguments, with relative local paths made absolute (against the data root
        for a local copy, else against the catalogue file's folder)."""
        kwargs = dict(self.source)
        root = Path(self.data_root or self.catalogue_dir)
        if "data_files" in kwargs:
            kwargs["data_files"] = _resolve_paths(kwargs["data_files"], root)
        if "data_dir" in kwargs and not Path(kwargs["data_dir"]).is_absolute():
            kwargs["data_dir"] = str(root / kwargs["data_dir"])
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """The entry as flat plain data (what the YAML says, resolved): checkpoints and exports store it."""
        generic = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "fields"}
        own = dataclasses.asdict(self.fields) if dataclasses.is_dataclass(self.fields) else {}
        return {**generic, **own}


def _resolve_paths(files: Any, root: Path) -> Any:
    if isinstance(files, dict):
        return {k: _resolve_paths(v, root) for k, v in files.items()}
    if isinstance(files, list):
        return [_resolve_paths(v, root) for v in files]
    if "://" in str(files) or Path(files).is_absolute():
        return files
    return str((root / files).resolve())


# ---- field checks shared by the generic part and the families ------------------------------------------------------
def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def is_column(v: Any) -> bool:
    return isinstance(v, str)


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def is_weight(v: Any) -> bool:
    """A finite number > 0 (a loss weight of 0 is refused too: leave the task out of the selection instead)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


COLUMN = (is_column, "a column name")
BOOL = (is_bool, "true or false")
INT = (is_int, "an integer")
WEIGHT = (is_weight, "a finite number > 0")
LABEL_MAP = (lambda v: isinstance(v, dict) and all(is_int(x) for x in v.values()), "a mapping of raw label -> "
             "integer id")
GENERIC_TYPES = {
    "family": (lambda v: isinstance(v, str), "a family name"),
    "source": (lambda v: isinstance(v, dict), "a mapping of datasets.load_dataset arguments"),
    "inputs": (lambda v: isinstance(v, str) or is_str_list(v) and bool(v), "a column name or a list of them"),
    "splits": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
               "a mapping of role -> split name"),
    "metrics": (is_str_list, "a list of metric names"),
    "max_train_examples": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "max_eval_examples": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "id": COLUMN,
    "local": (lambda v: isinstance(v, dict) and isinstance(v.get("source"), dict),
              "a mapping of the fields that differ for the local copy, with at least `source`"),
    "sampling_weight": WEIGHT,
    "loss_weight": WEIGHT,
    "from_data": (lambda v: isinstance(v, dict) and set(v) <= {"inputs", "holdout"}
                  and (v.get("inputs") is None or is_str_list(v["inputs"])),
                  "a mapping with `inputs` (a list of column names) and/or `holdout` ({size, seed})"),
    "license": (lambda v: isinstance(v, str), "a string"),
}

FROM_FEATURES = "features"  # a family field's value meaning "read from the data's features when it is prepared"
