"""Multiple choice, data side: one (context, choice) encoding per choice, each a batch row of its example; the label
is the correct choice's index. Head: heads/multiple_choice.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from core.batch import ROWS, BatchKey
from core.task_spec import FROM_FEATURES, LABEL_MAP, TaskSpec, is_int, is_str_list
from datamodules.families.base import (DataFamily, EntryProblem, class_count, class_id, column, encoded,
                                       label_names, plain_column, skip_rows)


@dataclass
class MultipleChoiceFields:
    label: str  # column of the correct choice
    choices: str | list[str]  # a list column, or a list of one column per choice
    num_choices: int | str  # choices per example (the most an example has); `features`: read from the data
    label_map: dict[Any, int] | None = None  # raw label value -> choice index
    skip_labels: list[Any] | None = None  # raw label values whose rows are dropped

    def columns(self) -> list[str]:
        return [self.label, *([self.choices] if isinstance(self.choices, str) else self.choices)]


def choice_list(fields: MultipleChoiceFields, batch: dict[str, list]) -> list[list]:
    if isinstance(fields.choices, str):
        return column(batch, fields.choices)
    return [list(row) for row in zip(*(column(batch, c) for c in fields.choices))]


class MultipleChoice(DataFamily):
    name = "multiple_choice"
    Fields = MultipleChoiceFields
    field_types = {"label": (lambda v: isinstance(v, str), "a column name"),
                   "choices": (lambda v: isinstance(v, str) or is_str_list(v),
                               "a list column's name or a list of column names"),
                   "num_choices": (lambda v: is_int(v) or v == FROM_FEATURES,
                                   f"an integer, or '{FROM_FEATURES}' (read from the data)"),
                   "label_map": LABEL_MAP,
                   "skip_labels": (lambda v: isinstance(v, list), "a list of raw label values")}
    input_counts = (1, 2, 3)
    metrics = ("accuracy",)
    multi_row = True
    batch_keys = (BatchKey("label", "labels", "row_float"),)
    problem = "null, unmapped or outside the choices"

    tasksource_types = ("MultipleChoice",)

    def check_entry(self, spec: TaskSpec) -> None:
        fields = spec.fields
        if fields.num_choices == FROM_FEATURES:
            return
        if fields.num_choices < 2:
            raise EntryProblem("num_choices", f"field 'num_choices' must be >= 2, got {fields.num_choices}")
        outside = {k: v for k, v in (fields.label_map or {}).items() if not 0 <= v < fields.num_choices}
        if outside:
            raise EntryProblem("label_map", f"field 'label_map' maps {outside} outside 0..{fields.num_choices - 1} "
                                            f"(num_choices {fields.num_choices})")

    def target_checks(self, spec: TaskSpec) -> dict:
        fields = spec.fields

        def choices_bad(batch: dict[str, list]) -> list[bool]:
            return [not isinstance(v, list) or not v or any(not isinstance(c, str) for c in v)
                    for v in choice_list(fields, batch)]

        def label_bad(batch: dict[str, list]) -> list[bool]:
            return [(i := class_id(v, fields.label_map, fields.num_choices)) is None
                    or isinstance(c, list) and i >= len(c)
                    for v, c in zip(column(batch, fields.label), choice_list(fields, batch))]
        return {str(fields.choices): choices_bad, fields.label: label_bad}

    def prepare_raw(self, spec: TaskSpec, dataset: Dataset, split: str) -> Dataset:
        return skip_rows(spec, dataset, spec.fields.label, spec.fields.skip_labels, split)

    def preprocess(self, spec, tok, lengths, for_eval):
        """One (context, choice) encoding per choice; `label` is the correct choice's index, `rows` the choice
        count."""
        fields = spec.fields

        def preprocess(examples: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
            parts = zip(*(column(examples, name) for name in spec.inputs))
            firsts = [" ".join(p.strip() for p in row if p and p.strip()) for row in parts]
            choices = choice_list(fields, examples)
            flat_first = [f for f, cs in zip(firsts, choices) for _ in cs]
            flat_choice = [c for cs in choices for c in cs]
            enc = tok(flat_first, flat_choice, truncation=True, max_length=lengths.max_length)
            columns, start = {key: [] for key in encoded(enc)}, 0
            for cs in choices:  # regroup the flat (context, choice) encodings per example
                for key, values in columns.items():
                    values.append(enc[key][start:start + len(cs)])
                start += len(cs)
            input_ids = columns["input_ids"]
            labels = [float(class_id(v, fields.label_map, fields.num_choices)) for v in column(examples, fields.label)]
            return {**columns, "label": labels, "length": [len(rows) * max(map(len, rows)) for rows in input_ids],
                    ROWS: list(map(len, input_ids))}
        return preprocess

    def gold_column(self, spec: TaskSpec) -> str:
        return spec.fields.label

    def describe(self, spec: TaskSpec, rows: dict[str, list]) -> list[dict[str, Any]]:
        lines = super().describe(spec, rows)
        for line, choices in zip(lines, choice_list(spec.fields, rows)):
            line["choices"] = choices
        return lines

    def placeholder_target(self, spec: TaskSpec, row: dict[str, Any]) -> dict[str, Any]:
        fields = spec.fields
        return {fields.label: next(iter(fields.label_map)) if fields.label_map else 0}

    def outputs(self, spec: TaskSpec) -> str:
        return "choices from data" if spec.fields.num_choices == FROM_FEATURES else f"{spec.fields.num_choices} choices"

    def resolve(self, spec: TaskSpec, splits: dict[str, Dataset]) -> tuple[dict[str, Any], list[str]]:
        """`num_choices: features`: the longest choice list of any split (every choice is kept)."""
        fields, changes, lines = spec.fields, {}, []
        label = splits["train"].features.get(fields.label)
        if fields.label_map is None and getattr(label, "dtype", None) in ("string", "large_string"):  # letters A..E
            _, changes["label_map"], line = class_count(spec, splits, fields.label, "label_map")
            lines.append(line)
        if fields.num_choices != FROM_FEATURES:
            return changes, lines
        roots = sorted({c.split(".")[0] for c in MultipleChoiceFields.columns(fields)})
        most = max((len(c) for rows in splits.values() for start in range(0, len(rows), 10_000)
                    for c in choice_list(fields, rows.select_columns(roots)[start:start + 10_000])
                    if isinstance(c, list)), default=0)
        return {**changes, "num_choices": most}, [*lines, (f"num_choices {most} read from the data (the longest choice "
                                                          f"list of '{fields.choices}' in splits {sorted(splits)}; "
                                                          f"every choice is kept)")]

    def from_tasksource(self, mapping: Any, static: bool) -> dict[str, Any] | None:
        """tasksource's MultipleChoice: inputs, labels, and either choice0..choiceN or a list `choices_list`. Every
        choice is kept, in the source's order (tasksource's loader keeps 4, gold first)."""
        fixed = sorted((k for k in mapping.to_dict() if k.startswith("choice") and k[6:].isdigit()),
                       key=lambda k: int(k[6:]))
        listed = getattr(mapping, "choices_list", None)
        if not static:
            choices = "choices_list" if listed else fixed
            return {"inputs": ["inputs"], "choices": choices, "label": "labels",
                    "num_choices": FROM_FEATURES if listed else len(fixed)}
        inputs, label = plain_column(getattr(mapping, "inputs", None)), plain_column(getattr(mapping, "labels", None))
        columns = [plain_column(getattr(mapping, k)) for k in fixed]
        choices = plain_column(listed) if listed else columns
        if not inputs or not label or not choices or None in columns:
            return None
        return {"inputs": [inputs], "choices": choices, "label": label,
                "num_choices": FROM_FEATURES if listed else len(fixed)}

    def prediction_extras(self, spec: TaskSpec, prediction: Any) -> dict[str, Any]:
        names = label_names(spec.fields.label_map)
        return {"predicted": names[prediction]} if isinstance(prediction, int) and prediction in names else {}
