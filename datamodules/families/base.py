"""The data side of a task family: what a catalogue entry of the family holds (`Fields`) and how it is checked, how
its raw rows are checked and prepared, how they are tokenized, which batch keys the family adds (and how they are
collated), what the model needs from its training split, and how an example is shown beside its prediction.

A family is this file's subclass in `datamodules/families/<family>.py` plus its head in `heads/<family>.py`, one line
in each registry (`datamodules/families/__init__.py`, `heads/registry.py`). Nothing else names a family.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from datasets import ClassLabel, Dataset
from transformers import PreTrainedTokenizerBase

from core.batch import BatchKey
from core.errors import CatalogueError
from core.task_spec import FROM_FEATURES, TaskSpec

Check = Callable[[dict[str, list]], list[bool]]  # a batch of raw rows -> True for each bad row
Preprocess = Callable[..., dict[str, list]]  # (examples, indices) -> columns, under `dataset.map(batched=True)`
FieldType = tuple[Callable[[Any], bool], str]  # (check of a non-null value, what it must be)


@dataclass(frozen=True)
class Lengths:
    max_length: int = 256  # encoder tokens per row
    max_target_length: int = 64  # summary tokens
    doc_stride: int = 64  # overlap between span-QA windows


class EntryProblem(ValueError):
    """A family's complaint about an entry: (field, message); the catalogue adds the file and the task."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class DataFamily:
    name: ClassVar[str]
    Fields: ClassVar[type]  # dataclass of the family's own catalogue fields (no default = required)
    field_types: ClassVar[dict[str, FieldType]] = {}
    input_counts: ClassVar[tuple[int, ...]] = (1, 2)  # how many `inputs` columns an entry may name
    metrics: ClassVar[tuple[str, ...]]  # metric names it can report (its head builds them)
    multi_row: ClassVar[bool] = False  # `input_ids` holds one encoding per batch row (e.g. one per choice)
    batch_keys: ClassVar[tuple[BatchKey, ...]] = ()  # preprocessed columns it adds to batches
    problem: ClassVar[str] = "not usable"  # what a bad target is, for the error message

    # ---- catalogue -------------------------------------------------------------------------------------------------
    def default_metrics(self, fields: Any) -> list[str]:
        return [self.metrics[0]]

    def check_entry(self, spec: TaskSpec) -> None:
        """Raise EntryProblem(field, message) for values that are well-typed but unusable together."""

    # ---- raw rows --------------------------------------------------------------------------------------------------
    def input_checks(self, spec: TaskSpec) -> dict[str, Check]:
        """Input column -> check; inputs are text unless the family says otherwise."""
        return {name: (lambda b, n=name: texts_bad(column(b, n))) for name in spec.inputs}

    def target_checks(self, spec: TaskSpec) -> dict[str, Check]:
        return {}

    def input_problem(self, spec: TaskSpec) -> str:
        return "null or not text"

    def prepare_raw(self, spec: TaskSpec, dataset: Dataset, split: str) -> Dataset:
        """The raw split as the family reads it (rows dropped, columns completed); default unchanged."""
        return dataset

    # ---- tokenization ----------------------------------------------------------------------------------------------
    def preprocess(self, spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths, for_eval: bool
                   ) -> Preprocess:
        """A batched `preprocess(examples, indices=None)` writing `input_ids` (+ `token_type_ids`), `length` and the
        family's batch-key columns."""
        raise NotImplementedError

    # ---- what the model needs --------------------------------------------------------------------------------------
    def train_statistics(self, spec: TaskSpec, train: Dataset) -> dict[str, Any] | None:
        """What the task's head needs from the preprocessed training split (handed to the model), or None."""
        return None

    # ---- predictions -----------------------------------------------------------------------------------------------
    def gold_column(self, spec: TaskSpec) -> str | None:
        return None

    def describe(self, spec: TaskSpec, rows: dict[str, list]) -> list[dict[str, Any]]:
        """Per example of raw `rows`: what a prediction line shows of it (`inputs`, `gold`, and family extras)."""
        inputs = {name: column(rows, name) for name in spec.inputs}
        gold = column(rows, self.gold_column(spec)) if self.gold_column(spec) else None
        count = len(next(iter(rows.values()))) if rows else 0
        return [{"inputs": {n: v[i] for n, v in inputs.items()}, **({"gold": gold[i]} if gold is not None else {})}
                for i in range(count)]

    def prediction_extras(self, spec: TaskSpec, prediction: Any) -> dict[str, Any]:
        """Fields a prediction line adds beside `prediction` (e.g. the raw label value of a predicted class)."""
        return {}

    # ---- inference on rows without gold ----------------------------------------------------------------------------
    def placeholder_target(self, spec: TaskSpec, row: dict[str, Any]) -> dict[str, Any]:
        """Target columns for a raw row that has none (`preprocess` reads them; predictions never do): values the
        family's checks accept. Default: none needed."""
        return {}

    def outputs(self, spec: TaskSpec) -> str:
        """What the model predicts for the task, in a few words (`3 classes`, `5 choices`), for task listings."""
        return "-"

    # ---- settled from the data (datamodules/from_data.py) ----------------------------------------------------------
    def resolve(self, spec: TaskSpec, splits: dict[str, Dataset]) -> tuple[dict[str, Any], list[str]]:
        """Values of the family's fields the entry leaves to the data (`features`), read from the raw splits
        (role -> split): (field -> value, one log line per field). Default: none."""
        return {}, []

    # ---- tasksource definitions (datamodules/tasksource_import.py) -------------------------------------------------
    tasksource_types: ClassVar[tuple[str, ...]] = ()  # tasksource task types (`list_tasks().task_type`) it takes

    def from_tasksource(self, mapping: Any, static: bool) -> dict[str, Any] | None:
        """An entry's `inputs`, `from_data` and family fields for a tasksource definition (`mapping`): with `static`,
        in the source's own columns, or None where a mapped field is not a plain column name; else in the columns
        tasksource's own preprocessing writes (its field names)."""
        return None


