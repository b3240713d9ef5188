"""Checks of a task's raw split before anything is tokenized or written: errors name the task, split and field,
and for bad rows how many there are and the first index."""

from __future__ import annotations

from typing import Any, Callable

from datasets import Dataset

from datamodules.catalogue import TaskSpec

CHECK_BATCH = 10_000


class DataValidationError(ValueError):
    """A split that cannot be trained on."""


def column(batch: dict[str, list], name: str) -> list:
    """A (possibly dotted) column of a batch: `choices.text` reads `batch["choices"][i]["text"]`."""
    root, *path = name.split(".")
    values = batch[root]
    for key in path:
        values = [None if v is None else v[key] for v in values]
    return values


def _texts_bad(values: list) -> list[bool]:
    return [not isinstance(v, str) for v in values]


def _choices_bad(values: list) -> list[bool]:
    return [not isinstance(v, list) or not v or any(not isinstance(c, str) for c in v) for v in values]


def label_to_id(spec: TaskSpec, value: Any) -> int | float | None:
    """The training target of a raw label, or None when it is unmapped/out of range."""
    if value is None:
        return None
    if spec.label_map is not None:
        return spec.label_map.get(value, spec.label_map.get(str(value)))
    if spec.is_regression:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
        return None
    upper = spec.num_labels if spec.family == "classification" else spec.num_choices
    return int(value) if 0 <= value < upper else None


def choice_list(spec: TaskSpec, batch: dict[str, list]) -> list[list]:
    if isinstance(spec.choices, str):
        return column(batch, spec.choices)
    columns = [column(batch, c) for c in spec.choices]
    return [list(row) for row in zip(*columns)]


def _answers_bad(spec: TaskSpec, batch: dict[str, list]) -> list[bool]:
    bad = []
    for context, answers in zip(column(batch, spec.inputs[1]), column(batch, spec.answers)):
        if not isinstance(answers, dict) or not isinstance(context, str):
            bad.append(True)
            continue
        texts, starts = answers.get("text") or [], answers.get("answer_start") or []
        if not texts:
            bad.append(not spec.allow_no_answer)
            continue
        bad.append(len(texts) != len(starts) or any(context[s:s + len(t)] != t for t, s in zip(texts, starts)))
    return bad


def _row_checks(spec: TaskSpec) -> dict[str, Callable[[dict[str, list]], list[bool]]]:
    """field -> function flagging bad rows of a batch."""
    checks = {name: (lambda b, n=name: _texts_bad(column(b, n))) for name in spec.inputs}
    if spec.family == "classification":
        checks[spec.label] = lambda b: [label_to_id(spec, v) is None for v in column(b, spec.label)]
    if spec.family == "multiple_choice":
        checks[str(spec.choices)] = lambda b: _choices_bad(choice_list(spec, b))
        checks[spec.label] = lambda b: [
            (i := label_to_id(spec, v)) is None or isinstance(c, list) and i >= len(c)
            for v, c in zip(column(b, spec.label), choice_list(spec, b))]
    if spec.family == "span":
        checks[spec.answers] = lambda b: _answers_bad(spec, b)
    if spec.family == "summarization":
        checks[spec.target] = lambda b: _texts_bad(column(b, spec.target))
    return checks


PROBLEMS = {"classification": "null, unmapped or outside num_labels", "multiple_choice": "null, unmapped or outside the choices",
            "span": "an answer that is not at its answer_start in the context (or no answer where allow_no_answer is false)",
            "summarization": "null or not text"}


def validate_split(spec: TaskSpec, split: str, dataset: Dataset) -> None:
    where = f"task '{spec.name}', split '{split}'"
    if len(dataset) == 0:
        raise DataValidationError(f"{where}: the split is empty")
    missing = sorted({c.split(".")[0] for c in spec.columns()} - set(dataset.column_names))
    if missing:
        raise DataValidationError(f"{where}: missing column(s) {missing}; the data has {dataset.column_names}")
    checks = _row_checks(spec)
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
            problem = "null or not text" if name in spec.inputs else PROBLEMS[spec.family]
            raise DataValidationError(f"{where}: field '{name}' is {problem} in {count} row(s), first at index "
                                      f"{first_bad[name]}")
