"""The experiments' process handling (experiments/processes.py), shared by the study runner and the plain-vs-CLI
comparison's pool: real subprocesses, each a fraction of a second."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pytest

from experiments import plain_vs_cli
from experiments.plain_vs_cli import Pool
from experiments.processes import Process


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has ended


def test_a_process_starts_in_a_fresh_folder_with_its_command_log_and_offline_single_thread_env(tmp_path,
                                                                                             monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "stale.txt").write_text("from an interrupted run")
    code = "import os; print(os.environ['OMP_NUM_THREADS'], os.environ['HF_HUB_OFFLINE'], os.getcwd())"
    process = Process(python(code), folder, "out.log", threads=1)
    assert process.wait() == 0 and process.done()
    threads, offline, cwd = (folder / "out.log").read_text().split()
    assert (threads, offline) == ("1", "1")
    assert Path(cwd) == Path(__file__).resolve().parent.parent  # train.py's folder
    assert not (folder / "stale.txt").exists()
    assert "import os" in (folder / "command.txt").read_text()


def test_the_callers_thread_setting_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    process = Process(python("import os; print(os.environ['OMP_NUM_THREADS'])"), tmp_path / "run", threads=1)
    process.wait()
    assert process.log.read_text().strip() == "3"


def test_stopping_a_process_ends_what_it_started_too(tmp_path):
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(60)")
    process = Process(python(code), tmp_path / "run")
    deadline = time.time() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    process.stop()
    assert process.done()
    deadline = time.time() + 10
    while alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_the_pool_runs_at_most_jobs_at_once_and_finishes_only_the_runs_that_succeeded(tmp_path, capsys):
    finished = []
    pool = Pool(jobs=2, poll=0.02)
    stamp = "import sys, time; print(time.time()); time.sleep(0.4); print(time.time()); sys.exit({code})"
    for name, code in [("a", 0), ("b", 1), ("c", 0)]:
        pool.start(name, python(stamp.format(code=code)), tmp_path / name, then=finished.append)
    pool.drain()
    assert sorted(finished) == [tmp_path / "a", tmp_path / "c"]  # b exited 1: not finished
    spans = [tuple(map(float, (tmp_path / n / "run.log").read_text().split())) for n in "abc"]
    starts_and_ends = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = [sum(step for _, step in starts_and_ends[:i + 1]) for i in range(len(starts_and_ends))]
    assert max(running) == 2  # two overlapped, never three
    assert all(float((tmp_path / n / "wall_s").read_text()) >= 0.4 for n in "abc")
    assert "end b: exit 1" in capsys.readouterr().out


def test_ctrl_c_during_the_comparison_stops_every_running_run(tmp_path, monkeypatch):
    started = []

    def start_two_then_interrupt(args, out, root, pool):
        for name in "ab":
            pool.start(name, python("import time; time.sleep(60)"), out / name)
        started.extend(process for _, process, _ in pool.running)
        raise KeyboardInterrupt

    monkeypatch.setattr(plain_vs_cli, "start_runs", start_two_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        plain_vs_cli.run(argparse.Namespace(out=str(tmp_path), data_root=str(tmp_path), jobs=2))
    assert len(started) == 2 and all(process.done() for process in started)
