"""A MuppetModule rebuilt from a checkpoint alone: its backbone from the stored config (randomly initialised, then
loaded) and its tokenizer from the stored files, so no hub, backbone folder or `init_from` of the run is needed."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lightning_modules.checkpoint_files import CONFIG_KEY, TOKENIZER_KEY, load_checkpoint
from lightning_modules.muppet import MuppetModule


def module_from_checkpoint(path: str | Path) -> MuppetModule:
    """A checkpoint without a stored config (written before configs were stored) loads through its
    hyperparameters, which may need the hub or the backbone's folder."""
    parts = load_checkpoint(path, option="--checkpoint")  # memory-mapped: tensors are not read here
    if CONFIG_KEY not in parts:
        return MuppetModule.load_from_checkpoint(path, map_location="cpu")
    with tempfile.TemporaryDirectory() as tokenizer:
        for name, data in parts[TOKENIZER_KEY].items():
            (Path(tokenizer) / name).write_bytes(data)
        return MuppetModule.load_from_checkpoint(path, map_location="cpu", backbone=None, tokenizer=tokenizer,
                                                 backbone_config=parts[CONFIG_KEY], init_from=None)
