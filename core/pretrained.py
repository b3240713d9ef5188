"""Loading what `from_pretrained` loads (tokenizers here; backbones in lightning_modules/backbone.py) with errors
that say which folder or hub id, which option it came from, and why it failed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from core.errors import BackboneError

TOKENIZER_OPTION = "model.tokenizer, else model.init_from, else model.backbone"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, EnvironmentError)


def load_pretrained(load: Callable[[], Any], what: str, name: str, option: str) -> Any:
    """`load()` (a `from_pretrained` call of `name`); a failure becomes a BackboneError naming it and why."""
    try:
        return load()
    except LOAD_ERRORS as error:
        raise BackboneError(what, str(name), option, problem(what, str(name), error)) from error


def load_tokenizer(name: str, option: str = TOKENIZER_OPTION) -> PreTrainedTokenizerBase:
    return load_pretrained(lambda: AutoTokenizer.from_pretrained(name), "tokenizer", name, option)


def problem(what: str, name: str, error: BaseException) -> str:
    """Why `name` could not be loaded, from what is (not) at that path."""
    path = Path(name).expanduser()
    local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if path.is_file():
        return "is a file; expected a folder written by save_pretrained, or a Hugging Face Hub id"
    if path.is_dir() and what == "tokenizer" and not any((path / f).exists() for f in TOKENIZER_FILES):
        return f"the folder has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...)"
    if path.is_dir() and what == "backbone" and not (path / "config.json").exists():
        return "the folder has no config.json (a folder written by save_pretrained has one)"
    if path.is_dir() and what == "backbone" and not any((path / f).exists() for f in WEIGHT_FILES):
        return f"the folder has no weights ({' or '.join(WEIGHT_FILES[::2])})"
    if path.is_dir():
        return f"could not be loaded: {first_line(error)}"
    if local:
        return "no such folder"
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return "no such folder, and not in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
    return f"could not be loaded from the Hugging Face Hub: {first_line(error)}"


def first_line(error: BaseException) -> str:
    return next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
