"""Why a task's source could not be read, in one line that names the task, split, file and line.

`datasets.load_dataset` reports a broken local file as `StopIteration` (an empty JSON file), "An error occurred while
generating the dataset" (a bad line) or a pandas/Arrow message without the file's name. When a load fails, the
local `data_files` are read here line by line to find the first problem; hub sources keep the library's message."""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import json
import lzma
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset

from core.task_spec import TaskSpec
from core.errors import DataValidationError

FORMATS = {".json": "json", ".jsonl": "json", ".ndjson": "json", ".csv": "csv", ".tsv": "csv", ".txt": "text",
           ".parquet": "parquet"}
OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
EMPTY = "has no rows"
JSON_KINDS = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}


def load_error(spec: TaskSpec, split: str, error: Exception) -> DataValidationError:
    """The error to raise when `load_dataset` failed: the first problem found in the task's local files, else the
    library's own message (its innermost cause) under the task and split."""
    where = f"task '{spec.name}', split '{split}'"
    try:
        problem = diagnose(spec, split)
    except Exception:  # noqa: BLE001 - a failing diagnosis must not hide the error; the library's message follows
        problem = None
    if problem:
        return DataValidationError(problem)
    if isinstance(error, ValueError) and "corresponds to no data" in str(error):
        return DataValidationError(f"{where}: the split is empty")
    return DataValidationError(f"{where}: could not load {spec.splits[split]!r} from {spec.source}: {cause(error)}")


def check_text(spec: TaskSpec, split: str, dataset: Dataset) -> None:
    """Local sources: Arrow's JSON reader keeps bytes that are not UTF-8, which then fail wherever the rows are read.
    Check the loaded table once (fast, in C++) and name the file and line."""
    if not local_files(spec):
        return
    try:
        dataset.data.table.validate(full=True)
    except pa.ArrowInvalid as error:
        raise load_error(spec, split, error) from error


def cause(error: BaseException) -> str:
    """The innermost cause's message on one line (the outer ones are wrappers such as DatasetGenerationError)."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    return " ".join(str(error).split()) or type(error).__name__


def local_files(spec: TaskSpec) -> list[tuple[str, str, list[Path]]]:
    """(data_files split key, pattern as written after resolution, matching local files) for each local pattern."""
    data_files = spec.load_kwargs().get("data_files")
    if data_files is None:
        return []
    groups = data_files if isinstance(data_files, dict) else {"train": data_files}
    found = []
    for key, patterns in groups.items():
        for pattern in [patterns] if isinstance(patterns, str) else list(patterns):
            pattern = str(pattern)
            if "://" in pattern:
                continue
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            found.append((str(key), pattern, [Path(m) for m in matches]))
    return found


def diagnose(spec: TaskSpec, split: str) -> str | None:
    """The first problem in the task's local files: the requested split's files first, then the others (the loader
    builds every split of `data_files` at once). A type or column mismatch counts only when nothing worse is found."""
    names = {str(source).split("[")[0]: ours for ours, source in spec.splits.items()}
    wanted = str(spec.splits.get(split, split)).split("[")[0]
    groups = sorted(local_files(spec), key=lambda group: group[0] != wanted)
    weaker: str | None = None
    for key, pattern, paths in groups:
        where = f"task '{spec.name}', split '{names.get(key, key)}'"
        if not paths:
            return f"{where}: no file matches '{pattern}'"
        columns: dict[Path, list[str]] = {}
        for path in paths:
            if not path.exists():
                return f"{where}: file {path} does not exist"
            if path.is_dir():
                return f"{where}: {path} is a folder; data_files takes files or glob patterns (e.g. {path}/*.jsonl)"
            try:
                problem, mismatch, found = file_problem(path, _format(spec, path), spec.source)
            except OSError as error:
                return f"{where}: file {path} cannot be read ({error.strerror or error})"
            if problem and problem.startswith(EMPTY) and len(paths) == 1:
                return f"{where}: the split is empty: file {path} {problem}"
            if problem:
                return f"{where}: file {path} {problem}"
            weaker = weaker or (mismatch and f"{where}: file {path} {mismatch}")
            if found is not None:
                columns[path] = found
        (first, first_columns), *others = list(columns.items()) or [(None, None)]
        differing = next(((p, c) for p, c in others if set(c) != set(first_columns)), None)
        if differing:
            weaker = weaker or (f"{where}: files {first} and {differing[0]} have different columns "
                                f"({first_columns} vs {differing[1]})")
    return weaker


def _format(spec: TaskSpec, path: Path) -> str:
    """The loader's format: the entry's builder (`source.path`), else the file's extension."""
    builder = str(spec.source.get("path", ""))
    if builder in ("json", "csv", "text", "parquet"):
        return builder
    suffixes = [s for s in path.suffixes if s not in OPENERS]
    return FORMATS.get(suffixes[-1].lower(), "") if suffixes else ""


class _Problem(Exception):
    """A problem found while reading a file (its message reads 'line 17: ...')."""


