"""Mistakes in the user's input end in one line, `error: <message>` on stderr, exit code 2, before anything is
written; real bugs keep their traceback (`--traceback` or MUPPET_TRACEBACK=1 shows it for user errors too).

User errors: options and config files (jsonargparse), YAML syntax (file and line), the task catalogue
(CatalogueError), data (DataValidationError: task, split, field, row, file and line), the checks the project's own
code makes of its inputs before training (a `raise` of ValueError/TypeError/OSError in this repository), models and
tokenizers that cannot be loaded (`from_pretrained` of a folder or hub id: which, and why), `ckpt_path`, and files
that cannot be written (permissions, a file where a folder should be, a full disk)."""

from __future__ import annotations

import argparse
import errno
import linecache
import os
import re
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from lightning.pytorch import Trainer

from datamodules.catalogue import CatalogueError
from datamodules.validation import DataValidationError
from lightning_modules.update import NonFiniteLossError

ROOT = Path(__file__).resolve().parent
CATALOGUE_CODE = ROOT / "datamodules" / "catalogue.py"
TRACEBACK_FLAG, TRACEBACK_ENV = "--traceback", "MUPPET_TRACEBACK"
WRITE_ERRORS = (PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)
FULL = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
CHECKPOINT_KEYWORDS = ("last", "best", "hpc", "registry")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class UsageError(Exception):
    """A mistake in the user's input found by this module's own checks."""


def wants_traceback(argv: list[str]) -> bool:
    """Remove `--traceback` from argv (in place, before LightningCLI parses it); the environment variable carries
    it to DDP's child processes, which Lightning starts with the same argv."""
    if TRACEBACK_FLAG in argv:
        argv[:] = [arg for arg in argv if arg != TRACEBACK_FLAG]
        os.environ[TRACEBACK_ENV] = "1"
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


@contextmanager
def exit_on_user_error(show_traceback: bool = False) -> Iterator[None]:
    """User errors: `error: <message>` on stderr (once per node: local rank 0), exit code 2. Anything else raises,
    except on a DDP child whose rank-0 parent has already exited: that failure is the parent's, which it reported."""
    parent = os.getppid()
    try:
        yield
    except Exception as error:  # noqa: BLE001 - what is not a user error is raised again unchanged
        message = None if show_traceback else _safe(user_message, error)
        rank_zero = os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")) == "0"
        if message is None and not rank_zero and _exits(parent):
            raise SystemExit(1) from None
        if message is None:
            raise
        if rank_zero:
            print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _exits(parent: int, wait_s: float = 5.0) -> bool:
    """Whether the parent process exits within `wait_s` (a child of Lightning's DDP launcher then loses its peer)."""
    deadline = time.monotonic() + wait_s
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.1)
    return os.getppid() != parent


def user_message(error: BaseException) -> str | None:
    """One line naming the culprit when `error` comes from the user's input; None for a bug."""
    if isinstance(error, argparse.ArgumentError):
        message = _option_message(error)
    elif isinstance(error, (CatalogueError, DataValidationError, UsageError, NonFiniteLossError)):
        message = str(error)  # NonFiniteLossError: training stopped itself, naming the step and the tasks
    elif (marked := _in_chain(error, yaml.MarkedYAMLError)) is not None:
        message = _yaml_message(marked, error)
    elif (loading := _from_pretrained(error)) is not None:
        message = _pretrained_message(*loading, error)
    elif (entry := _catalogue_entry(error)) is not None:
        message = entry
    elif isinstance(error, WRITE_ERRORS) or isinstance(error, OSError) and error.errno in FULL:
        message = f"cannot write {error.filename!r}: {error.strerror}" if error.filename else str(error)
    elif isinstance(error, (ValueError, TypeError, OSError)) and _project_check(error):
        message = str(error)
    else:
        return None
    return " ".join(message.split())


