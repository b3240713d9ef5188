"""A Trainer that checks `ckpt_path` before running. Lightning reads the checkpoint only after it has created the
run's log folder, so a mistyped, damaged or mismatched checkpoint would leave an empty run behind and end in a
traceback; here it is a CheckpointError naming the file, before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer

from core.errors import CheckpointError
from lightning_modules.checkpoint_files import load_checkpoint, task_names

CHECKPOINT_KEYWORDS = ("last", "best", "hpc", "registry")


def check_checkpoint(ckpt_path: str | Path | None, model: Any = None) -> None:
    """A local `ckpt_path` must be a readable Lightning checkpoint of a model with the same tasks."""
    if ckpt_path is None or str(ckpt_path).split(":")[0] in CHECKPOINT_KEYWORDS or "://" in str(ckpt_path):
        return
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(str(ckpt_path), "is a folder" if path.is_dir() else "no such file", "--ckpt_path")
    checkpoint = load_checkpoint(path, option="--ckpt_path")
    stored, ours = task_names(checkpoint), [s.name for s in getattr(model, "specs", [])]
    if stored is not None and ours and stored != ours:
        raise CheckpointError(str(ckpt_path), f"was trained on tasks {stored}, this run selects {ours} (data.tasks): "
                                              f"resume with the same tasks, or start from its weights with "
                                              f"model.init_from", "--ckpt_path")


class CheckedTrainer(Trainer):
    def fit(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        check_checkpoint(kwargs.get("ckpt_path"), model)
        return super().fit(model, *args, **kwargs)

    def validate(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        check_checkpoint(kwargs.get("ckpt_path"), model)
        return super().validate(model, *args, **kwargs)

    def test(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        check_checkpoint(kwargs.get("ckpt_path"), model)
        return super().test(model, *args, **kwargs)

    def predict(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        check_checkpoint(kwargs.get("ckpt_path"), model)
        return super().predict(model, *args, **kwargs)
