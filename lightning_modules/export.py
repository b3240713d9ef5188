"""Export a pre-finetuned model as a Hugging Face folder, and read one back.

Folder layout: the backbone's `save_pretrained` files (`AutoModel.from_pretrained(folder)` loads them; BART is
saved with its LM head as `BartForConditionalGeneration`), the tokenizer, `muppet_heads.pt` (head weights by head
key) and `muppet_tasks.json` (the task specs the heads were trained on, with each task's head key). Exporting a
`.ckpt` from the command line: `python -m lightning_modules.export_cli --checkpoint X.ckpt --output folder/`.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule

from core.errors import CheckpointError
from lightning_modules.checkpoint_files import load_checkpoint

HEADS_FILE, TASKS_FILE, MODEL_FILE = "muppet_heads.pt", "muppet_tasks.json", "muppet_model.json"


def _part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v.detach().cpu() for k, v in state.items() if k.startswith(prefix)}


LENGTHS = ("max_length", "max_target_length", "doc_stride")  # the data module's, recorded for inference


def save_export(module: Any, folder: Path, state: dict[str, torch.Tensor] | None = None,
                lengths: dict[str, int] | None = None) -> Path:
    """Write `module` (a MuppetModule) as an export folder. `state`: a full MuppetModule state dict to export
    instead of the module's own weights (a checkpoint's). `lengths`: the data module's `max_length`,
    `max_target_length` and `doc_stride` the model was trained with (inference uses them unless told otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    if state is None:
        module.backbone.model.save_pretrained(folder)
        heads = _part(module.heads.state_dict(), "")
    else:
        module.backbone.model.save_pretrained(folder, state_dict=_part(state, "backbone.model."))
        heads = _part(state, "heads.")
    module.tokenizer.save_pretrained(folder)
    torch.save(heads, folder / HEADS_FILE)
    tasks = [{**spec.to_dict(), "head": key} for spec, key in zip(module.specs, module.head_keys)]
    (folder / TASKS_FILE).write_text(json.dumps(tasks, indent=2, default=str))
    # how the heads were built (rebuilding them needs it: lightning_modules/inference.py)
    hparams = getattr(module, "hparams", {})
    built: dict[str, Any] = {k: hparams.get(k) for k in ("head_sharing", "shared_heads", "head_dense")}
    if lengths:
        built["lengths"] = {k: int(lengths[k]) for k in LENGTHS if lengths.get(k) is not None}
    (folder / MODEL_FILE).write_text(json.dumps(built))
    return folder


def lengths_of_checkpoint(checkpoint: dict[str, Any]) -> dict[str, int]:
    """The data module's lengths a Lightning checkpoint stores with its hyperparameters (empty if it has none)."""
    data = checkpoint.get(LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY) or {}
    return {k: int(data[k]) for k in LENGTHS if data.get(k) is not None}


def recorded_lengths(path: Path, option: str = "--model") -> dict[str, int]:
    """The lengths an export folder (its muppet_model.json) or a `.ckpt` recorded; empty where none were."""
    if path.is_dir():
        built = json.loads((path / MODEL_FILE).read_text()) if (path / MODEL_FILE).is_file() else {}
        return {k: int(v) for k, v in (built.get("lengths") or {}).items() if k in LENGTHS}
    return lengths_of_checkpoint(load_checkpoint(path, option))


def read_export_heads(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(head state dict, task name -> head key) of an export folder; a folder missing either file is named."""
    for name in (HEADS_FILE, TASKS_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(str(folder), f"has no {name}: not an export of this project (model.reuse_heads "
                                               f"needs the heads an export writes beside the backbone)",
                                  "model.init_from")
    try:
        heads = torch.load(folder / HEADS_FILE, map_location="cpu")
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        first = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(str(folder), f"its {HEADS_FILE} cannot be read (damaged or truncated?) ({first})",
                              "model.init_from") from error
    try:
        keys = {t["name"]: t["head"] for t in json.loads((folder / TASKS_FILE).read_text())}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(str(folder), f"its {TASKS_FILE} is not a list of tasks with 'name' and 'head' "
                                           f"({type(error).__name__}: {error})", "model.init_from") from error
    return heads, keys
