"""Typed user errors, raised where the mistake is found, carrying what the message needs. The CLI only formats them
(`cli_errors.py`): one line `error: <message>`, exit code 2. Anything else is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (options, files, data, checkpoints); `str(error)` is the one-line message."""


class OptionError(UserError, ValueError):
    """An option value that cannot be used; the message names the option."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}" if not message.startswith(option) else message)
        self.option = option


class CatalogueError(UserError, ValueError):
    """A task entry, selection or mixture that cannot be used; the message names the file, task and field."""

    def __init__(self, message: str, file: str | None = None, task: str | None = None,
                 field: str | None = None) -> None:
        where = ", ".join(part for part in (f"catalogue file {file}" if file else "",
                                            f"task '{task}'" if task else "") if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.task, self.field, self.detail = file, task, field, message


class DataValidationError(UserError, ValueError):
    """A split that cannot be trained on; the message names the task, split and field (and file and line)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint or export that is missing, damaged, or does not match the run."""

    def __init__(self, path: str, message: str, option: str = "checkpoint") -> None:
        """message: what is wrong with it; a sentence about the file ("is not ...", "has no ...") follows its name,
        anything else follows a colon ("--ckpt_path 'x.ckpt': no such file")."""
        verb = message.split(" ", 1)[0] in ("is", "does", "has", "was", "stores", "its")
        super().__init__(f"{option} '{path}'{' ' if verb else ': '}{message}")
        self.path, self.option = path, option


class BackboneError(UserError, ValueError):
    """A backbone or tokenizer that cannot be loaded; the message names it, the option and why."""

    def __init__(self, what: str, name: str, option: str, problem: str) -> None:
        super().__init__(f"{what} {name!r} ({option}): {problem}")
        self.what, self.name, self.option, self.problem = what, name, option, problem


class MissingPackageError(UserError, ImportError):
    """An optional package a selected task needs is not installed; the message names the task, the package and how
    to install it."""

    def __init__(self, task: str, package: str, install: str, why: str) -> None:
        super().__init__(f"task '{task}' {why}: it needs the optional package {package}, which is not installed "
                         f"({install})")
        self.task, self.package, self.install = task, package, install
