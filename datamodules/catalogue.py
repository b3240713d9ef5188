"""The task catalogue: YAML entries under `configs/tasks/`, one per task, resolved into `TaskSpec`s.

Schema: docs/architecture.md ("Task spec"). Files named `mixtures*.yaml` hold named mixtures (`name: [task, ...]`).
An entry's generic fields are checked here, its family's own fields by the family (datamodules/families/). With a
data root (`data.data_root`, or the environment variable MUPPET_DATA_ROOT), an entry that has a `local` section is
read from the local copy it describes, under that root.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import CatalogueError
from core.task_spec import GENERIC_FIELDS, GENERIC_TYPES, TaskSpec
from datamodules.families import FAMILIES
from datamodules.families.base import EntryProblem

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's: hundreds of entries load in a blink
DEFAULT_CATALOGUE = str(Path(__file__).resolve().parent.parent / "configs" / "tasks")
__all__ = ["Catalogue", "CatalogueError", "DEFAULT_CATALOGUE", "TaskSpec", "parse_entry", "spec_from_dict"]


def _check_types(name: str, entry: dict[str, Any], types: dict) -> None:
    for key, value in entry.items():
        check, expected = types.get(key, (None, ""))
        if value is not None and check is not None and not check(value):
            raise CatalogueError(f"field '{key}' must be {expected}, got {value!r} ({type(value).__name__})",
                                 task=name, field=key)


def parse_entry(name: str, entry: dict[str, Any], catalogue_dir: str = ".", data_root: str | None = None
                ) -> TaskSpec:
    """Check one catalogue entry and turn it into a TaskSpec; errors name the task and the field."""
    if not isinstance(name, str) or not name or "." in name or "/" in name:
        raise CatalogueError(f"task name {name!r} must be a non-empty string without '.' or '/' (it keys heads, "
                             f"metric names such as val/<task>/accuracy and checkpoints)", task=str(name))
    if not isinstance(entry, dict):
        raise CatalogueError(f"expected a mapping of fields, got {type(entry).__name__}", task=name)
    family_name = entry.get("family")
    _check_types(name, {"family": family_name}, GENERIC_TYPES)
    if family_name not in FAMILIES:
        raise CatalogueError(f"field 'family' is {family_name!r}; expected one of {list(FAMILIES)}", task=name,
                             field="family")
    family = FAMILIES[family_name]
    own = [f.name for f in dataclasses.fields(family.Fields)]
    known = {"family", *GENERIC_FIELDS, *own}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise CatalogueError(f"unknown field(s) {unknown} for family '{family_name}'; allowed: {sorted(known)}",
                             task=name, field=unknown[0])
    _check_types(name, entry, {**GENERIC_TYPES, **family.field_types})
    unknown_local = sorted(set(entry.get("local") or {}) - (known - {"local"}))
    if unknown_local:
        raise CatalogueError(f"unknown field(s) {unknown_local} in field 'local'; allowed: {sorted(known - {'local'})}",
                             task=name, field="local")
    if data_root is not None and entry.get("local"):
        entry = {**entry, **entry["local"]}
        _check_types(name, entry, {**GENERIC_TYPES, **family.field_types})
    required = [f.name for f in dataclasses.fields(family.Fields)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for field_ in ("source", "inputs", *required):
        if entry.get(field_) in (None, "", []):
            raise CatalogueError(f"family '{family_name}' needs field '{field_}'", task=name, field=field_)
    if "path" not in entry["source"]:
        raise CatalogueError("field 'source' needs a 'path' (hub id or json/csv/parquet builder)", task=name,
                             field="source")
    inputs = [entry["inputs"]] if isinstance(entry["inputs"], str) else list(entry["inputs"])
    if len(inputs) not in family.input_counts:
        raise CatalogueError(f"field 'inputs' has {len(inputs)} column(s); family '{family_name}' takes "
                             f"{' or '.join(map(str, family.input_counts))}", task=name, field="inputs")
    fields = family.Fields(**{k: v for k, v in entry.items() if k in own and v is not None})
    generic = {k: v for k, v in entry.items() if k in GENERIC_FIELDS and v is not None}
    spec = TaskSpec(name=name, family=family_name, catalogue_dir=catalogue_dir, fields=fields,
                    data_root=data_root if entry.get("local") else None, **{**generic, "inputs": inputs})
    if spec.validation_from_train is not None:
        spec.validation_from_train, spec.splits = _holdout(name, spec.validation_from_train, entry.get("splits"))
    if spec.from_data and spec.from_data.get("holdout") is not None:  # a carve kept for data without the split
        spec.from_data = {**spec.from_data, "holdout": _holdout(name, spec.from_data["holdout"], None)[0]}
    if not {"train", "validation"} <= set(spec.splits) or not set(spec.splits) <= {"train", "validation", "test"}:
        raise CatalogueError(f"field 'splits' needs 'train' and 'validation' (and optionally 'test') entries, got "
                             f"{spec.splits}", task=name, field="splits")
    spec.metrics = list(spec.metrics or family.default_metrics(fields))
    unknown_metrics = sorted(set(spec.metrics) - set(family.metrics))
    if unknown_metrics:
        raise CatalogueError(f"unknown metric(s) {unknown_metrics} in field 'metrics'; family '{family_name}' has "
                             f"{sorted(family.metrics)}", task=name, field="metrics")
    try:
        family.check_entry(spec)
    except EntryProblem as problem:
        raise CatalogueError(str(problem), task=name, field=problem.field) from None
    return spec


def spec_from_dict(values: dict[str, Any]) -> TaskSpec:
    """A TaskSpec from `TaskSpec.to_dict()` output (checkpoints, exports; also the old flat form, in which every
    family's fields were present and unset ones null)."""
    values = dict(values)
    name, catalogue_dir, data_root = values.pop("name"), values.pop("catalogue_dir", "."), values.pop("data_root", None)
    values.pop("local", None)
    family = FAMILIES.get(values.get("family"))
    own = {f.name for f in dataclasses.fields(family.Fields)} if family else set()
    entry = {k: v for k, v in values.items() if v is not None and (k in own or k in GENERIC_FIELDS or k == "family")}
    spec = parse_entry(name, entry, catalogue_dir)
    spec.data_root = data_root
    return spec


def _holdout(name: str, holdout: Any, splits: dict[str, str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Check `validation_from_train`; the validation role then reads the train split (the carve picks its rows)."""
    def problem(message: str) -> CatalogueError:
        return CatalogueError(f"field 'validation_from_train'{message}", task=name, field="validation_from_train")
    if not isinstance(holdout, dict) or set(holdout) - {"size", "seed"} or "size" not in holdout:
        raise problem(f" must be a mapping {{size: rows or fraction, seed: int}}, got {holdout!r}")
    size, seed = holdout["size"], holdout.get("seed", 0)
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not (
            size >= 1 if isinstance(size, int) else 0 < size < 1):
        raise problem(f": 'size' must be a row count >= 1 or a fraction in (0, 1), got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise problem(f": 'seed' must be an integer, got {seed!r}")
    splits = dict(splits or {"train": "train"})
    if splits.get("validation", splits.get("train")) != splits.get("train"):
        raise problem(f" carves validation from train; drop the 'validation' entry of field 'splits' "
                      f"({splits['validation']!r})")
    train = splits.get("train", "train")
    return {"size": size, "seed": seed}, {"train": train, "validation": train, **{k: v for k, v in splits.items()
                                                                                   if k not in ("train", "validation")}}


def _read(file: Path) -> dict[str, Any]:
    """One catalogue file's mapping; errors name the file (and line for YAML syntax)."""
    try:
        content = yaml.load(file.read_text(encoding="utf-8"), Loader=SAFE_LOADER) or {}
    except UnicodeDecodeError as error:
        raise CatalogueError(f"not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start})",
                             file=str(file)) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = "; ".join(str(p) for p in (error.context, error.problem) if p)
        where = f"{file} line {mark.line + 1}, column {mark.column + 1}" if mark else str(file)
        raise CatalogueError(f"{where}: invalid YAML ({problem})") from None
    if not isinstance(content, dict):
        raise CatalogueError(f"expected task names mapped to their entries, got a {type(content).__name__}",
                             file=str(file))
    return content


@dataclass
class Catalogue:
    tasks: dict[str, TaskSpec]
    mixtures: dict[str, list[str]]

    @classmethod
    def load(cls, paths: str | list[str] = DEFAULT_CATALOGUE, data_root: str | None = None) -> Catalogue:
        """Read every `*.yaml` in the given folders/files. Task names must be unique across files. With `data_root`,
        entries with a `local` section read their local copy under it."""
        if data_root is not None and not Path(data_root).is_dir():
            raise CatalogueError(f"data.data_root '{data_root}' is not a folder (it holds local copies of the "
                                 f"datasets, e.g. <root>/mrpc/train.jsonl)")
        root = str(Path(data_root).resolve()) if data_root is not None else None
        files: list[Path] = []
        for path in [paths] if isinstance(paths, str) else paths:
            path = Path(path)
            if not path.exists():
                raise CatalogueError(f"catalogue path '{path}' does not exist")
            files += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        tasks: dict[str, TaskSpec] = {}
        mixtures: dict[str, list[str]] = {}
        for file in files:
            content = _read(file)
            if file.name.startswith("mixtures"):
                for mixture, names in content.items():
                    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                        raise CatalogueError(f"mixture '{mixture}' must be a list of task names", file=str(file))
                    mixtures[mixture] = list(names)
                continue
            for name, entry in content.items():
                if name in tasks:
                    raise CatalogueError(f"task '{name}' is defined twice (again in {file})")
                try:
                    tasks[name] = parse_entry(name, entry, str(file.parent.resolve()), root)
                except CatalogueError as error:  # the file too: a user's catalogue may span several
                    raise CatalogueError(error.detail, file=str(file), task=error.task, field=error.field) from None
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
