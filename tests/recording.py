"""Callbacks that tests add to real `train.py` runs (`--trainer.callbacks+=tests.recording.BatchLog`): a log of every
training batch per rank, a SIGKILL of the whole run at a chosen step, a log of each update's heads, a log of the
gradients DDP reduced, and a planted parameter no loss uses. Configured by environment variables, so the same command
line serves the uninterrupted, the killed and the resumed run."""

from __future__ import annotations

import hashlib
import json
import os
import signal

import lightning as L
import torch
from torch import nn


def fingerprint(task_id: int, rows: list[list[int]]) -> str:
    """One example: its task and the real tokens of each of its rows (choices of a multiple-choice example)."""
    return hashlib.sha1(json.dumps([task_id, rows]).encode()).hexdigest()[:16]


def batch_fingerprints(batch: dict) -> list[str]:
    lengths = batch["attention_mask"].sum(1).tolist()
    examples: dict[int, tuple[int, list]] = {}
    for row, (example, task) in enumerate(zip(batch["example_ids"].tolist(), batch["task_ids"].tolist())):
        examples.setdefault(example, (task, []))[1].append(batch["input_ids"][row, :lengths[row]].tolist())
    return [fingerprint(task, rows) for task, rows in examples.values()]


class BatchLog(L.Callback):
    """Appends {rank, epoch, batch_idx, step, examples} per training batch to `$MUPPET_BATCH_LOG.rank<r>`."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        path = os.environ.get("MUPPET_BATCH_LOG")
        if not path:
            return
        record = {"rank": trainer.global_rank, "epoch": trainer.current_epoch, "batch_idx": batch_idx,
                  "step": trainer.global_step, "examples": batch_fingerprints(batch)}
        with open(f"{path}.rank{trainer.global_rank}", "a") as file:
            file.write(json.dumps(record) + "\n")


class KillAt(L.Callback):
    """SIGKILLs the run's whole process group when `$MUPPET_KILL_AT_STEP` optimizer steps are done."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = os.environ.get("MUPPET_KILL_AT_STEP")
        if step and trainer.global_step == int(step):
            if trainer.world_size > 1:
                torch.distributed.barrier()  # every rank has logged its batches up to here
            if trainer.is_global_zero:
                os.killpg(os.getpgid(0), signal.SIGKILL)
            signal.pause()


def digest(tensors: list[torch.Tensor]) -> str:
    hasher = hashlib.sha1()
    for tensor in tensors:
        hasher.update(tensor.detach().cpu().float().numpy().tobytes())
    return hasher.hexdigest()[:16]


class HeadLog(L.Callback):
    """After every optimizer step, appends to `$MUPPET_HEAD_LOG.rank<r>` the tasks present in the update (all ranks)
    and a digest of each head's parameters and AdamW state."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        path = os.environ.get("MUPPET_HEAD_LOG")
        if not path:
            return
        optimizer = trainer.optimizers[0]
        heads = {key: digest([t for p in head.parameters()
                              for t in (p, *optimizer.state.get(p, {}).values()) if torch.is_tensor(t)])
                 for key, head in pl_module.heads.items()}
        used = sorted({pl_module.head_keys[t] for t in pl_module.last_update_tasks})
        record = {"step": trainer.global_step, "used_heads": used, "heads": heads}
        with open(f"{path}.rank{trainer.global_rank}", "a") as file:
            file.write(json.dumps(record) + "\n")


class GradientLog(L.Callback):
    """After every backward, appends to `$MUPPET_GRADIENT_LOG.rank<r>` the module wrapper the strategy trains (DDP's
    `DistributedDataParallel`), whether it searches for unused parameters, and the parameters left without a
    gradient. Under DDP without that search a parameter with no gradient stops the run at the next forward."""

    def on_after_backward(self, trainer, pl_module) -> None:
        path = os.environ.get("MUPPET_GRADIENT_LOG")
        if not path:
            return
        wrapper = trainer.strategy.model
        record = {"step": trainer.global_step, "wrapper": type(wrapper).__name__,
                  "find_unused_parameters": getattr(wrapper, "find_unused_parameters", None),
                  "without_grad": [n for n, p in pl_module.named_parameters() if p.requires_grad and p.grad is None]}
        with open(f"{path}.rank{trainer.global_rank}", "a") as file:
            file.write(json.dumps(record) + "\n")


class UnusedParameter(L.Callback):
    """With `$MUPPET_UNUSED_PARAMETER` set, adds a layer that no loss reads (before the strategy wraps the model):
    the mistake the DDP check has to catch."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if os.environ.get("MUPPET_UNUSED_PARAMETER"):
            pl_module.unused_probe = nn.Linear(4, 4)


def check_ddp_gradients(path: str, ranks: int = 2) -> int:
    """Asserts from a `GradientLog` that every rank trained under `DistributedDataParallel` without the search for
    unused parameters and that every parameter had a gradient after every backward; returns the steps logged."""
    steps = set()
    for rank in range(ranks):
        with open(f"{path}.rank{rank}") as file:
            records = [json.loads(line) for line in file]
        for record in records:
            assert record["wrapper"] == "DistributedDataParallel", record
            assert record["find_unused_parameters"] is False, record
            assert record["without_grad"] == [], f"rank {rank} step {record['step']}: no gradient for " \
                                                 f"{record['without_grad']}"
            steps.add(record["step"])
    return len(steps)
