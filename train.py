"""MUPPET pre-finetuning: `python train.py fit --config configs/quickstart.yaml` (see README.md)."""

from __future__ import annotations

import sys

from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from cli_errors import exit_on_user_error, wants_traceback
from datamodules.multitask import MultiTaskDataModule
from lightning_modules.after_fit import EndOfFit, ExportPretrained, FinalEvaluation
from lightning_modules.backbone import tokenizer_source
from lightning_modules.checked_trainer import CheckedTrainer
from lightning_modules.checkpoint_io import AtomicCheckpointIO, LatestCheckpoint, last_checkpoint
from lightning_modules.muppet import MuppetModule
from lightning_modules.predictions import WritePredictions


def sampler_seed(seed: int | bool | None) -> int:
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


class MuppetCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments(("model.backbone", "model.tokenizer", "model.init_from"), "data.tokenizer",
                              compute_fn=tokenizer_source)
        parser.link_arguments("seed_everything", "data.seed", compute_fn=sampler_seed)
        parser.link_arguments("data.task_specs", "model.task_specs", apply_on="instantiate")
        # callbacks that are always on, each with its own config section
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/score", "checkpoint.mode": "max",
                             "checkpoint.filename": "step{step}-score{val/score:.4f}",
                             "checkpoint.auto_insert_metric_name": False})
        parser.add_lightning_class_args(LatestCheckpoint, "latest")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        parser.add_lightning_class_args(WritePredictions, "predictions")
        # the end of fit (lightning_modules/after_fit.py), in this order: export, final evaluation, predictions
        parser.add_class_arguments(ExportPretrained, "export")
        parser.add_class_arguments(FinalEvaluation, "evaluate")

    def before_fit(self) -> None:
        """`--ckpt_path=last`: the newest `last.ckpt` of this logger's earlier runs (the new run logs into a new
        version folder, where Lightning's own lookup would find nothing); `data.max_length` capped at what the
        backbone's position table reads."""
        self._resolve_last("fit")
        self.datamodule.limit_max_length(self.model.backbone.max_input_length)

    def after_fit(self) -> None:
        config = self._config()
        predictions = next((c for c in self.trainer.callbacks if isinstance(c, WritePredictions)), None)
        EndOfFit(self.trainer, self.model, self.datamodule).run(config.get("export"), config.get("evaluate"),
                                                                predictions)

    def before_validate(self) -> None:
        self._resolve_last("validate")

    def before_test(self) -> None:
        self._resolve_last("test")

    def before_predict(self) -> None:
        self._resolve_last("predict")

    def _config(self) -> dict:
        """The instantiated config of the running subcommand (the whole config when built with `run=False`)."""
        return self.config_init[self.subcommand] if self.subcommand else self.config_init

    def _resolve_last(self, subcommand: str) -> None:
        config = self._config()
        if config.get("ckpt_path") == "last":
            config["ckpt_path"] = str(last_checkpoint(self.trainer))


TRAINER_DEFAULTS = {
    "use_distributed_sampler": False,  # the data module shards batches across ranks itself
    "reload_dataloaders_every_n_epochs": 1,  # each epoch's plan (and batch count) is drawn anew
    "logger": lazy_instance(TensorBoardLogger, save_dir="logs", name="muppet"),
    "plugins": lazy_instance(AtomicCheckpointIO),  # a kill during a checkpoint write keeps the previous one
}


def main(args: list[str] | None = None) -> MuppetCLI:
    """A mistake in the input ends in `error: <message>` on stderr and exit code 2 before anything is written
    (cli_errors.py); `--traceback` shows the traceback instead."""
    args = None if args is None else list(args)
    with exit_on_user_error(wants_traceback(sys.argv if args is None else args), args):
        return MuppetCLI(MuppetModule, MultiTaskDataModule, trainer_class=CheckedTrainer,
                         parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False},
                         trainer_defaults=TRAINER_DEFAULTS, seed_everything_default=0, args=args)


if __name__ == "__main__":
    main()
