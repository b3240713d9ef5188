"""Checkpoints that survive a kill during the write: `<name>.partial` beside the target, fsync, then an atomic
rename over it. (Lightning's own transactional save writes to the system temp folder and moves the file, which is
a copy, not a rename, when the checkpoint folder is on another filesystem, as on most clusters.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().save_checkpoint(checkpoint, path, storage_options)  # object stores: their own semantics
        target = Path(str(path).removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with open(partial, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def remove_checkpoint(self, path: str | Path) -> None:
        fs = get_filesystem(path)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def last_checkpoint(trainer) -> Path:
    """The newest `last.ckpt` under the logger's run folders (e.g. logs/muppet/version_*/checkpoints/)."""
    root = Path(getattr(trainer.logger, "root_dir", None) or trainer.default_root_dir)
    found = sorted(root.glob("*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"--ckpt_path=last: no last.ckpt under {root}/*/checkpoints/")
    return found[-1]


class LatestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose `last.ckpt` is rewritten at every validation, improved or not (Lightning 2.6 rewrites
    it only when a top-k checkpoint is saved at that step, so after hours without a better score a resume would go
    back to the last improvement)."""

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if (self.save_last and not self._should_skip_saving_checkpoint(trainer)
                and not self._should_save_on_train_epoch_end(trainer)
                and self._last_global_step_saved != trainer.global_step):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
