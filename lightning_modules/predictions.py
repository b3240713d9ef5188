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
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from datamodules.families import choice_list, column
from lightning_modules.final_evaluation import WEIGHTS, after_fit, checkpoint_of

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


def source_rows(datamodule: Any, spec: Any, split: str) -> dict[str, list] | None:
    """The split's raw columns the lines show (one Arrow read), as the data module loads them; None when the data
    module cannot load raw splits."""
    if not hasattr(datamodule, "_raw"):
        return None
    raw = datamodule._raw(spec, split)
    return raw.select_columns(sorted({c.split(".")[0] for c in spec.columns()}))[:]


def lines(spec: Any, split: str, records: list[dict], rows: dict[str, list] | None) -> list[dict]:
    """One JSON object per prediction, with the example's id, inputs and gold from its raw row."""
    inputs = {name: column(rows, name) for name in spec.inputs} if rows else {}
    choices = choice_list(spec, rows) if rows and spec.choices else None
    gold = next((c for c in (spec.label, spec.answers, spec.target) if c), None)
    gold = column(rows, gold) if rows and gold else None
    ids = column(rows, spec.id) if rows and spec.id else None
    names = {}  # class or choice id -> its raw label value (the first one mapped to it)
    for value, label in (spec.label_map or {}).items():
        names.setdefault(label, value)
    out = []
    for record in records:
        i = record["index"]
        line = {"index": i, **({"id": ids[i]} if ids is not None else {}), "split": split}
        if rows:
            line["inputs"] = {name: values[i] for name, values in inputs.items()}
            if choices is not None:
                line["choices"] = choices[i]
            if gold is not None:
                line["gold"] = gold[i]
        prediction = record["prediction"]
        predicted = prediction.get("label") if isinstance(prediction, dict) else prediction
        if names and isinstance(predicted, int) and predicted in names:
            line["predicted"] = names[predicted]
        out.append({**line, "prediction": prediction})
    return out


class WritePredictions(Callback):
    """Writes `predict`'s records as one JSONL file per task in dataset order (see the module docstring), and
    predicts at the end of `fit` with `after_fit`."""

    def __init__(self, dirpath: str | None = None, after_fit: bool = False, weights: str = "best") -> None:
        """
        Args:
            dirpath: folder of the per-task JSONL prediction files `predict` writes; default `predictions/` in the
                run's log folder.
            after_fit: at the end of `fit`, predict every task's test split (its validation split where it has no
                test split) and write the files.
            weights: with `after_fit`: predict with the `best` checkpoint's weights (by the ModelCheckpoint
                monitor) or the `last` (final) ones.
        """
        if weights not in WEIGHTS:
            raise ValueError(f"predictions.weights is '{weights}'; expected one of {list(WEIGHTS)}")
        self.dirpath, self.after_fit, self.weights = dirpath, after_fit, weights
        self._records: list[dict] = []
        self._folder: Path | None = None

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.after_fit:
            return
        checkpoint = checkpoint_of(trainer, self.weights)
        self._folder = self.folder(trainer)  # the run's folder, before `after_fit` detaches the loggers
        with after_fit(trainer, pl_module, checkpoint):
            trainer.predict(pl_module, datamodule=trainer.datamodule, ckpt_path=checkpoint, return_predictions=False)

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
