"""tasksource as a catalogue source: writes catalogue entries for tasksource's English tasks (`list_tasks()`) into
`configs/tasks/tasksource.yaml`, and the mixtures `tasksource` and `tasksource_<family>` into
`configs/tasks/mixtures_tasksource.yaml`. Needs the pinned optional package (requirements-tasksource.txt):

    python -m datamodules.tasksource_import [--out configs/tasks]

* A definition whose every mapped field is a plain column (and that has no `pre_process`/`post_process`) becomes a
  static entry on its source (hub id, config, `load_dataset` arguments).
* Any other becomes an entry whose `source.tasksource` names the task: its preprocessing runs when the data is
  prepared (datamodules/tasksource_source.py).
* Splits are the dataset's own: the official validation split stays whole (tasksource's loader halves it into
  validation and test); where tasksource names no validation split, or the data turns out to have none, validation
  is carved out of train (10%, seed 0), which the entry's comment and the log say. Test splits are not used.
* Every choice is kept (tasksource's loader keeps 4); label ids are the dataset's own (ClassLabel) or `label_map`'s;
  an unset second sentence is `from_data.inputs` (used where the data has it); a count that only the data knows is
  `features` (read when the data is prepared, and logged).
Which family takes a tasksource task type, and how its fields map, each family says (`DataFamily.from_tasksource`).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import yaml

from core.errors import CatalogueError
from datamodules.catalogue import DEFAULT_CATALOGUE, parse_entry
from datamodules.families import FAMILIES
from datamodules.tasksource_source import PIN, TASKSOURCE

CATALOGUE_FILE, MIXTURE_FILE = "tasksource.yaml", "mixtures_tasksource.yaml"
HOLDOUT = {"size": 0.1, "seed": 0}  # tasksource's own carve: 10% of train
PREFIX = "ts_"


def task_name(task_id: str) -> str:
    """A catalogue name for a tasksource id: `glue/rte` -> `ts_glue_rte`."""
    return PREFIX + re.sub(r"[^a-z0-9]+", "_", task_id.lower()).strip("_")


def source_of(row: Any, mapping: Any) -> dict[str, Any]:
    """`datasets.load_dataset` arguments of a definition (its `{config_name}` placeholders filled)."""
    config = row.config_name if isinstance(row.config_name, str) else None
    kwargs = _format(dict(mapping.load_dataset_kwargs or {}), config or "")
    builder = row.dataset_name in ("csv", "json", "text", "parquet")
    name = kwargs.pop("name", None if builder else config)
    return {"path": row.dataset_name, **({"name": name} if name else {}), **kwargs}


def _format(value: Any, config: str) -> Any:
    if isinstance(value, str):
        return value.format(config_name=config)
    if isinstance(value, (list, tuple)):
        return [_format(v, config) for v in value]
    if isinstance(value, dict):
        return {k: _format(v, config) for k, v in value.items()}
    return value


def splits_of(mapping: Any) -> tuple[dict[str, Any] | None, str]:
    """(the entry's split fields, a note) from tasksource's (train, validation, test) names, or (None, why)."""
    train, validation, test = (list(mapping.splits) + [None, None, None])[:3]
    if not train or str(train).startswith("test"):
        return None, f"trains on {train!r}"
    if validation:
        return {"splits": {"train": train, "validation": validation}, "from_data": {"holdout": HOLDOUT}}, (
            f"validation '{validation}' whole (tasksource halves it into validation and test); carved from train "
            f"(10%, seed 0) if the data has no such split")
    if test and not str(test).startswith("test"):  # an official dev set tasksource uses as its test split
        return {"splits": {"train": train, "validation": test}}, (
            f"validation '{test}' whole (tasksource uses it as test)")
    return {"splits": {"train": train}, "validation_from_train": HOLDOUT}, (
        "validation carved from train (10%, seed 0): tasksource names no validation split")


def entries(licenses: dict[str, str] | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, str], list[str]]:
    """(name -> entry, name -> comment, skipped tasks with the reason) for tasksource's English tasks."""
    import tasksource  # the optional package: only the generator and entries that run its code need it
    families = {t: name for name, f in FAMILIES.items() for t in f.tasksource_types}
    out: dict[str, dict[str, Any]] = {}
    notes: dict[str, str] = {}
    skipped: list[str] = []
    for row in tasksource.list_tasks().itertuples():
        if row.task_type not in families:
            skipped.append(f"{row.id}: task type {row.task_type} (no family takes it)")
            continue
        family = FAMILIES[families[row.task_type]]
        mapping = row.mapping.view(False) if isinstance(row.mapping, tasksource.SoftLabeling) else row.mapping
        split_fields, split_note = splits_of(mapping)
        if split_fields is None:
            skipped.append(f"{row.id}: {split_note}")
            continue
        code = [k for k in ("pre_process", "post_process") if getattr(mapping, k) is not _identity(tasksource)]
        fields = None if code else family.from_tasksource(mapping, static=True)
        static = fields is not None
        if not static:
            fields = family.from_tasksource(mapping, static=False)
        source = source_of(row, mapping)
        if not static:
            source[TASKSOURCE] = row.id
        files = source.get("data_files") if isinstance(source.get("data_files"), dict) else {}
        validation = split_fields["splits"].get("validation")
        if "test" in str(files.get(validation, "")).rsplit("/", 1)[-1]:  # validation picks checkpoints: not a test set
            split_fields = {"splits": {"train": split_fields["splits"]["train"]}, "validation_from_train": HOLDOUT}
            split_note = f"validation carved from train (10%, seed 0): tasksource's validation is the test file " \
                         f"{files[validation]}"
        from_data = {**split_fields.pop("from_data", {}), **fields.pop("from_data", {})}
        entry = {"family": family.name, "source": source, **fields, **split_fields,
                 **({"from_data": from_data} if from_data else {}),
                 **({"max_train_examples": int(mapping.max_examples)} if mapping.max_examples else {}),
                 **({"license": licenses[row.id]} if licenses and licenses.get(row.id) else {})}
        name = task_name(row.id)
        if name in out:
            skipped.append(f"{row.id}: its name {name} is taken")
            continue
        try:
            parse_entry(name, entry)
        except CatalogueError as error:
            skipped.append(f"{row.id}: {error.detail}")
            continue
        out[name] = entry
        why = "static" if static else f"runs tasksource's code ({', '.join(code) or 'a field is a function'})"
        notes[name] = f"tasksource {row.id} ({row.task_type}): {why}; {split_note}"
    return out, notes, skipped


def _identity(tasksource: Any) -> Any:
    return tasksource.preprocess.SharedFields.pre_process


def licenses_of() -> dict[str, str]:
    """tasksource's license per task (its checked-in snapshot of the dataset cards: offline), where it gives one."""
    import tasksource
    table = tasksource.task_licenses()
    return {i: str(lic) for i, lic in zip(table["id"], table["license"]) if lic and str(lic) != "unspecified"}


def render(tasks: dict[str, dict[str, Any]], notes: dict[str, str]) -> tuple[str, str]:
    """(catalogue file, mixtures file) text: stable, so a regeneration from the same package is byte-equal."""
    import tasksource
    version = getattr(tasksource, "__version__", PIN.split("==")[1])
    head = (f"# Generated by `python -m datamodules.tasksource_import` from {PIN} (installed: {version}): do not edit;\n"
            f"# regenerate instead. {len(tasks)} English tasks. docs/tasksource.md says what the import keeps and "
            f"changes.\n")
    body = []
    for name, entry in tasks.items():
        dumped = yaml.safe_dump({name: entry}, sort_keys=False, width=120, default_flow_style=None, allow_unicode=True)
        body.append(f"\n# {notes[name]}\n{dumped}")
    mixtures = {"tasksource": list(tasks)}
    for family in FAMILIES:
        members = [n for n, e in tasks.items() if e["family"] == family]
        if members:
            mixtures[f"tasksource_{family}"] = members
    mixture_text = (f"# Generated with {CATALOGUE_FILE} (python -m datamodules.tasksource_import): every tasksource "
                    f"task, and its tasks by family.\n" + yaml.safe_dump(mixtures, sort_keys=False, width=120))
    return head + "".join(body), mixture_text


def generate(out: str = DEFAULT_CATALOGUE) -> tuple[int, list[str]]:
    """Write the two files under `out`; (number of entries, skipped tasks with the reason)."""
    tasks, notes, skipped = entries(licenses_of())
    catalogue, mixtures = render(tasks, notes)
    Path(out, CATALOGUE_FILE).write_text(catalogue, encoding="utf-8")
    Path(out, MIXTURE_FILE).write_text(mixtures, encoding="utf-8")
    return len(tasks), skipped


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"Write catalogue entries for tasksource's English tasks ({PIN}).")
    parser.add_argument("--out", default=DEFAULT_CATALOGUE, help="catalogue folder to write the two files into")
    options = parser.parse_args(args)
    count, skipped = generate(options.out)
    print(f"{count} entries written to {Path(options.out, CATALOGUE_FILE)}; {len(skipped)} tasks left out:")
    print("\n".join(f"  {s}" for s in skipped))


if __name__ == "__main__":
    main()
