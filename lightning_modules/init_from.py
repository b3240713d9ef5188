"""Starting a run from a pre-finetuned model (`model.init_from`): the backbone's weights from a `.ckpt` (an export
folder is loaded as the backbone itself), and with `model.reuse_heads` the heads of tasks present in both runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from core.errors import CheckpointError
from datamodules.catalogue import spec_from_dict
from heads.registry import head_key
from lightning_modules.checkpoint_files import load_checkpoint
from lightning_modules.export import read_export_heads


def checkpoint_heads(checkpoint: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(head state dict, task name -> head key) of a Lightning checkpoint of MuppetModule."""
    heads = {k[len("heads."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("heads.")}
    hparams = checkpoint.get("hyper_parameters", {})
    shared, sharing = hparams.get("shared_heads"), hparams.get("head_sharing", "per_task")
    keys = {t["name"]: head_key(spec_from_dict(t), shared, sharing) for t in hparams.get("task_specs", [])}
    return heads, keys


def load_initial_weights(module: Any, source: str, reuse_heads: bool) -> None:
    """Backbone weights from a `.ckpt`; with `reuse_heads`, the heads of tasks present in both runs whose shapes
    match, and for a task new to the earlier run the shared head of its family or label set where that run had one
    (`family_*`, `labels_*` keys). Under `model.head_sharing=projection` each reused task head brings the shared
    projection's weights with it (the same in every head of the earlier run)."""
    path = Path(source)
    if not path.exists():
        raise CheckpointError(source, "does not exist", "model.init_from")
    checkpoint = load_checkpoint(path) if path.is_file() else None
    if checkpoint is not None:
        state = checkpoint["state_dict"]
        backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        missing, unexpected = module.backbone.load_state_dict(backbone, strict=False)
        if missing or unexpected:
            raise CheckpointError(source, f"its backbone does not match the run's ({len(missing)} missing, "
                                          f"{len(unexpected)} unexpected tensors, e.g. "
                                          f"{(missing or unexpected)[0]})", "model.init_from")
    if not reuse_heads:
        return
    old_heads, old_keys = checkpoint_heads(checkpoint) if checkpoint is not None else read_export_heads(path)
    reused = []
    shared = {key for key in old_keys.values() if not key.startswith("task_")}
    for spec, key in zip(module.specs, module.head_keys):
        old_key = old_keys.get(spec.name, key if key in shared else None)
        if old_key is None:
            continue
        prefix = old_key + "."
        weights = {k[len(prefix):]: v for k, v in old_heads.items() if k.startswith(prefix)}
        target = module.heads[key].state_dict()
        if set(weights) == set(target) and all(weights[k].shape == v.shape for k, v in target.items()):
            module.heads[key].load_state_dict(weights)
            reused.append(spec.name)
    rank_zero_info(f"reused pre-finetuned heads for {len(reused)} task(s): {reused}")
