"""Checkpoints that survive a kill during the write, and the run's `last.ckpt`. Writes go to `<name>.partial`
beside the target, fsync, then an atomic rename over it. (Lightning's own transactional save writes to the system
temp folder and moves the file, which is a copy, not a rename, when the checkpoint folder is on another filesystem,
as on most clusters.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from core.errors import CheckpointError


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
        raise CheckpointError("last", f"no last.ckpt under {root}/*/checkpoints/", "--ckpt_path")
    return found[-1]


class LatestCheckpoint(ModelCheckpoint):
    """`last.ckpt`, rewritten at every validation, improved or not (Lightning 2.6's `save_last` rewrites it only when
    a top-k checkpoint is saved at that step, so after hours without a better score a resume would go back to the
    last improvement). A plain ModelCheckpoint with no monitor keeping one file named `last`: Lightning's public
    options only (train.py adds it beside the monitored `checkpoint` callback, in the same folder)."""

    def __init__(self, dirpath: str | None = None, filename: str = "last", save_top_k: int = 1, **kwargs) -> None:
        """
        Args:
            dirpath: folder of `last.ckpt`; default the run's `checkpoints/` folder (as the `checkpoint` callback).
            filename: file name without `.ckpt`.
            save_top_k: files kept (1: the latest only).
        """
        kwargs.setdefault("enable_version_counter", False)  # the same file every time, not last-v1.ckpt
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=save_top_k, save_last=False,
                         **kwargs)
