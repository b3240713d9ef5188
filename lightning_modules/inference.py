"""Predictions on new inputs from an export folder or a `.ckpt`, without a data module or a Trainer:

    predictor = Predictor.load("exported/")                     # or "logs/.../step1000.ckpt"; device="cuda"
    predictor.predict("demo_sentiment", [{"text": "a truly wonderful film ."}])
    # -> [{"label": 1, "probabilities": [0.03, 0.97]}]

    python -m lightning_modules.inference --model exported/ --task demo_sentiment --input rows.jsonl \\
        --output predictions.jsonl [--batch-size 32] [--device cuda] [--max-length N]

Rows are dicts with the task's input columns as its catalogue entry names them (the spec travels in the export's
`muppet_tasks.json` or the checkpoint's hyperparameters). Each row goes through its family's `preprocess` (the
evaluation form) and `MultiTaskCollator`, batches of whole examples go through `MuppetModule.predict_step`, and the
lines written are those of `train.py predict` (lightning_modules/predictions.py): index, id where the entry names an
id column and the rows have it, inputs, gold where a row has it, the family's extras, prediction.

Lengths (`max_length`, capped at the backbone's positions, `doc_stride`, `max_target_length`) are those the model
was trained with: an export records the data module's (`muppet_model.json`), a `.ckpt` stores them with its data
module's hyperparameters; an argument given overrides them, and where none were recorded (an export written before
they were) the defaults 256, 64 and 64 apply.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from core.batch import SOURCE_INDEX
from core.errors import CheckpointError, OptionError, UserError
from core.task_spec import TaskSpec
from datamodules.catalogue import spec_from_dict
from datamodules.collate import MultiTaskCollator
from datamodules.families import FAMILIES
from datamodules.families.base import Lengths
from lightning_modules.export import (
    MODEL_FILE,
    TASKS_FILE,
    read_export_heads,
    recorded_lengths,
)
from lightning_modules.muppet import MuppetModule
from lightning_modules.predictions import lines
from lightning_modules.rebuild import module_from_checkpoint


def module_from_export(folder: str | Path) -> MuppetModule:
    """A MuppetModule from an export folder: the backbone (and its recorded pooling) by `from_pretrained`, the
    tasks from `muppet_tasks.json`, heads shared as they were in the run, every head's weights loaded strictly."""
    folder = Path(folder)
    heads, keys = read_export_heads(folder)
    tasks = json.loads((folder / TASKS_FILE).read_text())
    specs = [spec_from_dict(task) for task in tasks]  # the extra "head" key is not an entry field: dropped
    shared = sorted({s.family for s in specs if keys[s.name].startswith("family_")})
    built = json.loads((folder / MODEL_FILE).read_text()) if (folder / MODEL_FILE).is_file() else {}
    sharing = built.get("head_sharing") or ("label_set" if any(k.startswith("labels_") for k in keys.values())
                                            else "per_task")  # exports written before muppet_model.json
    module = MuppetModule(backbone=str(folder), task_specs=[s.to_dict() for s in specs], shared_heads=shared,
                          head_sharing=sharing, head_dense=built.get("head_dense") is not False)
    if module.head_keys != [keys[s.name] for s in specs]:
        raise CheckpointError(str(folder), f"its heads {sorted(set(keys.values()))} cannot be rebuilt (got "
                                           f"{sorted(set(module.head_keys))})", "--model")
    missing, unexpected = module.heads.load_state_dict(heads, strict=False)
    if missing or unexpected:
        raise CheckpointError(str(folder), f"its {len(heads)} head tensors do not match the tasks' heads "
                                           f"({len(missing)} missing, e.g. {(missing or unexpected)[0]})", "--model")
    return module


def load_module(path: str | Path) -> MuppetModule:
    """An export folder or a Lightning checkpoint of MuppetModule, in eval mode on the CPU."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(str(path), "does not exist", "--model")
    module = module_from_export(path) if path.is_dir() else module_from_checkpoint(path)
    return module.eval()


def as_columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    """Rows -> columns (a key missing from a row is None there)."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    return {name: [row.get(name) for row in rows] for name in names}


def with_targets(spec: TaskSpec, columns: dict[str, list], tokenizer: Any, lengths: Lengths
                 ) -> tuple[dict[str, list], list[bool]]:
    """(columns with every target column complete, whether each row had its gold), for the family's preprocess: a
    row without its target gets the family's `placeholder_target` (predictions never read it)."""
    family, count = FAMILIES[spec.family], len(next(iter(columns.values())))
    missing = [c for c in spec.inputs if c.split(".")[0] not in columns]
    if missing:
        raise OptionError("--input", f"task '{spec.name}' reads the input column(s) {missing}; the rows have "
                                     f"{sorted(columns)}")
    gold = family.gold_column(spec)
    has_gold = [v is not None for v in columns.get(gold.split(".")[0], [None] * count)] if gold else [False] * count
    filled = {name: list(values) for name, values in columns.items()}
    for i, known in enumerate(has_gold):
        if known:
            continue
        for name, value in family.placeholder_target(spec, {k: v[i] for k, v in columns.items()}).items():
            filled.setdefault(name, [None] * count)[i] = value
    return filled, has_gold


