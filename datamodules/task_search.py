"""Finding tasks in the catalogue, offline (nothing is downloaded; the YAML files are read):

    python -m datamodules.task_search list [--family F] [--mixture M] [--source S]
    python -m datamodules.task_search search QUERY [--family F] [--mixture M] [--source S]
    ... [--catalogue PATH ...] [--data-root DIR] [--json]

One line per task: name, family, source (hub id and config, or the builder; `+tasksource` where the entry runs
tasksource's preprocessing), classes / choices / tags (from the entry's fields; `from data` where they are read from
the data when it is prepared), the mixtures that hold it, the license its source states (`-`: none given), and its
local copy: `-` (none), `yes` (the entry has a `local:` section),
and with a data root (`--data-root` or MUPPET_DATA_ROOT) whether its files are `present` or `missing` there. A search
keeps the tasks where every word of QUERY occurs (case-insensitive) in the name, family, source, input columns,
mixtures or license; `--source` keeps those whose source contains S. The names are what `--data.tasks` takes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.task_spec import TaskSpec
from datamodules.catalogue import DEFAULT_CATALOGUE, Catalogue
from datamodules.families import FAMILIES
from datamodules.tasksource_source import is_tasksource

COLUMNS = ("name", "family", "source", "outputs", "mixtures", "license", "local")


def source_of(spec: TaskSpec) -> str:
    """`hub/id:config`, or the builder (`json`, `csv`, ...) for local files."""
    path, name = spec.source.get("path", "?"), spec.source.get("name")
    return (f"{path}:{name}" if name else str(path)) + ("+tasksource" if is_tasksource(spec) else "")


def outputs_of(spec: TaskSpec) -> str:
    """What the model predicts, as the task's family says: `3 classes`, `regression`, `5 choices`, `9 tags`, ..."""
    return FAMILIES[spec.family].outputs(spec)


def local_files(spec: TaskSpec) -> list[Path]:
    """The files and folders a local copy's `source` names (absolute, against the data root)."""
    kwargs = spec.load_kwargs()
    files: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)
        elif value is not None:
            files.append(str(value))
    collect(kwargs.get("data_files"))
    collect(kwargs.get("data_dir"))
    return [Path(f) for f in files if "://" not in f]


def local_state(spec: TaskSpec, local: TaskSpec | None) -> str:
    """`-`, `yes`, or with a data root `present` / `missing: <first missing file>`."""
    if not spec.local:
        return "-"
    if local is None:
        return "yes"
    missing = [f for f in local_files(local) if not glob.glob(str(f))]  # data_files may be patterns
    return f"missing: {missing[0]}" if missing else "present"


def table(catalogue: Catalogue, local: Catalogue | None = None) -> list[dict[str, str]]:
    """One row per task, in catalogue order."""
    member: dict[str, list[str]] = {}
    for mixture, names in catalogue.mixtures.items():
        for name in names:
            member.setdefault(name, []).append(mixture)
    return [{"name": name, "family": spec.family, "source": source_of(spec), "outputs": outputs_of(spec),
             "mixtures": ",".join(member.get(name, [])) or "-", "license": spec.license or "-",
             "local": local_state(spec, local.tasks.get(name) if local else None),
             "inputs": ",".join(spec.inputs)} for name, spec in catalogue.tasks.items()]


def search(rows: list[dict[str, str]], query: str = "", family: str | None = None,
           mixture: str | None = None, source: str | None = None) -> list[dict[str, str]]:
    words = query.lower().split()
    found = []
    for row in rows:
        text = " ".join(row[k] for k in ("name", "family", "source", "inputs", "mixtures", "license")).lower()
        if family and row["family"] != family or mixture and mixture not in row["mixtures"].split(","):
            continue
        if source and source.lower() not in row["source"].lower():
            continue
        if all(word in text for word in words):
            found.append(row)
    return found


def render(rows: list[dict[str, str]]) -> str:
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in COLUMNS}
    head = "  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip()
    body = ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in rows]
    return "\n".join([head, *body, f"{len(rows)} task(s)"])


def main(args: list[str] | None = None) -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(description="List and search the task catalogue (offline).")
    parser.add_argument("command", choices=["list", "search"])
    parser.add_argument("query", nargs="?", default="", help="search: words that must all occur")
    parser.add_argument("--family", help="only this family's tasks")
    parser.add_argument("--mixture", help="only the tasks of this mixture")
    parser.add_argument("--source", help="only the tasks whose source contains this (e.g. nyu-mll/glue, tasksource)")
    parser.add_argument("--catalogue", nargs="+", default=[DEFAULT_CATALOGUE], help="catalogue folders or files")
    parser.add_argument("--data-root", default=os.environ.get("MUPPET_DATA_ROOT"),
                        help="folder of local copies: say whether each local copy's files are there")
    parser.add_argument("--json", action="store_true", help="one JSON object per task")
    options = parser.parse_args(args)
    if options.command == "search" and not options.query:
        parser.error("search needs a QUERY")
    try:
        catalogue = Catalogue.load(options.catalogue)
        local = Catalogue.load(options.catalogue, options.data_root) if options.data_root else None
    except UserError as error:
        parser.exit(2, f"error: {error}\n")
    if options.mixture and options.mixture not in catalogue.mixtures:
        parser.exit(2, f"error: unknown mixture '{options.mixture}'; mixtures: {sorted(catalogue.mixtures)}\n")
    rows = search(table(catalogue, local), options.query, options.family, options.mixture, options.source)
    print("\n".join(json.dumps(r) for r in rows) if options.json else render(rows))
    return rows


if __name__ == "__main__":
    main()
