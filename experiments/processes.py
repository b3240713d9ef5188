"""One command of an experiment in its own process: a fresh folder, the command in <folder>/command.txt, its output
in a log file there, its own process group (so stopping it stops whatever it started), offline hub settings.
What a study's runner (`experiments.run`) and the plain-vs-CLI comparison (`experiments.plain_vs_cli`) start for
each of their runs."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # train.py's folder: every run starts there
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class Process:
    """`command` started in ROOT, its output in <folder>/<log_name>; `threads` sets OMP_NUM_THREADS unless the
    environment already does (the caller's environment wins over ENV too). The folder is emptied first: a run that
    was interrupted starts clean."""

    def __init__(self, command: list[str], folder: Path, log_name: str = "train.log",
                 threads: int | None = None) -> None:
        self.folder, self.log = folder, folder / log_name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "command.txt").write_text(shlex.join(command) + "\n")
        env = {**ENV, **({"OMP_NUM_THREADS": str(threads)} if threads else {}), **os.environ}
        self.start = time.time()
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=env)

    def done(self) -> bool:
        return self.proc.poll() is not None

    def wait(self) -> int:
        return self.proc.wait()

    def seconds(self) -> float:
        return time.time() - self.start

    def stop(self) -> None:
        """End the whole run (its process group): SIGTERM, then SIGKILL after 30 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