# ---- options and config files --------------------------------------------------------------------------------------
def _option_message(error: argparse.ArgumentError) -> str:
    text = str(error)
    if "Problems parsing config" in text and (marked := _in_chain(error, yaml.MarkedYAMLError)) is not None:
        return _yaml_message(marked, error)
    if text.startswith("unrecognized arguments"):
        return f"{text} (`train.py fit --help` lists the options)"
    if "subcommand" in text:
        return f"{text} (`train.py --help`)"
    match = re.match(r'Parser key "([^"]+)":\s*(.*)', text, re.S)
    if not match:
        return text
    key, detail = match.groups()
    given = re.search(r"(?:Given value|Got value): (.*)", detail)
    expected = re.search(r"Subtypes: \[(.*)\]", detail) or re.search(r"Expected a (.*?)\. Got value", detail)
    if given and expected:
        return f"option --{key}: got {given.group(1).strip()!r}; expected {_type_names(expected.group(1))}"
    return f"option --{key}: {detail}"


def _type_names(text: str) -> str:
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text).replace("NoneType", "null")
    text = re.sub(r"typing\.Literal\[(.*?)\]", r"one of (\1)", text)
    return " | ".join(part.strip() for part in re.split(r",\s*(?![^()]*\))", text))


# ---- YAML ---------------------------------------------------------------------------------------------------------
def _yaml_message(marked: yaml.MarkedYAMLError, error: BaseException) -> str:
    mark = marked.problem_mark or marked.context_mark
    problem = "; ".join(str(p) for p in (marked.context, marked.problem) if p)
    if mark is None:
        return f"invalid YAML: {problem}"
    path = mark.name if not str(mark.name).startswith("<") else _yaml_file(mark, error)
    return f"{path or 'a YAML file'} line {mark.line + 1}, column {mark.column + 1}: invalid YAML ({problem})"


def _yaml_file(mark: Any, error: BaseException) -> str | None:
    """The file that fails to parse at the same place: among the YAML paths the failing code held (the catalogue
    files, a config) and those on the command line."""
    candidates: list[Any] = [arg.split("=", 1)[-1] for arg in sys.argv[1:]]
    for frame in _frames(error):
        for value in frame.f_locals.values():
            candidates += list(value) if isinstance(value, (list, tuple)) else [value]
    for candidate in dict.fromkeys(c for c in candidates if isinstance(c, (str, Path))):
        path = Path(candidate)
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        try:
            yaml.safe_load(path.read_text())
        except yaml.MarkedYAMLError as other:
            if other.problem_mark and (other.problem_mark.line, other.problem_mark.column) == (mark.line, mark.column):
                return str(path.resolve())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
    return None


# ---- models and tokenizers ----------------------------------------------------------------------------------------
def _from_pretrained(error: BaseException) -> tuple[str, str] | None:
    """(what, name) of the outermost `from_pretrained` of transformers that the error went through."""
    for frame in _frames(error):
        code = frame.f_code
        if code.co_name == "from_pretrained" and "transformers" in Path(code.co_filename).parts:
            name = frame.f_locals.get("pretrained_model_name_or_path")
            if name is not None:
                what = "tokenizer" if "Tokenizer" in getattr(code, "co_qualname", "") else "backbone"
                return what, str(name)
    return None


def _pretrained_message(what: str, name: str, error: BaseException) -> str:
    option = "model.tokenizer, else model.init_from, else model.backbone" if what == "tokenizer" else "model.backbone"
    path = Path(name).expanduser()
    local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if path.is_file():
        problem = "is a file; expected a folder written by save_pretrained, or a Hugging Face Hub id"
    elif path.is_dir() and what == "tokenizer" and not any((path / f).exists() for f in TOKENIZER_FILES):
        problem = f"the folder has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...)"
    elif path.is_dir() and what == "backbone" and not (path / "config.json").exists():
        problem = "the folder has no config.json (a folder written by save_pretrained has one)"
    elif path.is_dir() and what == "backbone" and not any((path / f).exists() for f in WEIGHT_FILES):
        problem = f"the folder has no weights ({' or '.join(WEIGHT_FILES[::2])})"
    elif path.is_dir():
        problem = f"could not be loaded: {_first_line(error)}"
    elif local:
        problem = "no such folder"
    elif os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        problem = "no such folder, and not in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
    else:
        problem = f"could not be loaded from the Hugging Face Hub: {_first_line(error)}"
    return f"{what} {name!r} ({option}): {problem}"


