"""Predictions users can use: one JSONL file per task, `<dirpath>/<task>.jsonl`, one line per example of the split
`predict` reads (each task's test split where its catalogue entry has one, else its validation split), in the
split's order, gathered from every rank:

    {"index": 0, "id": "56be4db0acb8001400a502ec", "split": "validation",
     "inputs": {"question": "Which NFL team ...?", "context": "Super Bowl 50 was ..."},
     "gold": {"text": ["Denver Broncos"], "answer_start": [177]}, "prediction": "Denver Broncos"}

`index` is the example's position in the split as the data module loads it (after a catalogue entry's
`validation_from_train`, `skip_labels` and the `max_eval_examples` caps), `id` the value of the entry's `id` column
where it names one, `inputs` its input columns (multiple choice adds `choices`), `gold` its label, answers or
target column as the source has it. `prediction` is the head's: {label, probabilities} (classification), a score
(regression), a choice index, an answer text ("" = no answer), a summary; where the entry has a `label_map`,
`predicted` is the predicted class or choice as a raw label value (`entailment`, `C`), comparable with `gold`.

    python train.py predict --config X.yaml --ckpt_path X.ckpt        # -> <run>/predictions/
    python train.py fit --config X.yaml --predictions.after_fit=true   # at the end of fit, the best weights'
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from core.task_spec import TaskSpec
from datamodules.families import FAMILIES
from datamodules.families.base import column

# EvalBatchSampler yields every example (filler batches aside, which return no records)
warnings.filterwarnings("ignore", message="You are using a custom batch sampler .* for prediction")


def predict_split(spec: Any) -> str:
    """The split `predict` reads (as MultiTaskDataModule.setup does): the test split where there is one."""
    return "test" if "test" in spec.splits else "validation"


def gather_to_zero(records: list[dict], trainer: Trainer) -> list[dict] | None:
    """Every rank's records on rank 0 (None elsewhere)."""
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        return records
    parts = [None] * trainer.world_size if trainer.is_global_zero else None
    torch.distributed.gather_object(records, parts, dst=0)
    return [r for part in parts for r in part] if trainer.is_global_zero else None


def source_rows(datamodule: Any, spec: TaskSpec, split: str) -> dict[str, list] | None:
    """The split's raw columns the lines show (one Arrow read), as the data module loads them; None when the data
    module cannot load raw splits."""
    if not hasattr(datamodule, "raw_split"):
        return None
    raw = datamodule.raw_split(spec, split)
    return raw.select_columns(sorted({c.split(".")[0] for c in spec.columns()}))[:]


def lines(spec: TaskSpec, split: str, records: list[dict], rows: dict[str, list] | None) -> list[dict]:
    """One JSON object per prediction, with the example's id, inputs and gold from its raw row (as its family shows
    them) and the family's extras beside the prediction."""
    family = FAMILIES[spec.family]
    shown = family.describe(spec, rows) if rows else None
    ids = column(rows, spec.id) if rows and spec.id else None
    out = []
    for record in records:
        i = record["index"]
        line = {"index": i, **({"id": ids[i]} if ids is not None else {}), "split": split,
                **(shown[i] if shown else {})}
        out.append({**line, **family.prediction_extras(spec, record["prediction"]), "prediction": record["prediction"]})
    return out


class WritePredictions(Callback):
    """Writes `predict`'s records as one JSONL file per task in dataset order (see the module docstring); with
    `after_fit`, train.py predicts at the end of `fit` (lightning_modules/after_fit.py)."""

    def __init__(self, dirpath: str | None = None, after_fit: bool = False,
                 weights: Literal["best", "last"] = "best") -> None:
        """
        Args:
            dirpath: folder of the per-task JSONL prediction files `predict` writes; default `predictions/` in the
                run's log folder.
            after_fit: at the end of `fit`, predict every task's test split (its validation split where it has no
                test split) and write the files.
            weights: with `after_fit`: predict with the `best` checkpoint's weights (by the ModelCheckpoint
                monitor) or the `last` (final) ones.
        """
        self.dirpath, self.after_fit, self.weights = dirpath, after_fit, weights
        self._records: list[dict] = []
        self._folder: Path | None = None

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._records = []
        if self._folder is None:
            self._folder = self.folder(trainer)

    def folder(self, trainer: Trainer) -> Path:
        """`dirpath`, else `predictions/` in the run's log folder (a collective under DDP: every rank asks)."""
        return Path(self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / "predictions")

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._records += outputs or []  # a filler batch (is_padding) returns none

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        records = gather_to_zero(self._records, trainer)
        self._records = []
        if trainer.is_global_zero:
            self._write(trainer.datamodule, records)
        self._folder = None
        trainer.strategy.barrier()

    def _write(self, datamodule: Any, records: list[dict]) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        total = 0
        for spec in getattr(datamodule, "specs", []):
            mine = sorted((r for r in records if r["task"] == spec.name), key=lambda r: r["index"])
            if not mine:
                continue
            split = predict_split(spec)
            rows = source_rows(datamodule, spec, split)
            indices = [r["index"] for r in mine]
            if len(set(indices)) != len(indices):
                raise RuntimeError(f"predictions of task '{spec.name}': some examples were predicted twice")
            expected = len(next(iter(rows.values()))) if rows else len(indices)
            if indices != list(range(expected)):
                rank_zero_warn(f"predictions of task '{spec.name}': {len(indices)} of the {expected} examples of "
                               f"its {split} split were predicted")
            path = self._folder / f"{spec.name}.jsonl"
            path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n"
                                    for line in lines(spec, split, mine, rows)))
            total += len(mine)
        rank_zero_info(f"wrote {total} predictions to {self._folder}")
