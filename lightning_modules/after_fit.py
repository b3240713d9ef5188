"""The end of `fit`, run by train.py's LightningCLI `after_fit` hook through Lightning's public API, in this order:

1. export (`--export.*`): the best checkpoint's weights (`use_best`, by the ModelCheckpoint monitor) or the final
   ones, as a Hugging Face folder (lightning_modules/export.py), default `<run>/export`;
2. final evaluation (`--evaluate.weights=best|last`): `trainer.validate` (and `trainer.test` for tasks with a test
   split) with `ckpt_path` naming those weights, logged as `final/<task>/<metric>` (`final_test/...`) and written to
   `<run>/final_metrics.json`:
       {"weights": "best", "checkpoint": ".../step2036-score0.8881.ckpt", "step": 2036,
        "validation": {"score": 0.8881, "rte": {"loss": 0.41, "accuracy": 0.8881}}, "test": {...}}
3. predictions (`--predictions.after_fit=true --predictions.weights=best|last`): `trainer.predict` with `ckpt_path`
   naming those weights; the WritePredictions callback writes `<run>/predictions/<task>.jsonl`.

Every stage names its weights by a checkpoint file: `best` is the ModelCheckpoint's best checkpoint, `last` the
final weights, saved once by `trainer.save_checkpoint` as `final.ckpt` beside the run's checkpoints. So each stage
gets the weights it asks for whatever ran before it, also under FSDP (the strategy loads a checkpoint into its
shards). Whole splits are evaluated (`limit_*_batches` set to 1.0 for the stages). A fit that was interrupted runs
no stage.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from datamodules.families.base import Lengths
from lightning_modules.export import save_export
from lightning_modules.predictions import WritePredictions

Weights = Literal["best", "last"]
METRICS_FILE, FINAL_CHECKPOINT = "final_metrics.json", "final.ckpt"
LIMITS = ("limit_val_batches", "limit_test_batches", "limit_predict_batches")


class ExportPretrained:
    """At the end of `fit`, export the model as a Hugging Face folder."""

    def __init__(self, dirpath: str | None = None, use_best: bool = True) -> None:
        """
        Args:
            dirpath: output folder; default `export/` inside the run's log folder.
            use_best: export the best checkpoint's weights (by the ModelCheckpoint monitor) instead of the final
                ones.
        """
        self.dirpath, self.use_best = dirpath, use_best


class FinalEvaluation:
    """At the end of `fit`, evaluate the best or the final weights on whole validation and test splits."""

    def __init__(self, weights: Weights | None = None) -> None:
        """
        Args:
            weights: `best` (the best checkpoint by the ModelCheckpoint monitor, `val/score`) or `last` (the final
                weights): evaluate them at the end of `fit` on whole validation and test splits, log
                `final/<task>/<metric>` and write `final_metrics.json` into the run folder. null: no final evaluation.
        """
        self.weights = weights


class EndOfFit:
    """The stages above for one finished `fit` of `trainer`."""

    def __init__(self, trainer: Trainer, model: LightningModule, datamodule: LightningDataModule | None) -> None:
        self.trainer, self.model, self.datamodule = trainer, model, datamodule
        self.run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a collective under DDP: every rank asks
        self._final: str | None = None

    def run(self, export: ExportPretrained | None, evaluate: FinalEvaluation | None,
            predictions: WritePredictions | None) -> None:
        if self.trainer.interrupted:
            rank_zero_warn("fit was interrupted: no export, final evaluation or predictions")
            return
        limits = {name: getattr(self.trainer, name) for name in LIMITS}
        for name in LIMITS:
            setattr(self.trainer, name, 1.0)
        try:
            if export is not None:
                self.export(export)
            if evaluate is not None and evaluate.weights is not None:
                self.evaluate(evaluate.weights)
            if predictions is not None and predictions.after_fit:
                self.predict(predictions.weights)
        finally:
            for name, value in limits.items():
                setattr(self.trainer, name, value)

    # ---- which weights ---------------------------------------------------------------------------------------------
    def checkpoint(self, weights: Weights) -> str:
        """The checkpoint file holding `weights`: the best checkpoint (rank 0 decides for every rank), or the final
        weights saved once (a collective: every rank calls it)."""
        callback = self.trainer.checkpoint_callback
        best = callback.best_model_path if weights == "best" and callback is not None else ""
        best = self.trainer.strategy.broadcast(best if best and Path(best).is_file() else "")
        if best:
            return best
        if weights == "best":
            rank_zero_warn("weights=best, but no best checkpoint was saved (no monitored ModelCheckpoint, or no "
                           "validation ran): using the final weights")
        if self._final is None:
            folder = Path(callback.dirpath) if callback is not None and callback.dirpath else self.run_dir
            self._final = str(folder / FINAL_CHECKPOINT)
            self.trainer.save_checkpoint(self._final)
        return self._final

    # ---- the stages ------------------------------------------------------------------------------------------------
    def export(self, options: ExportPretrained) -> None:
        source = self.checkpoint("best" if options.use_best else "last")
        folder = Path(options.dirpath or self.run_dir / "export")
        if self.trainer.is_global_zero:
            state = torch.load(source, map_location="cpu", mmap=True, weights_only=False)["state_dict"]
            save_export(self.model, folder, state, dataclasses.asdict(self.datamodule.lengths)
                        if isinstance(getattr(self.datamodule, "lengths", None), Lengths) else None)
            rank_zero_info(f"exported the pre-finetuned model ({source}) to {folder}")
        self.trainer.strategy.barrier("export")

    def evaluate(self, weights: Weights) -> None:
        source = self.checkpoint(weights)
        step = int(torch.load(source, map_location="cpu", mmap=True, weights_only=False).get("global_step", -1))
        report: dict[str, Any] = {"weights": weights, "checkpoint": source, "step": step}
        self.model.eval_prefixes = {"val": "final", "test": "final_test"}
        try:
            report["validation"] = by_task(self.trainer.validate(self.model, datamodule=self.datamodule,
                                                                 ckpt_path=source, verbose=False), "final")
            if any("test" in spec.splits for spec in getattr(self.datamodule, "specs", [])):
                report["test"] = by_task(self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=source,
                                                           verbose=False), "final_test")
        finally:
            del self.model.eval_prefixes  # back to the class's own (val/, test/)
        if self.trainer.is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / METRICS_FILE).write_text(json.dumps(report, indent=2) + "\n")
        shown = "  ".join(f"{task}/{name} {value:.4f}" for task, values in report["validation"].items()
                          if isinstance(values, dict) for name, value in values.items() if name != "loss")
        rank_zero_info(f"final evaluation of the {weights} weights (step {step}): {shown}\n"
                       f"written to {self.run_dir / METRICS_FILE}")

    def predict(self, weights: Weights) -> None:
        self.trainer.predict(self.model, datamodule=self.datamodule, ckpt_path=self.checkpoint(weights),
                             return_predictions=False)


def by_task(results: list[dict[str, float]], prefix: str) -> dict[str, Any]:
    """`trainer.validate` / `test` results (`<prefix>/<task>/<metric>`, `<prefix>/score`) -> {score, task: {metric:
    value}}."""
    out: dict[str, Any] = {}
    for key, value in {k: v for part in results for k, v in part.items()}.items():
        head, *name = key.split("/")
        if head != prefix:
            continue
        if len(name) == 1:
            out[name[0]] = float(value)
        else:
            out.setdefault(name[0], {})["/".join(name[1:])] = float(value)
    return out
