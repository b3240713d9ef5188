"""A Trainer that checks `ckpt_path` before running. Lightning reads the checkpoint only after it has created the
run's log folder (LightningCLI even reads it while parsing, to take the model's hyperparameters from it), so a
mistyped, damaged or mismatched checkpoint would leave an empty run behind and end in a traceback; here it is a
CheckpointError naming the file, before anything is written: `--ckpt_path`'s type checks that the file is a readable
checkpoint when the command line is parsed, `fit`/`validate`/`test`/`predict` that it was trained on the run's tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonargparse.typing import register_type
from lightning.pytorch import Trainer

from core.errors import CheckpointError
from lightning_modules.checkpoint_files import load_checkpoint, task_names

CHECKPOINT_KEYWORDS = ("last", "best", "hpc", "registry")


def _local(ckpt_path: str | Path | None) -> Path | None:
    """The local file `ckpt_path` names; None for no path, a Lightning keyword or a URL."""
    if ckpt_path is None or str(ckpt_path).split(":")[0] in CHECKPOINT_KEYWORDS or "://" in str(ckpt_path):
        return None
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(str(ckpt_path), "is a folder" if path.is_dir() else "no such file", "--ckpt_path")
    return path


class CheckpointPath(str):
    """`--ckpt_path`: a Lightning keyword (last, best, hpc, registry), a URL, or a readable local checkpoint."""

    def __new__(cls, value: str | Path) -> CheckpointPath:
        path = _local(value)
        if path is not None:
            load_checkpoint(path, option="--ckpt_path")  # memory-mapped: a truncated file fails here, not in Lightning
        return super().__new__(cls, str(value))


register_type(CheckpointPath, serializer=str, deserializer_exceptions=(CheckpointError,))


def check_checkpoint(ckpt_path: str | Path | None, model: Any = None) -> None:
    """A local `ckpt_path` must be a readable Lightning checkpoint of a model with the same tasks."""
    path = _local(ckpt_path)
    if path is None:
        return
    checkpoint = load_checkpoint(path, option="--ckpt_path")
    stored, ours = task_names(checkpoint), [s.name for s in getattr(model, "specs", [])]
    if stored is not None and ours and stored != ours:
        raise CheckpointError(str(ckpt_path), f"was trained on tasks {stored}, this run selects {ours} (data.tasks): "
                                              f"resume with the same tasks, or start from its weights with "
                                              f"model.init_from", "--ckpt_path")


class CheckedTrainer(Trainer):
    def fit(self, model: Any = None, *args: Any, ckpt_path: CheckpointPath | None = None, **kwargs: Any) -> Any:
        """Pre-finetune: train on the selected tasks, or resume a run from ckpt_path.

        Args:
            ckpt_path: checkpoint to resume from (a file, a URL, or last/best/hpc/registry).
        """
        check_checkpoint(ckpt_path, model)
        return super().fit(model, *args, ckpt_path=ckpt_path, **kwargs)

    def validate(self, model: Any = None, *args: Any, ckpt_path: CheckpointPath | None = None, **kwargs: Any) -> Any:
        """Evaluate the validation splits.

        Args:
            ckpt_path: checkpoint to evaluate (a file, a URL, or last/best/hpc/registry).
        """
        check_checkpoint(ckpt_path, model)
        return super().validate(model, *args, ckpt_path=ckpt_path, **kwargs)

    def test(self, model: Any = None, *args: Any, ckpt_path: CheckpointPath | None = None, **kwargs: Any) -> Any:
        """Evaluate the test splits.

        Args:
            ckpt_path: checkpoint to test (a file, a URL, or last/best/hpc/registry).
        """
        check_checkpoint(ckpt_path, model)
        return super().test(model, *args, ckpt_path=ckpt_path, **kwargs)

    def predict(self, model: Any = None, *args: Any, ckpt_path: CheckpointPath | None = None, **kwargs: Any) -> Any:
        """Write predictions for the test splits (validation where a task has none).

        Args:
            ckpt_path: checkpoint to predict with (a file, a URL, or last/best/hpc/registry).
        """
        check_checkpoint(ckpt_path, model)
        return super().predict(model, *args, ckpt_path=ckpt_path, **kwargs)