def _first_line(error: BaseException) -> str:
    return next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)


# ---- catalogue entries of an unexpected shape ----------------------------------------------------------------------
def _catalogue_entry(error: BaseException) -> str | None:
    """'catalogue file F, task T' when reading the catalogue failed on a value of the wrong type (a list where a
    mapping belongs, a string for a number) that its own checks do not cover."""
    if not isinstance(error, (TypeError, ValueError, AttributeError, KeyError)):
        return None
    file = task = None
    for frame in _frames(error):
        if Path(frame.f_code.co_filename).resolve() == CATALOGUE_CODE:
            file = frame.f_locals.get("file", file)
            task = frame.f_locals.get("name") if frame.f_code.co_name == "parse_entry" else task
    if file is None:
        return None
    if task is None and isinstance(error, AttributeError):  # e.g. `content.items()` of a file holding a list
        try:
            content = yaml.safe_load(Path(file).read_text())
        except (OSError, ValueError, yaml.YAMLError):
            content = {}
        if not isinstance(content, dict):
            return f"catalogue file {file}: expected task names mapped to their entries, got a {type(content).__name__}"
    where = f"catalogue file {file}" + (f", task '{task}'" if task else "")
    if isinstance(error, UnicodeDecodeError):
        return f"{where}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start})"
    return f"{where}: {type(error).__name__}: {error} (the fields are described in docs/architecture.md)"


# ---- checks by the project's own code -----------------------------------------------------------------------------
def _project_check(error: BaseException) -> bool:
    """Raised by a `raise` statement in this repository's code (not a library's, not a failing operation), before
    the training loop: a check of the user's options, files or data."""
    entries = list(traceback.walk_tb(error.__traceback__))
    if not entries or any(frame.f_code.co_name == "_run_stage" for frame, _ in entries):
        return False
    frame, line = entries[-1]
    path = Path(frame.f_code.co_filename).resolve()
    if not path.is_relative_to(ROOT) or {".venv", "site-packages"} & set(path.parts):
        return False
    return linecache.getline(str(path), line).lstrip().startswith("raise")


# ---- ckpt_path ----------------------------------------------------------------------------------------------------
class CheckedTrainer(Trainer):
    """Checks `ckpt_path` before running: Lightning reads the checkpoint only after it has created the run's log
    folder, so a mistyped path would leave an empty run behind."""

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        check_checkpoint(kwargs.get("ckpt_path"))
        return super().fit(*args, **kwargs)

    def validate(self, *args: Any, **kwargs: Any) -> Any:
        check_checkpoint(kwargs.get("ckpt_path"))
        return super().validate(*args, **kwargs)

    def test(self, *args: Any, **kwargs: Any) -> Any:
        check_checkpoint(kwargs.get("ckpt_path"))
        return super().test(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        check_checkpoint(kwargs.get("ckpt_path"))
        return super().predict(*args, **kwargs)


def check_checkpoint(ckpt_path: str | Path | None) -> None:
    if ckpt_path is None or str(ckpt_path).split(":")[0] in CHECKPOINT_KEYWORDS or "://" in str(ckpt_path):
        return
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise UsageError(f"--ckpt_path {str(ckpt_path)!r}: {'is a folder' if path.is_dir() else 'no such file'}")


# ---- helpers ------------------------------------------------------------------------------------------------------
def _safe(describe: Any, error: BaseException) -> str | None:
    """A failure while describing the error must not hide it."""
    try:
        return describe(error)
    except Exception:  # noqa: BLE001
        return None


def _in_chain(error: BaseException | None, kind: type) -> Any:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _frames(error: BaseException | None) -> Iterator[FrameType]:
    """The frames of the error's traceback and of its causes', outermost first."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield from (frame for frame, _ in traceback.walk_tb(error.__traceback__))
        error = error.__cause__ or error.__context__
