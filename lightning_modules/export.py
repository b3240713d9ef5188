"""Export a pre-finetuned model as a Hugging Face folder, and start a later run from one (or from a checkpoint).

Folder layout: the backbone's `save_pretrained` files (`AutoModel.from_pretrained(folder)` loads them; BART is
saved with its LM head as `BartForConditionalGeneration`), the tokenizer, `muppet_heads.pt` (head weights by head
key) and `muppet_tasks.json` (the task specs the heads were trained on).

    python -m lightning_modules.export --checkpoint path/to/last.ckpt --output exported/

A checkpoint holds what rebuilding the model needs (`rebuild_parts`: the backbone's config and the tokenizer's
files), so exporting one needs neither the hub nor the backbone's folder nor the run's `init_from`.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

HEADS_FILE, TASKS_FILE = "muppet_heads.pt", "muppet_tasks.json"
CONFIG_KEY, TOKENIZER_KEY = "muppet_backbone_config", "muppet_tokenizer_files"


def rebuild_parts(module: LightningModule) -> dict[str, Any]:
    """What a checkpoint stores to be rebuilt offline: the backbone's config (`to_dict`) and the tokenizer's files
    (name -> bytes: `tokenizer.json` and its config, 0.7 MB for MiniLM's)."""
    with tempfile.TemporaryDirectory() as folder:
        module.tokenizer.save_pretrained(folder)
        files = {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir()) if path.is_file()}
    return {CONFIG_KEY: module.backbone.config.to_dict(), TOKENIZER_KEY: files}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """`model.init_from`'s checkpoint, memory-mapped (tensors are read when used); a file that is not one is named."""
    try:
        parts = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"model.init_from '{path}' is not a Lightning checkpoint nor an export folder "
                         f"({type(error).__name__}: {first})") from error
    if not isinstance(parts, dict) or "state_dict" not in parts:
        raise ValueError(f"model.init_from '{path}' is not a Lightning checkpoint (no 'state_dict' in it)")
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


def module_from_checkpoint(path: str | Path) -> LightningModule:
    """MuppetModule with a checkpoint's weights, its backbone rebuilt from the stored config (randomly initialised,
    then loaded) and its tokenizer from the stored files; a checkpoint without them (written before they were
    stored) loads through its hyperparameters, which may need the hub or the backbone's folder."""
    from lightning_modules.muppet import MuppetModule
    parts = torch.load(path, map_location="cpu", mmap=True, weights_only=False)  # tensors are not read here
    if CONFIG_KEY not in parts:
        return MuppetModule.load_from_checkpoint(path, map_location="cpu")
    with tempfile.TemporaryDirectory() as tokenizer:
        for name, data in parts[TOKENIZER_KEY].items():
            (Path(tokenizer) / name).write_bytes(data)
        return MuppetModule.load_from_checkpoint(path, map_location="cpu", backbone=None, tokenizer=tokenizer,
                                                 backbone_config=parts[CONFIG_KEY], init_from=None)


def _part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v.detach().cpu() for k, v in state.items() if k.startswith(prefix)}


def save_export(module: LightningModule, folder: Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """`state`: a full MuppetModule state dict to export instead of the module's own weights (a checkpoint's, or
    one gathered from FSDP shards)."""
    folder.mkdir(parents=True, exist_ok=True)
    if state is None:
        module.backbone.model.save_pretrained(folder)
        heads = _part(module.heads.state_dict(), "")
    else:
        module.backbone.model.save_pretrained(folder, state_dict=_part(state, "backbone.model."))
        heads = _part(state, "heads.")
    module.tokenizer.save_pretrained(folder)
    torch.save(heads, folder / HEADS_FILE)
    tasks = [{"name": s.name, "family": s.family, "head": key, "num_labels": s.num_labels}
             for s, key in zip(module.specs, module.head_keys)]
    (folder / TASKS_FILE).write_text(json.dumps(tasks, indent=2))
    return folder


def _heads_of(source: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(head state dict, task name -> head key) of an export folder or a Lightning checkpoint."""
    if source.is_dir():
        heads = torch.load(source / HEADS_FILE, map_location="cpu")
        tasks = json.loads((source / TASKS_FILE).read_text())
        return heads, {t["name"]: t["head"] for t in tasks}
    checkpoint = load_checkpoint(source)
    heads = {k[len("heads."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("heads.")}
    hparams = checkpoint.get("hyper_parameters", {})
    from lightning_modules.heads_factory import head_key
    from datamodules.catalogue import TaskSpec
    keys = {t["name"]: head_key(TaskSpec(**t), hparams.get("shared_multiple_choice_head", True),
                                hparams.get("shared_span_head", True)) for t in hparams.get("task_specs", [])}
    return heads, keys


def load_initial_weights(module: LightningModule, source: str, reuse_heads: bool) -> None:
    """Backbone weights from a `.ckpt` (an export folder is loaded as the backbone itself); with `reuse_heads`, the
    heads of tasks present in both runs whose shapes match, and for a task new to the earlier run its family's
    shared head (multiple choice, span: scorers that name no task) where that run had one."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"model.init_from '{source}' does not exist")
    if path.is_file():
        state = load_checkpoint(path)["state_dict"]
        backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        module.backbone.load_state_dict(backbone)
    if not reuse_heads:
        return
    old_heads, old_keys = _heads_of(path)
    reused = []
    shared = {key for key in old_keys.values() if key.startswith("family_")}
    for spec, key in zip(module.specs, module.head_keys):
        old_key = old_keys.get(spec.name, key if key in shared else None)
        if old_key is None:
            continue
        prefix = old_key + "."
        weights = {k[len(prefix):]: v for k, v in old_heads.items() if k.startswith(prefix)}
        target = module.heads[key].state_dict()
        if weights and all(k in weights and weights[k].shape == v.shape for k, v in target.items()):
            module.heads[key].load_state_dict(weights)
            reused.append(spec.name)
    rank_zero_info(f"reused pre-finetuned heads for {len(reused)} task(s): {reused}")


class ExportPretrained(Callback):
    """At the end of `fit`, export the model (the best checkpoint's weights when one is monitored) as a Hugging
    Face folder: `<log_dir>/export` unless `dirpath` is given. The module itself is left as training ended."""

    def __init__(self, dirpath: str | None = None, use_best: bool = True) -> None:
        """
        Args:
            dirpath: output folder; default `export/` inside the run's log folder.
            use_best: export the best checkpoint's weights (by the ModelCheckpoint monitor) instead of the last.
        """
        self.dirpath, self.use_best = dirpath, use_best

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        log_dir = trainer.log_dir  # collective calls under DDP/FSDP: every rank takes part
        if self.use_best and best and Path(best).is_file():
            state, source = None, best
        else:  # the final weights; under FSDP gathered from the shards into rank 0
            state, source = trainer.strategy.lightning_module_state_dict(), "the final weights"
        self._export(pl_module, Path(self.dirpath or Path(log_dir or trainer.default_root_dir) / "export"), state,
                     source)

    @rank_zero_only
    def _export(self, pl_module: LightningModule, folder: Path, state: dict | None, source: str) -> None:
        if state is None:
            state = torch.load(source, map_location="cpu", weights_only=False)["state_dict"]
        save_export(pl_module, folder, state)
        rank_zero_info(f"exported the pre-finetuned model ({source}) to {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a Lightning checkpoint of MuppetModule")
    parser.add_argument("--output", required=True, help="folder to write")
    args = parser.parse_args()
    print(f"exported to {save_export(module_from_checkpoint(args.checkpoint), Path(args.output))}")


if __name__ == "__main__":
    main()