# ---- helpers the families share ------------------------------------------------------------------------------------
def column(batch: dict[str, list], name: str) -> list:
    """A (possibly dotted) column of a batch: `choices.text` reads `batch["choices"][i]["text"]`."""
    root, *path = name.split(".")
    values = batch[root]
    for key in path:
        values = [None if v is None else v[key] for v in values]
    return values


def texts_bad(values: list) -> list[bool]:
    return [not isinstance(v, str) for v in values]


def encoded(enc) -> dict[str, list]:
    """The columns of a tokenizer encoding a row needs: `input_ids`, and `token_type_ids` where the tokenizer makes
    them (BERT-style segment ids; the whole encoding is kept, as run_glue does)."""
    return {key: enc[key] for key in ("input_ids", "token_type_ids") if key in enc}


def class_id(value: Any, label_map: dict | None, upper: int | None) -> int | None:
    """The class id of a raw label: through `label_map` where the entry has one, else an integer below `upper`;
    None when it is missing, unmapped or out of range."""
    if value is None:
        return None
    if label_map is not None:
        found = label_map.get(value, label_map.get(str(value)))
        return found if found is None or upper is None or 0 <= found < upper else None
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
        return None
    return int(value) if upper is None or 0 <= value < upper else None


def finite_number(value: Any) -> float | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number and math.isfinite(value) else None  # NaN/inf targets would poison the loss


def label_names(label_map: dict | None) -> dict[int, Any]:
    """Class id -> its raw label value (the first one mapped to it)."""
    names: dict[int, Any] = {}
    for value, label in (label_map or {}).items():
        names.setdefault(label, value)
    return names


def skip_rows(spec: TaskSpec, dataset: Dataset, label: str, skip: list | None, split: str) -> Dataset:
    """Drop rows whose raw `label` is one of `skip` (e.g. SNLI's -1 = no gold label)."""
    if not skip:
        return dataset
    values = set(skip)
    return dataset.filter(lambda labels: [v not in values for v in labels], input_columns=label, batched=True,
                          desc=f"skip labels {sorted(values, key=str)} of {spec.name}/{split}")


# ---- tasksource definitions: what a mapped field is --------------------------------------------------------------
def plain_column(value: Any) -> str | None:
    """The source column a tasksource field reads when it is a plain column name (a string, or its `get.a.b` dotted
    getter: `a.b`), else None (a function: tasksource's own code computes it)."""
    if isinstance(value, str):
        return value
    path = getattr(type(value), "__name__", "") == "dotgetter" and getattr(value, "path", "")
    return path if path and "[" not in path else None


def named_classes(value: Any) -> tuple[str, list[str]] | None:
    """(label column, class names) when a tasksource label field is its `name(column, classes)`: the names of the
    column's own integer ids, which it then turns into strings it sorts alphabetically."""
    if not callable(value) or getattr(value, "__qualname__", "") != "name.<locals>.<lambda>":
        return None
    bound = inspect.getclosurevars(value).nonlocals
    column_, classes = bound.get("label_name"), bound.get("classes")
    return (column_, list(classes)) if isinstance(column_, str) and isinstance(classes, (list, tuple)) else None


def class_count(spec: TaskSpec, splits: dict[str, Dataset], label: str, what: str
                ) -> tuple[int, dict[Any, int] | None, str]:
    """(count, label_map or None, log line) of a label column read from the data: a ClassLabel's names (its ids
    kept), float values (1: regression), integer ids (the largest + 1), or string/bool values (mapped in sorted
    order, the NLI triple as entailment, neutral, contradiction)."""
    feature = splits["train"].features.get(label)
    if isinstance(feature, ClassLabel):
        return feature.num_classes, None, (f"{what} {feature.num_classes} read from the features of column "
                                           f"'{label}' (ClassLabel {feature.names})")
    dtype = getattr(feature, "dtype", None)
    if dtype is not None and dtype.startswith("float"):
        return 1, None, f"{what} 1 (regression): column '{label}' holds {dtype} values"
    values = set()
    for rows in splits.values():
        values.update(v for v in rows.unique(label) if v is not None)
    if dtype is not None and dtype.startswith("int"):
        count = max(values) + 1 if values else 1
        return count, None, f"{what} {count} read from column '{label}' (integer ids up to {count - 1}, no ClassLabel)"
    if dtype in ("string", "large_string", "bool"):
        nli = ["entailment", "neutral", "contradiction"]
        ordered = nli if values == set(nli) else sorted(values, key=str)
        label_map = {v: i for i, v in enumerate(ordered)}
        return len(ordered), label_map, (f"{what} {len(ordered)} read from column '{label}' ({dtype} values, no "
                                         f"ClassLabel): ids in sorted order {label_map}")
    raise CatalogueError(f"field '{what}' is '{FROM_FEATURES}', but column '{label}' is {feature!r}: the number cannot "
                         f"be read from it; set it in the entry", task=spec.name, field=what)