class Predictor:
    """A trained MuppetModule ready for raw rows (see the module docstring)."""

    def __init__(self, module: MuppetModule, lengths: Lengths | None = None, device: str | torch.device = "cpu"
                 ) -> None:
        self.module, self.device = module.eval().to(device), torch.device(device)
        limit = module.backbone.max_input_length
        lengths = lengths or Lengths()
        self.lengths = dataclasses.replace(lengths, max_length=min(lengths.max_length, limit))
        self.collator = MultiTaskCollator([FAMILIES[s.family] for s in module.specs], module.tokenizer.pad_token_id)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", max_length: int | None = None,
             doc_stride: int | None = None, max_target_length: int | None = None) -> Predictor:
        """From an export folder or a `.ckpt`; lengths as `data.max_length`, `data.doc_stride`,
        `data.max_target_length`: None takes what the export or checkpoint recorded (else Lengths' defaults)."""
        module = load_module(path)
        given = {"max_length": max_length, "doc_stride": doc_stride, "max_target_length": max_target_length}
        lengths = {**recorded_lengths(Path(path)), **{k: v for k, v in given.items() if v is not None}}
        return cls(module, Lengths(**lengths), device)

    @property
    def tasks(self) -> list[str]:
        return [s.name for s in self.module.specs]

    def spec(self, task: str) -> TaskSpec:
        for spec in self.module.specs:
            if spec.name == task:
                return spec
        raise OptionError("--task", f"'{task}' is not a task of this model; its tasks: {self.tasks}")

    def encode(self, task: str, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """The preprocessed rows of each example (several for span windows), in input order."""
        spec, task_id = self.spec(task), self.tasks.index(task)
        columns, _ = with_targets(spec, as_columns(rows), self.module.tokenizer, self.lengths)
        out = FAMILIES[spec.family].preprocess(spec, self.module.tokenizer, self.lengths, for_eval=True)(
            columns, list(range(len(rows))))
        examples: list[list[dict[str, Any]]] = [[] for _ in rows]
        for i in range(len(out["input_ids"])):
            row = {"task_id": task_id, "index": i, **{k: v[i] for k, v in out.items()}}
            examples[row.get(SOURCE_INDEX, i)].append(row)
        return examples

    @torch.inference_mode()
    def records(self, task: str, rows: list[dict[str, Any]], batch_size: int = 32) -> list[dict[str, Any]]:
        """`predict_step`'s records {task, index, prediction}, one per row, batches of `batch_size` whole rows."""
        if batch_size < 1:
            raise OptionError("--batch-size", f"must be >= 1, got {batch_size}")
        if not rows:
            return []
        examples, records = self.encode(task, rows), []
        for start in range(0, len(examples), batch_size):
            batch = self.collator([row for example in examples[start:start + batch_size] for row in example])
            batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            records += self.module.predict_step(batch, start // batch_size)
        return sorted(records, key=lambda r: r["index"])

    def predict(self, task: str, rows: list[dict[str, Any]], batch_size: int = 32) -> list[Any]:
        """One prediction per row, as its head gives it (the `prediction` of a `train.py predict` line)."""
        return [r["prediction"] for r in self.records(task, rows, batch_size)]

    def lines(self, task: str, rows: list[dict[str, Any]], batch_size: int = 32, split: str = "input"
              ) -> list[dict[str, Any]]:
        """The lines `train.py predict` writes for these rows (`split`: what the lines' `split` field says)."""
        spec = self.spec(task)
        if not rows:
            return []
        columns, has_gold = with_targets(spec, as_columns(rows), self.module.tokenizer,
                                          self.lengths)
        shown = spec if spec.id in columns else dataclasses.replace(spec, id=None)
        out = lines(shown, split, self.records(task, rows, batch_size), columns)
        for line, gold in zip(out, has_gold):
            if not gold:
                line.pop("gold", None)
        return out


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for number, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if text.strip():
            try:
                rows.append(json.loads(text))
            except ValueError as error:
                raise OptionError("--input", f"{path} line {number} is not JSON ({error})") from None
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise OptionError("--input", f"{path} holds no JSON objects (one per line)")
    return rows


def main(args: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description="Predict with an export folder or a checkpoint on JSONL rows.")
    parser.add_argument("--model", required=True, help="an export folder or a Lightning .ckpt of MuppetModule")
    parser.add_argument("--task", required=True, help="a task the model was trained on")
    parser.add_argument("--input", required=True, help="JSONL, one row per line with the task's input columns")
    parser.add_argument("--output", help="JSONL file to write (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-length", type=int, default=None,
                        help="default: data.max_length the model was trained with (recorded), else 256")
    parser.add_argument("--doc-stride", type=int, default=None, help="default: the recorded one, else 64")
    parser.add_argument("--max-target-length", type=int, default=None, help="default: the recorded one, else 64")
    parser.add_argument("--split", default="input", help="what the lines' `split` field says")
    options = parser.parse_args(args)
    try:
        predictor = Predictor.load(options.model, options.device, options.max_length, options.doc_stride,
                                   options.max_target_length)
        out = predictor.lines(options.task, read_rows(options.input), options.batch_size, options.split)
    except UserError as error:
        parser.exit(2, f"error: {error}\n")
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in out)
    if options.output:
        Path(options.output).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return out


if __name__ == "__main__":
    main()