def file_problem(path: Path, fmt: str, source: dict[str, Any]) -> tuple[str | None, str | None, list[str] | None]:
    """(problem, weaker problem such as a type mismatch, columns) of one file, read as a stream."""
    if path.stat().st_size == 0:
        return EMPTY, None, None
    if fmt == "parquet":
        try:
            metadata = pq.ParquetFile(path).metadata
        except Exception as error:  # noqa: BLE001 - whatever the reader says, the file cannot be read
            return f"is not a readable Parquet file ({cause(error)})", None, None
        return (EMPTY if metadata.num_rows == 0 else None), None, list(metadata.schema.names)
    checks = {"json": _json_problem, "csv": _csv_problem, "text": lambda lines, source, path: (None, None, None)}
    if fmt not in checks:
        return None, None, None
    try:
        return checks[fmt](_decoded(path, source.get("encoding") or "utf-8"), source, path)
    except _Problem as problem:
        return str(problem), None, None


def _decoded(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line; _Problem at the first line that is not valid in the encoding."""
    with OPENERS.get(path.suffix.lower(), open)(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            try:
                yield number, raw.decode(encoding)
            except UnicodeDecodeError as error:
                raise _Problem(f"line {number}: not {encoding.upper()} text (byte 0x{raw[error.start]:02x} at column "
                               f"{error.start + 1}); save the file as UTF-8 or set `encoding` in the entry's "
                               "source") from error
            except LookupError as error:
                raise _Problem(f"cannot be read: unknown encoding {encoding!r}") from error


def _json_problem(lines: Iterator[tuple[int, str]], source: dict[str, Any], path: Path
                  ) -> tuple[str | None, str | None, list[str] | None]:
    """JSON Lines: the first line that is not one JSON object; a JSON document (a list of rows, or rows under
    `field`): where it stops parsing. Weaker: a field whose JSON type changes between lines."""
    kinds: dict[str, tuple[str, int]] = {}
    mismatch: str | None = None
    rows = 0
    for number, line in lines:
        if not line.strip():
            continue
        rows += 1
        if rows == 1 and (line.lstrip().startswith("[") or source.get("field")):
            return _json_document_problem(line + "".join(text for _, text in lines), source)
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            if rows == 1 and _json_document_problem(_whole(path, source), source)[0] is None:
                return None, None, None  # one pretty-printed object, which the loader reads too
            return f"line {number}: invalid JSON ({error.msg} at column {error.colno})", None, None
        if not isinstance(row, dict):
            return f"line {number}: expected one JSON object per line, got {_kind(row)}", None, None
        for key, value in row.items():
            first = kinds.setdefault(key, (_kind(value), number))
            if value is not None and first[0] == "null":
                kinds[key] = first = (_kind(value), number)
            if mismatch is None and value is not None and first[0] != _kind(value):
                mismatch = f"line {number}: field '{key}' is {_kind(value)} here but {first[0]} on line {first[1]}"
    if not rows:
        return f"{EMPTY} (only blank lines)", None, None
    return None, mismatch, sorted(kinds)


def _whole(path: Path, source: dict[str, Any]) -> str:
    return "".join(text for _, text in _decoded(path, source.get("encoding") or "utf-8"))


def _json_document_problem(text: str, source: dict[str, Any]) -> tuple[str | None, None, list[str] | None]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        return f"line {error.lineno}: invalid JSON ({error.msg} at column {error.colno})", None, None
    field = source.get("field")
    rows = document.get(field) if field and isinstance(document, dict) else document
    if field and rows is None:
        return f"has no field '{field}' (the entry's source sets `field: {field}`)", None, None
    if not isinstance(rows, list):
        return None, None, None
    if not rows:
        return EMPTY, None, None
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        return f"row {bad} of the JSON list: expected an object, got {_kind(rows[bad])}", None, None
    return None, None, sorted({key for row in rows for key in row})


def _kind(value: Any) -> str:
    return "null" if value is None else JSON_KINDS.get(type(value), type(value).__name__)


def _csv_problem(lines: Iterator[tuple[int, str]], source: dict[str, Any], path: Path
                 ) -> tuple[str | None, None, list[str] | None]:
    """The first row with more fields than the header (pandas fills short rows with nulls; long ones fail)."""
    separator = source.get("sep") or source.get("delimiter") or ("\t" if ".tsv" in path.suffixes else ",")
    reader = csv.reader((text for _, text in lines), delimiter=separator)
    header: list[str] | None = None
    rows = 0
    try:
        for row in reader:
            if not row:
                continue
            if header is None:
                header = row
                continue
            rows += 1
            if len(row) > len(header):
                return f"line {reader.line_num}: {len(row)} fields, but the header has {len(header)}", None, None
    except csv.Error as error:
        return f"line {reader.line_num}: {error}", None, None
    if header is None:
        return f"{EMPTY} (only blank lines)", None, None
    return (f"{EMPTY} (only a header line)" if not rows else None), None, header
