"""The task catalogue: YAML entries under `configs/tasks/`, one per task, resolved into `TaskSpec`s.

Schema: docs/architecture.md ("Task spec"). Files named `mixtures*.yaml` hold named mixtures (`name: [task, ...]`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from datamodules.families import FAMILIES  # each family's fields, input counts and metrics

DEFAULT_CATALOGUE = str(Path(__file__).resolve().parent.parent / "configs" / "tasks")


class CatalogueError(ValueError):
    """A task entry, selection or mixture that cannot be used; the message names the task and field."""


@dataclass
class TaskSpec:
    """One resolved catalogue entry; the fields are the YAML keys (table in docs/architecture.md, "Task spec")."""

    name: str  # the entry's key: lowercase and stable (it keys heads, metrics and checkpoints)
    family: str  # a FAMILIES key (datamodules/families.py): classification | multiple_choice | span | summarization
    source: dict[str, Any]  # `datasets.load_dataset` kwargs: path, name, data_files, revision
    inputs: list[str]  # text columns; dotted names reach into nested columns
    # source split names per role; values may slice (`train[:90%]`)
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "validation": "validation"})
    # carve `validation` out of `train` instead of naming a split: {size: rows (int) or fraction (< 1), seed: int};
    # the carved rows leave `train`, the same rows every run (datamodules/holdout.py)
    validation_from_train: dict[str, Any] | None = None
    label: str | None = None  # label column (classification, multiple_choice)
    label_map: dict[Any, int] | None = None  # raw label value -> id
    skip_labels: list[Any] | None = None  # raw label values whose rows are dropped (SNLI's -1)
    num_labels: int | None = None  # classes; 1 = regression
    choices: str | list[str] | None = None  # a list column, or a list of one column per choice
    num_choices: int | None = None  # choices per example
    answers: str | None = None  # SQuAD-style {text, answer_start} column (span)
    allow_no_answer: bool = False  # SQuAD v2: unanswerable questions allowed (span)
    # span: `answers` holds answer strings only (ReCoRD); each is found in the context to make the SQuAD-style
    # column (datamodules/answers.py); `answers` and the context input are then top-level columns
    locate_answers: bool = False
    target: str | None = None  # summary column (summarization)
    metrics: list[str] = field(default_factory=list)  # names from lightning_modules/metrics.py; first = primary
    max_train_examples: int | None = None  # cap on this task's training examples per epoch
    max_eval_examples: int | None = None  # cap on this task's validation/test examples
    id: str | None = None  # column naming each example (e.g. SQuAD's `id`), written beside its prediction
    catalogue_dir: str = "."  # folder of the YAML file; relative `data_files` resolve against it

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1 and "num_labels" in FAMILIES[self.family].fields

    def columns(self) -> list[str]:
        """Every source column this task reads (top-level names; dotted names reach into nested columns)."""
        choices = [self.choices] if isinstance(self.choices, str) else list(self.choices or [])
        named = [*self.inputs, self.label, self.answers, self.target, *choices, self.id]
        return [c for c in named if c]

    def load_kwargs(self) -> dict[str, Any]:
        """`datasets.load_dataset` keyword arguments, with relative local paths made absolute."""
        kwargs = dict(self.source)
        if "data_files" in kwargs:
            kwargs["data_files"] = _resolve_paths(kwargs["data_files"], Path(self.catalogue_dir))
        if "data_dir" in kwargs and not Path(kwargs["data_dir"]).is_absolute():
            kwargs["data_dir"] = str(Path(self.catalogue_dir) / kwargs["data_dir"])
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _resolve_paths(files: Any, root: Path) -> Any:
    if isinstance(files, dict):
        return {k: _resolve_paths(v, root) for k, v in files.items()}
    if isinstance(files, list):
        return [_resolve_paths(v, root) for v in files]
    if "://" in str(files) or Path(files).is_absolute():
        return files
    return str((root / files).resolve())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# field -> (check of a non-null value, what it must be); validation_from_train has its own check (_holdout)
FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "family": (lambda v: isinstance(v, str), "a family name"),
    "source": (lambda v: isinstance(v, dict), "a mapping of datasets.load_dataset arguments"),
    "inputs": (lambda v: isinstance(v, str) or _is_str_list(v) and bool(v), "a column name or a list of them"),
    "splits": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
               "a mapping of role -> split name"),
    "label": (lambda v: isinstance(v, str), "a column name"),
    "label_map": (lambda v: isinstance(v, dict) and all(_is_int(x) for x in v.values()),
                  "a mapping of raw label -> integer id"),
    "skip_labels": (lambda v: isinstance(v, list), "a list of raw label values"),
    "num_labels": (_is_int, "an integer"),
    "choices": (lambda v: isinstance(v, str) or _is_str_list(v), "a list column's name or a list of column names"),
    "num_choices": (_is_int, "an integer"),
    "answers": (lambda v: isinstance(v, str), "a column name"),
    "allow_no_answer": (lambda v: isinstance(v, bool), "true or false"),
    "locate_answers": (lambda v: isinstance(v, bool), "true or false"),
    "target": (lambda v: isinstance(v, str), "a column name"),
    "metrics": (_is_str_list, "a list of metric names"),
    "max_train_examples": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "max_eval_examples": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "id": (lambda v: isinstance(v, str), "a column name"),
}


def _check_types(where: str, entry: dict[str, Any]) -> None:
    for key, value in entry.items():
        check, expected = FIELD_TYPES.get(key, (None, ""))
        if value is not None and check is not None and not check(value):
            raise CatalogueError(f"{where}: field '{key}' must be {expected}, got {value!r} "
                                 f"({type(value).__name__})")


def parse_entry(name: str, entry: dict[str, Any], catalogue_dir: str = ".") -> TaskSpec:
    """Check one catalogue entry and turn it into a TaskSpec; errors name the task and the field."""
    where = f"task '{name}'"
    if not isinstance(entry, dict):
        raise CatalogueError(f"{where}: expected a mapping of fields, got {type(entry).__name__}")
    known = {f.name for f in dataclasses.fields(TaskSpec)} - {"name", "catalogue_dir"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise CatalogueError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(known)}")
    _check_types(where, entry)
    family = entry.get("family")
    if family not in FAMILIES:
        raise CatalogueError(f"{where}: field 'family' is {family!r}; expected one of {list(FAMILIES)}")
    for required in ("source", "inputs", *FAMILIES[family].fields):
        if entry.get(required) in (None, "", []):
            raise CatalogueError(f"{where}: family '{family}' needs field '{required}'")
    if not isinstance(entry["source"], dict) or "path" not in entry["source"]:
        raise CatalogueError(f"{where}: field 'source' needs a 'path' (hub id or json/csv/parquet builder)")
    inputs = [entry["inputs"]] if isinstance(entry["inputs"], str) else list(entry["inputs"])
    if len(inputs) not in FAMILIES[family].input_counts:
        raise CatalogueError(f"{where}: field 'inputs' has {len(inputs)} column(s); family '{family}' takes "
                             f"{' or '.join(map(str, FAMILIES[family].input_counts))}")
    spec = TaskSpec(name=name, catalogue_dir=catalogue_dir, **{**entry, "inputs": inputs})
    if spec.locate_answers and (not spec.answers or "." in f"{spec.answers}{inputs[-1]}"):
        raise CatalogueError(f"{where}: field 'locate_answers' needs a top-level 'answers' column and a "
                             f"top-level context column (the last of 'inputs')")
    if spec.validation_from_train is not None:
        spec.validation_from_train, spec.splits = _holdout(where, spec.validation_from_train, entry.get("splits"))
    if spec.num_labels is not None and spec.num_labels < 1:
        raise CatalogueError(f"{where}: field 'num_labels' must be >= 1 (1 = regression), got {spec.num_labels}")
    if spec.num_choices is not None and spec.num_choices < 2:
        raise CatalogueError(f"{where}: field 'num_choices' must be >= 2, got {spec.num_choices}")
    if not {"train", "validation"} <= set(spec.splits) or not set(spec.splits) <= {"train", "validation", "test"}:
        raise CatalogueError(f"{where}: field 'splits' needs 'train' and 'validation' (and optionally 'test') "
                             f"entries, got {spec.splits}")
    spec.metrics = list(spec.metrics or FAMILIES[family].default_metrics)
    unknown_metrics = sorted(set(spec.metrics) - set(FAMILIES[family].metrics))
    if unknown_metrics:
        raise CatalogueError(f"{where}: unknown metric(s) {unknown_metrics} in field 'metrics'; family "
                             f"'{family}' has {sorted(FAMILIES[family].metrics)}")
    if spec.is_regression and spec.metrics == ["accuracy"]:
        spec.metrics = ["pearson", "spearman"]
    return spec


def _holdout(where: str, holdout: Any, splits: dict[str, str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Check `validation_from_train`; the validation role then reads the train split (the carve picks its rows)."""
    field_ = f"{where}: field 'validation_from_train'"
    if not isinstance(holdout, dict) or set(holdout) - {"size", "seed"} or "size" not in holdout:
        raise CatalogueError(f"{field_} must be a mapping {{size: rows or fraction, seed: int}}, got {holdout!r}")
    size, seed = holdout["size"], holdout.get("seed", 0)
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not (
            size >= 1 if isinstance(size, int) else 0 < size < 1):
        raise CatalogueError(f"{field_}: 'size' must be a row count >= 1 or a fraction in (0, 1), got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CatalogueError(f"{field_}: 'seed' must be an integer, got {seed!r}")
    splits = dict(splits or {"train": "train"})
    if splits.get("validation", splits.get("train")) != splits.get("train"):
        raise CatalogueError(f"{field_} carves validation from train; drop the 'validation' entry of field "
                             f"'splits' ({splits['validation']!r})")
    train = splits.get("train", "train")
    return {"size": size, "seed": seed}, {"train": train, "validation": train, **{k: v for k, v in splits.items()
                                                                                   if k not in ("train", "validation")}}


@dataclass
class Catalogue:
    tasks: dict[str, TaskSpec]
    mixtures: dict[str, list[str]]

    @classmethod
    def load(cls, paths: str | list[str] = DEFAULT_CATALOGUE) -> Catalogue:
        """Read every `*.yaml` in the given folders/files. Task names must be unique across files."""
        files: list[Path] = []
        for path in [paths] if isinstance(paths, str) else paths:
            path = Path(path)
            if not path.exists():
                raise CatalogueError(f"catalogue path '{path}' does not exist")
            files += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        tasks: dict[str, TaskSpec] = {}
        mixtures: dict[str, list[str]] = {}
        for file in files:
            content = yaml.safe_load(file.read_text()) or {}
            if file.name.startswith("mixtures"):
                mixtures.update({k: list(v) for k, v in content.items()})
                continue
            for name, entry in content.items():
                if name in tasks:
                    raise CatalogueError(f"task '{name}' is defined twice (again in {file})")
                try:
                    tasks[name] = parse_entry(name, entry, str(file.parent.resolve()))
                except CatalogueError as error:  # the file too: a user's catalogue may span several
                    raise CatalogueError(f"catalogue file {file}, {error}") from None
        for mixture, names in mixtures.items():
            missing = [n for n in names if n not in tasks]
            if missing:
                raise CatalogueError(f"mixture '{mixture}' names unknown task(s) {missing}")
        return cls(tasks, mixtures)

    def select(self, selection: str | list[str]) -> list[TaskSpec]:
        """Task names, family names (that family's tasks in the `muppet` mixture) and mixture names, in order,
        without duplicates."""
        names: list[str] = []
        for item in [selection] if isinstance(selection, str) else selection:
            if item in self.tasks:
                names.append(item)
            elif item in self.mixtures:
                names += self.mixtures[item]
            elif item in FAMILIES:
                names += [n for n in self.mixtures.get("muppet", []) if item == self.tasks[n].family]
            else:
                raise CatalogueError(f"unknown task or mixture '{item}' in data.tasks; known mixtures: "
                                     f"{sorted(self.mixtures)}, families: {list(FAMILIES)}, "
                                     f"tasks: {', '.join(sorted(self.tasks))}")
        if not names:
            raise CatalogueError(f"data.tasks {selection!r} selects no task")
        return [self.tasks[n] for n in dict.fromkeys(names)]
