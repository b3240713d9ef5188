"""The long-run path through the real `train.py`: the task sampler follows the Trainer's epochs (also under 2-process
DDP with very uneven tasks: equal steps per rank, every example exactly once per epoch), and a run SIGKILLed in the
middle of its third epoch and resumed with `--ckpt_path=last` trains on exactly the batches of an uninterrupted run
and ends with bitwise-identical weights (dropout on, validation in between)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import ROOT, TOKENIZER
from tests.recording import fingerprint
from tests.test_cli import OFFLINE, TINY_MODEL

TASKS = {"r_sentiment": ("sentiment", 120), "r_choice": ("choice", 9), "r_span": ("span", 30)}  # very uneven
BATCHES = 8


@pytest.fixture(scope="module")
def small_catalogue(tmp_path_factory) -> Path:
    """Three demo tasks cut to 120 / 9 / 30 training examples, as a catalogue file of their own."""
    folder = tmp_path_factory.mktemp("resume-data")
    demo = yaml.safe_load((ROOT / "configs" / "tasks" / "demo.yaml").read_text())
    entries = {}
    for name, (demo_name, size) in TASKS.items():
        files = {}
        for split, count in (("train", size), ("validation", 10)):
            lines = (ROOT / "data" / "demo" / demo_name / f"{split}.jsonl").read_text().splitlines()[:count]
            files[split] = str(folder / f"{name}-{split}.jsonl")
            Path(files[split]).write_text("\n".join(lines) + "\n")
        entries[name] = {**demo[f"demo_{demo_name}"], "source": {"path": "json", "data_files": files}}
    (folder / "tasks.yaml").write_text(yaml.safe_dump(entries))
    return folder / "tasks.yaml"


def command(catalogue: Path, out: Path, max_steps: int, *extra: str) -> list[str]:
    return [sys.executable, "train.py", "fit", "--config", "configs/quickstart.yaml", *TINY_MODEL,
            f"--data.catalogue=[{catalogue}]", f"--data.tasks=[{','.join(TASKS)}]", "--data.max_tokens=null",
            f"--data.batch_size={BATCHES}", "--data.max_eval_examples=10", f"--data.cache_dir={out.parent}/cache",
            f"--trainer.max_steps={max_steps}", "--trainer.val_check_interval=10", "--trainer.log_every_n_steps=5",
            "--checkpoint.monitor=null", "--checkpoint.filename=step{step}", "--checkpoint.every_n_train_steps=4",
            "--latest.every_n_train_steps=4",
            "--export.use_best=false", "--trainer.callbacks+=tests.recording.BatchLog",
            "--trainer.callbacks+=tests.recording.KillAt", f"--trainer.logger.init_args.save_dir={out}", *extra]


def run(args: list[str], log: Path, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**OFFLINE, "MUPPET_BATCH_LOG": str(log), "MUPPET_KILL_AT_STEP": str(kill_at or "")}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          start_new_session=True)  # KillAt kills the whole process group: launcher and ranks


def records(log: Path, rank: int = 0) -> list[dict]:
    path = Path(f"{log}.rank{rank}")
    return [json.loads(line) for line in path.read_text().splitlines()]


def final_weights(out: Path, version: int) -> dict[str, torch.Tensor]:
    return torch.load(out / "muppet" / f"version_{version}" / "checkpoints" / "last.ckpt", weights_only=False,
                      map_location="cpu")["state_dict"]


def assert_resumed_exactly(tmp_path: Path, catalogue: Path, max_steps: int, kill_at: int, resume_from: int,
                           *extra: str, ranks: int = 1) -> list[list[dict]]:
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    done = run(command(catalogue, whole, max_steps, *extra), tmp_path / "whole.log")
    assert done.returncode == 0, done.stderr[-3000:]
    killed = run(command(catalogue, broken, max_steps, *extra), tmp_path / "broken.log", kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert torch.load(broken / "muppet" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)[
        "global_step"] == resume_from
    resumed = run(command(catalogue, broken, max_steps, *extra, "--ckpt_path=last"), tmp_path / "resumed.log")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for rank in range(ranks):
        expected = [r for r in records(tmp_path / "whole.log", rank) if r["step"] >= resume_from]
        got = records(tmp_path / "resumed.log", rank)
        assert got[0]["epoch"] == 2 and got[0]["batch_idx"] > 0  # inside the third epoch, not at its start
        assert got == expected  # the same batches, in the same order, at the same steps
    a, b = final_weights(whole, 0), final_weights(broken, 1)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    return [records(tmp_path / "whole.log", rank) for rank in range(ranks)]


@pytest.mark.slow
def test_sigkill_in_the_third_epoch_and_resume_is_bitwise_exact(small_catalogue, tmp_path):
    # 159 examples / 8 = 20 batches per epoch: epoch 2 is steps 40-59; last.ckpt at step 44, killed at step 47
    assert_resumed_exactly(tmp_path, small_catalogue, max_steps=52, kill_at=47, resume_from=44)


def example_fingerprints(catalogue: Path, cache: Path) -> Counter:
    from datamodules.multitask import MultiTaskDataModule
    data = MultiTaskDataModule(tasks=list(TASKS), tokenizer=TOKENIZER, catalogue=[str(catalogue)], max_length=128,
                               cache_dir=str(cache))
    data.prepare_data()
    data.setup("fit")
    prints = Counter()
    for task, dataset in enumerate(data.train_set.datasets):
        for ids in dataset["input_ids"]:
            prints[fingerprint(task, ids if ids and isinstance(ids[0], list) else [ids])] += 1
    return prints


@pytest.mark.slow
def test_two_process_ddp_epochs_advance_cover_every_example_once_and_resume_exactly(small_catalogue, tmp_path):
    # 20 batches per epoch = 10 per rank: epoch 2 is steps 20-29; last.ckpt at step 24, killed at step 26
    logs = assert_resumed_exactly(tmp_path, small_catalogue, 28, 26, 24, "--trainer.devices=2",
                                  "--trainer.strategy=ddp", ranks=2)
    every_example = example_fingerprints(small_catalogue, tmp_path / "fingerprint-cache")
    plans = []
    for epoch in (0, 1):
        per_rank = [[r for r in rank_log if r["epoch"] == epoch] for rank_log in logs]
        assert len(per_rank[0]) == len(per_rank[1]) == 10  # every rank steps equally often
        seen = Counter(e for rank_log in per_rank for r in rank_log for e in r["examples"])
        assert seen == every_example  # proportional, no caps: every example exactly once, on one rank only
        plans.append([r["examples"] for r in per_rank[0]])
    assert plans[0] != plans[1]  # the Trainer's epoch reaches the sampler: a new plan every epoch
