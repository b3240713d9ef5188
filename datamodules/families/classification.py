"""Classification, data side: single sentences and sentence pairs (a third input joins the second segment, as for
MultiRC), one label per example; `num_labels: 1` is regression (a finite number per example, normalised by the
training split's mean and standard deviation, which are handed to the head). Head: heads/classification.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset

from core.batch import BatchKey
from core.task_spec import COLUMN, FROM_FEATURES, LABEL_MAP, TaskSpec, is_int
from datamodules.families.base import (DataFamily, EntryProblem, class_count, class_id, column, encoded,
                                       finite_number, label_names, named_classes, plain_column, skip_rows)


@dataclass
class ClassificationFields:
    label: str  # label column
    num_labels: int | str  # classes; 1 = regression; `features`: read from the data when it is prepared
    label_map: dict[Any, int] | None = None  # raw label value -> class id
    skip_labels: list[Any] | None = None  # raw label values whose rows are dropped (SNLI's -1)

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def unresolved(self) -> bool:
        return self.num_labels == FROM_FEATURES

    def columns(self) -> list[str]:
        return [self.label]


def target(fields: ClassificationFields, value: Any) -> int | float | None:
    """The training target of a raw label (a class id, or a finite float for regression), None when unusable."""
    if fields.is_regression and fields.label_map is None:
        return finite_number(value)
    return class_id(value, fields.label_map, fields.num_labels)


class Classification(DataFamily):
    name = "classification"
    Fields = ClassificationFields
    field_types = {"label": COLUMN, "num_labels": (lambda v: is_int(v) or v == FROM_FEATURES,
                                                   f"an integer, or '{FROM_FEATURES}' (read from the data)"),
                   "label_map": LABEL_MAP,
                   "skip_labels": (lambda v: isinstance(v, list), "a list of raw label values")}
    input_counts = (1, 2, 3)
    metrics = ("accuracy", "f1", "matthews_corrcoef", "pearson", "spearman")
    batch_keys = (BatchKey("label", "labels", "row_float"),)
    problem = "null, unmapped or outside num_labels (regression: not a finite number)"

    def default_metrics(self, fields: ClassificationFields) -> list[str]:
        return ["pearson", "spearman"] if fields.is_regression else ["accuracy"]

    tasksource_types = ("Classification",)

    def check_entry(self, spec: TaskSpec) -> None:
        fields = spec.fields
        if fields.unresolved:
            return
        if fields.num_labels < 1:
            raise EntryProblem("num_labels", f"field 'num_labels' must be >= 1 (1 = regression), got "
                                             f"{fields.num_labels}")
        outside = {k: v for k, v in (fields.label_map or {}).items() if not 0 <= v < fields.num_labels}
        if outside:
            raise EntryProblem("label_map", f"field 'label_map' maps {outside} outside 0..{fields.num_labels - 1} "
                                            f"(num_labels {fields.num_labels})")
        if fields.is_regression and {"accuracy", "f1", "matthews_corrcoef"} & set(spec.metrics):
            raise EntryProblem("metrics", "a regression task (num_labels 1) reports pearson and/or spearman")

    def target_checks(self, spec: TaskSpec) -> dict:
        fields = spec.fields
        return {fields.label: lambda b: [target(fields, v) is None for v in column(b, fields.label)]}

    def prepare_raw(self, spec: TaskSpec, dataset: Dataset, split: str) -> Dataset:
        return skip_rows(spec, dataset, spec.fields.label, spec.fields.skip_labels, split)

    def preprocess(self, spec, tok, lengths, for_eval):
        fields = spec.fields

        def preprocess(examples: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
            texts = [column(examples, name) for name in spec.inputs]
            if len(texts) > 2:  # e.g. MultiRC (paragraph, question, answer): the rest joins the second segment
                texts = [texts[0], [" ".join(parts) for parts in zip(*texts[1:])]]
            enc = tok(*texts, truncation=True, max_length=lengths.max_length)  # pairs: longest_first keeps both
            labels = [float(target(fields, v)) for v in column(examples, fields.label)]
            return {**encoded(enc), "label": labels, "length": [len(x) for x in enc["input_ids"]]}
        return preprocess

    def train_statistics(self, spec: TaskSpec, train: Dataset) -> dict[str, Any] | None:
        """Regression: the training targets' mean, (population) standard deviation and count (one Arrow read)."""
        if not spec.fields.is_regression:
            return None
        labels = np.asarray(train.with_format("numpy", columns=["label"])[:]["label"], dtype=np.float64)
        return {"mean": float(labels.mean()), "std": float(labels.std()), "count": len(labels)}

    def gold_column(self, spec: TaskSpec) -> str:
        return spec.fields.label

    def placeholder_target(self, spec: TaskSpec, row: dict[str, Any]) -> dict[str, Any]:
        fields = spec.fields
        return {fields.label: next(iter(fields.label_map)) if fields.label_map else 0}

    def outputs(self, spec: TaskSpec) -> str:
        if spec.fields.unresolved:
            return "classes from data"
        return "regression" if spec.fields.is_regression else f"{spec.fields.num_labels} classes"

    def resolve(self, spec: TaskSpec, splits: dict[str, Dataset]) -> tuple[dict[str, Any], list[str]]:
        if not spec.fields.unresolved:
            return {}, []
        count, label_map, line = class_count(spec, splits, spec.fields.label, "num_labels")
        return {"num_labels": count, **({"label_map": label_map} if label_map else {})}, [line]

    def from_tasksource(self, mapping: Any, static: bool) -> dict[str, Any] | None:
        """tasksource's Classification: sentence1, sentence2 (its default `sentence2` means: the dataset's column of
        that name where it has one, so it is left to the data), labels; `label_values` (raw value -> name) and
        `name(column, classes)` give the classes, else the data's features do."""
        first, second, labels = (getattr(mapping, key, None) for key in ("sentence1", "sentence2", "labels"))
        named = named_classes(labels)
        count = len(mapping.label_values) if mapping.label_values else len(named[1]) if named else FROM_FEATURES
        if not static:  # tasksource's code writes sentence1 (sentence2), labels; explicit label values are ids
            return {"inputs": ["sentence1"], **({"from_data": {"inputs": ["sentence2"]}} if second else {}),
                    "label": "labels", "num_labels": count}
        first, second_column, label = plain_column(first), plain_column(second), plain_column(labels)
        label = label or (named[0] if named else None)
        if not first or second is not None and not second_column or not label:
            return None
        entry = {"inputs": [first] + ([second_column] if second_column and second_column != "sentence2" else []),
                 **({"from_data": {"inputs": ["sentence2"]}} if second_column == "sentence2" else {}),
                 "label": label, "num_labels": count}
        if mapping.label_values:
            entry["label_map"] = {value: i for i, value in enumerate(mapping.label_values)}
        return entry

    def prediction_extras(self, spec: TaskSpec, prediction: Any) -> dict[str, Any]:
        names = label_names(spec.fields.label_map)
        label = prediction.get("label") if isinstance(prediction, dict) else None
        return {"predicted": names[label]} if label in names else {}
