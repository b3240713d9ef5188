"""The end of `fit`: evaluate the weights the user chooses, the best checkpoint's or the final ones
(`--evaluate.weights=best|last`), on every task's validation split and, where a task has one, its test split; log
`final/<task>/<metric>` (`final_test/<task>/<metric>` for test splits) and write `final_metrics.json` into the run
folder:

    {"weights": "best", "checkpoint": ".../step2036-score0.8881.ckpt", "step": 2036,
     "validation": {"score": 0.8881, "rte": {"loss": 0.41, "accuracy": 0.8881}}, "test": {...}}

The evaluation is Lightning's own `validate` / `test` on the same Trainer after training (`after_fit`), so it runs
under the run's strategy (DDP shards the examples, metrics are synced) over whole splits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

WEIGHTS = ("best", "last")
LIMITS = ("limit_val_batches", "limit_test_batches", "limit_predict_batches")
METRICS_FILE = "final_metrics.json"


def checkpoint_of(trainer: Trainer, weights: str) -> str | None:
    """`best`: the best checkpoint by the ModelCheckpoint monitor; `last` (or no best checkpoint): None, the
    module's final weights."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights is '{weights}'; expected one of {list(WEIGHTS)}")
    callback = trainer.checkpoint_callback
    best = callback.best_model_path if weights == "best" and callback is not None else ""
    # rank 0 decides for every rank (a collective: every rank calls this)
    best = trainer.strategy.broadcast(best if best and Path(best).is_file() else "")
    if weights == "best" and not best:
        rank_zero_warn("weights=best, but no best checkpoint was saved (no monitored ModelCheckpoint, or no "
                       "validation ran): using the final weights")
        return None
    return best or None


def step_of(checkpoint: str | None, trainer: Trainer) -> int:
    """The training step the evaluated weights come from (a checkpoint is memory-mapped, not read whole)."""
    if checkpoint is None:
        return trainer.global_step
    return int(torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False).get("global_step", -1))


def _prepared() -> None:
    """`fit` prepared (loaded, checked, tokenized) every split already."""


@contextmanager
def after_fit(trainer: Trainer, pl_module: LightningModule, checkpoint: str | None) -> Iterator[None]:
    """Around a `validate`, `test` or `predict` call on the Trainer at the end of `fit` (from `on_fit_end`): whole
    splits (no `limit_*_batches`), no logger (the caller logs what it reports), no second `prepare_data`; afterwards
    the module holds the weights it ended training with again (except under FSDP, where it keeps `checkpoint`'s)
    and the trainer its fit state and metrics."""
    limits = {name: getattr(trainer, name) for name in LIMITS}
    loggers, state = trainer.loggers, (trainer.state.fn, trainer.state.stage, trainer.state.status)
    # what fit logged last (`val/score`, ...): each evaluation loop starts by clearing them
    metrics = (dict(trainer.callback_metrics), dict(trainer.logged_metrics), dict(trainer.progress_bar_metrics))
    datamodule = trainer.datamodule
    final = None
    if checkpoint is not None:
        if isinstance(trainer.strategy, FSDPStrategy):
            rank_zero_warn("under FSDP the module keeps the evaluated checkpoint's weights after the end of fit")
        else:
            final = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
    try:
        for name in LIMITS:
            setattr(trainer, name, 1.0)
        trainer.loggers = []
        if datamodule is not None:
            datamodule.prepare_data = _prepared
        yield
    finally:
        for name, value in limits.items():
            setattr(trainer, name, value)
        trainer.loggers = loggers
        trainer.state.fn, trainer.state.stage, trainer.state.status = state
        connector = trainer._logger_connector  # no public setter
        connector._callback_metrics, connector._logged_metrics, connector._progress_bar_metrics = metrics
        if datamodule is not None:
            del datamodule.prepare_data
        if final is not None:
            pl_module.load_state_dict(final)


def by_task(results: list[dict[str, float]], stage: str) -> dict[str, Any]:
    """`trainer.validate` / `test` results (`val/<task>/<metric>`, `val/score`) -> {score, task: {metric: value}}."""
    out: dict[str, Any] = {}
    for key, value in {k: v for part in results for k, v in part.items()}.items():
        prefix, *name = key.split("/")
        if prefix != stage:
            continue
        if len(name) == 1:
            out[name[0]] = float(value)
        else:
            out.setdefault(name[0], {})["/".join(name[1:])] = float(value)
    return out


def flat(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """{score, task: {metric: v}} -> {`<prefix>/score`: v, `<prefix>/<task>/<metric>`: v}."""
    return {f"{prefix}/{task}" + (f"/{name}" if name else ""): value
            for task, values in metrics.items()
            for name, value in (values.items() if isinstance(values, dict) else [("", values)])}


class FinalEvaluation(Callback):
    """At the end of `fit`, evaluate the best or the final weights on every validation split and every test split
    (tasks whose catalogue entry has one); `final/<task>/<metric>`, `final_test/<task>/<metric>`, and
    `final_metrics.json` in the run folder. The module is left with the weights it ended training with."""

    def __init__(self, weights: str | None = None) -> None:
        """
        Args:
            weights: `best` (the best checkpoint by the ModelCheckpoint monitor, `val/score`) or `last` (the final
                weights): evaluate them at the end of `fit` on whole validation and test splits, log
                `final/<task>/<metric>` and write `final_metrics.json` into the run folder. null: no final evaluation.
        """
        if weights is not None and weights not in WEIGHTS:
            raise ValueError(f"evaluate.weights is '{weights}'; expected one of {list(WEIGHTS)} or null")
        self.weights = weights

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.weights is None:
            return
        folder = Path(trainer.log_dir or trainer.default_root_dir)  # a collective under DDP: every rank calls it
        checkpoint = checkpoint_of(trainer, self.weights)
        datamodule = trainer.datamodule
        report = {"weights": self.weights, "checkpoint": checkpoint, "step": step_of(checkpoint, trainer)}
        with after_fit(trainer, pl_module, checkpoint):
            report["validation"] = by_task(trainer.validate(pl_module, datamodule=datamodule, ckpt_path=checkpoint,
                                                            verbose=False), "val")
            if any("test" in spec.splits for spec in getattr(datamodule, "specs", [])):
                report["test"] = by_task(trainer.test(pl_module, datamodule=datamodule, verbose=False), "test")
        metrics = flat(report["validation"], "final") | flat(report.get("test", {}), "final_test")
        for logger in trainer.loggers:  # the loggers write on rank 0
            logger.log_metrics(metrics, step=trainer.global_step)
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / METRICS_FILE).write_text(json.dumps(report, indent=2) + "\n")
        shown = "  ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in metrics.items() if not k.endswith("/loss"))
        rank_zero_info(f"final evaluation of the {self.weights} weights (step {report['step']}): {shown}\n"
                       f"written to {folder / METRICS_FILE}")
