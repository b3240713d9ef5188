"""Mistakes in the user's input end in one line, `error: <message>` on stderr, exit code 2, before anything is
written; real bugs keep their traceback (`--traceback` or MUPPET_TRACEBACK=1 shows it for user errors too).

This module only formats. User errors are raised where the mistake is found, as typed errors carrying what the
message needs (core/errors.py: options, catalogue, data, checkpoints, backbones and tokenizers; a non-finite loss);
besides them it formats jsonargparse's option errors, YAML syntax errors of a config file given on the command line,
and operating-system errors of files that cannot be written (they carry the file name)."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError

TRACEBACK_FLAG, TRACEBACK_ENV = "--traceback", "MUPPET_TRACEBACK"
WRITE_ERRORS = (PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)
FULL = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def wants_traceback(argv: list[str]) -> bool:
    """Remove `--traceback` from argv (in place, before LightningCLI parses it); the environment variable carries
    it to DDP's child processes, which Lightning starts with the same argv."""
    if TRACEBACK_FLAG in argv:
        argv[:] = [arg for arg in argv if arg != TRACEBACK_FLAG]
        os.environ[TRACEBACK_ENV] = "1"
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


@contextmanager
def exit_on_user_error(show_traceback: bool = False, argv: list[str] | None = None) -> Iterator[None]:
    """User errors: `error: <message>` on stderr (once per node: local rank 0), exit code 2. Anything else raises,
    except on a DDP child whose rank-0 parent has already exited: that failure is the parent's, which it reported.
    With `show_traceback`, a user error raises too, its one-line message added as a note. argv: the command line
    (default sys.argv), where a config file that fails to parse is looked for."""
    parent = os.getppid()
    try:
        yield
    except Exception as error:  # noqa: BLE001 - what is not a user error is raised again unchanged
        message = user_message(error, sys.argv[1:] if argv is None else argv)
        rank_zero = os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")) == "0"
        if show_traceback and message is not None:
            error.add_note(f"error: {message}")
            raise
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


def user_message(error: BaseException, argv: list[str] = ()) -> str | None:
    """One line naming the culprit when `error` comes from the user's input; None for a bug."""
    if isinstance(error, argparse.ArgumentError):
        message = _option_message(error, argv)
    elif (typed := _in_chain(error, UserError)) is not None:
        message = str(typed)
    elif (marked := _in_chain(error, yaml.MarkedYAMLError)) is not None:
        message = _yaml_message(marked, argv)
    elif isinstance(error, WRITE_ERRORS) or isinstance(error, OSError) and error.errno in FULL:
        message = f"cannot write {error.filename!r}: {error.strerror}" if error.filename else str(error)
    else:
        return None
    return " ".join(message.split())


# ---- options and config files (jsonargparse) ------------------------------------------------------------------------
def _option_message(error: argparse.ArgumentError, argv: list[str]) -> str:
    text = str(error)
    if (typed := _in_chain(error, UserError)) is not None:
        return str(typed)
    if "Problems parsing config" in text and (marked := _in_chain(error, yaml.MarkedYAMLError)) is not None:
        return _yaml_message(marked, argv)
    if text.startswith("unrecognized arguments"):
        return f"{text} (`train.py fit --help` lists the options)"
    if "subcommand" in text:
        return f"{text} (`train.py --help`)"
    match = re.match(r'Parser key "([^"]+)":\s*(.*)', text, re.S)
    if not match:
        return text
    key, detail = match.groups()
    given = re.search(r"(?:Given value|Got value): (.*)", detail)
    choices = re.search(r"Expected a typing\.Literal\[(.*?)\]", detail) or re.search(r"Literal\[(.*?)\]", detail)
    if given and choices and "Subtypes" not in detail.split("Literal")[0]:
        return f"{key} is {given.group(1).strip()!r}; expected one of ({choices.group(1)})"
    expected = re.search(r"Subtypes: \[(.*)\]", detail) or re.search(r"Expected a (.*?)\. Got value", detail)
    if given and expected:
        return f"option --{key}: got {given.group(1).strip()!r}; expected {_type_names(expected.group(1))}"
    return f"option --{key}: {detail}"


def _type_names(text: str) -> str:
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text).replace("NoneType", "null")
    text = re.sub(r"typing\.Literal\[(.*?)\]", r"one of (\1)", text)
    return " | ".join(part.strip() for part in re.split(r",\s*(?![^()]*\))", text))


# ---- YAML syntax of config files ----------------------------------------------------------------------------------
def _yaml_message(marked: yaml.MarkedYAMLError, argv: list[str]) -> str:
    mark = marked.problem_mark or marked.context_mark
    problem = "; ".join(str(p) for p in (marked.context, marked.problem) if p)
    if mark is None:
        return f"invalid YAML: {problem}"
    path = mark.name if not str(mark.name).startswith("<") else _config_file(mark, argv)
    return f"{path or 'a YAML file'} line {mark.line + 1}, column {mark.column + 1}: invalid YAML ({problem})"


def _config_file(mark: Any, argv: list[str]) -> str | None:
    """The config file on the command line (`--config X`, `--config=X`) that fails to parse at the same place."""
    arguments = [arg.split("=", 1)[-1] for arg in argv]
    for candidate in dict.fromkeys(arguments):
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


def _in_chain(error: BaseException | None, kind: type) -> Any:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
