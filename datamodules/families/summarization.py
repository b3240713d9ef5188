"""Summarization, data side: a document and its summary; the summary's token ids are the decoder's target.
Head: heads/summarization.py (needs an encoder-decoder backbone such as BART)."""

from __future__ import annotations

from dataclasses import dataclass

from core.batch import BatchKey
from core.task_spec import COLUMN, TaskSpec
from datamodules.families.base import DataFamily, column, encoded, texts_bad


@dataclass
class SummarizationFields:
    target: str  # summary column

    def columns(self) -> list[str]:
        return [self.target]


class Summarization(DataFamily):
    name = "summarization"
    Fields = SummarizationFields
    field_types = {"target": COLUMN}
    input_counts = (1,)
    metrics = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    batch_keys = (BatchKey("target_ids", "target_ids", "sequence"),)
    problem = "null or not text"

    def default_metrics(self, fields: SummarizationFields) -> list[str]:
        return ["rouge1", "rouge2", "rougeLsum"]

    def target_checks(self, spec: TaskSpec) -> dict:
        return {spec.fields.target: lambda b: texts_bad(column(b, spec.fields.target))}

    def preprocess(self, spec, tok, lengths, for_eval):
        def preprocess(examples: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
            enc = tok(column(examples, spec.inputs[0]), truncation=True, max_length=lengths.max_length)
            targets = tok(text_target=column(examples, spec.fields.target), truncation=True,
                          max_length=lengths.max_target_length)
            return {**encoded(enc), "target_ids": targets["input_ids"], "length": [len(x) for x in enc["input_ids"]]}
        return preprocess

    def gold_column(self, spec: TaskSpec) -> str:
        return spec.fields.target

    def placeholder_target(self, spec: TaskSpec, row: dict) -> dict:
        return {spec.fields.target: ""}

    def outputs(self, spec: TaskSpec) -> str:
        return "text"
