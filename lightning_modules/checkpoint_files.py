"""Reading checkpoints: a `.ckpt` memory-mapped with a named error when it is not one (missing, truncated, another
kind of file), and what a checkpoint stores to be rebuilt offline (the backbone's config and the tokenizer's files)."""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError

CONFIG_KEY, TOKENIZER_KEY = "muppet_backbone_config", "muppet_tokenizer_files"
READ_ERRORS = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile,
               AttributeError, ModuleNotFoundError)


def rebuild_parts(backbone_config: Any, tokenizer: Any) -> dict[str, Any]:
    """What a checkpoint stores to be rebuilt offline: the backbone's config (`to_dict`) and the tokenizer's files
    (name -> bytes: `tokenizer.json` and its config, 0.7 MB for MiniLM's)."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        files = {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir()) if path.is_file()}
    return {CONFIG_KEY: backbone_config.to_dict(), TOKENIZER_KEY: files}


def load_checkpoint(path: str | Path, option: str = "model.init_from") -> dict[str, Any]:
    """A Lightning checkpoint, memory-mapped (tensors are read when used); one that is missing, damaged or not a
    checkpoint is a CheckpointError naming the option and the file."""
    if not Path(path).is_file():
        raise CheckpointError(str(path), "no such file" if not Path(path).exists() else "is a folder", option)
    try:
        parts = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except READ_ERRORS as error:
        first = str(error).strip().splitlines()[0].split(". ")[0].rstrip(".") if str(error).strip() else ""
        kind = "a Lightning checkpoint nor an export folder" if option == "model.init_from" \
            else "a readable Lightning checkpoint"
        raise CheckpointError(str(path), f"is not {kind} (damaged or truncated?) ({type(error).__name__}: {first})",
                              option) from error
    if not isinstance(parts, dict) or "state_dict" not in parts:
        raise CheckpointError(str(path), "is not a Lightning checkpoint (no 'state_dict' in it)", option)
    return parts


def checkpoint_parts(path: str | Path) -> tuple[dict[str, Any], str] | None:
    """(backbone config, tokenizer folder) stored in a checkpoint, or None for one written before they were stored.
    The tokenizer's files are written once per checkpoint version to a folder under the temp directory (named by the
    checkpoint's path, size and mtime), so every process of a run, and the data module, reads the same files; within
    a process each version is read once (the CLI's tokenizer link and the module both ask)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _stored_parts(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _stored_parts(path: Path, size: int, mtime_ns: int) -> tuple[dict[str, Any], str] | None:
    parts = load_checkpoint(path)
    if CONFIG_KEY not in parts:
        return None
    key = hashlib.sha1(f"{path}:{size}:{mtime_ns}".encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "muppet-tokenizers" / key
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{key}.partial-"))
        for name, data in parts[TOKENIZER_KEY].items():
            (partial / name).write_bytes(data)
        try:
            os.replace(partial, folder)  # another process may have won the race: its files are the same
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
    return parts[CONFIG_KEY], str(folder)


def task_names(checkpoint: dict[str, Any]) -> list[str] | None:
    """The task names a checkpoint's model was trained on (None when it does not say)."""
    specs = checkpoint.get("hyper_parameters", {}).get("task_specs")
    return [t["name"] for t in specs] if specs else None
