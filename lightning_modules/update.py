"""What one optimizer update needs beyond the loss: per-task example counts and non-finite flags over its
micro-batches (one all-reduce per update), and per-step seeding of every RNG (exact resume)."""

from __future__ import annotations

import random

import numpy as np
import torch

from core.errors import UserError


class NonFiniteLossError(UserError, RuntimeError):
    """A NaN/inf loss: the run stops before the update, naming the step and the tasks."""


def seed_step(seed: int, epoch: int, batch_idx: int, rank: int) -> None:
    """Seed torch (all devices), NumPy and Python from (seed, epoch, batch, rank)."""
    state = np.random.SeedSequence([seed % 2**32, epoch, batch_idx, rank]).generate_state(2)
    torch.manual_seed(int(state[0]))
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))


class UpdateWindow:
    """Counts of the micro-batches since the last optimizer step, kept on the device (no sync per micro-batch)."""

    def __init__(self, num_tasks: int) -> None:
        self.num_tasks = num_tasks
        self.counts: torch.Tensor | None = None  # (T,) examples per task
        self.nonfinite: torch.Tensor | None = None  # (T,) micro-batches in which the task's loss was NaN/inf

    def add(self, losses: dict[int, tuple[torch.Tensor, torch.Tensor]], total: torch.Tensor,
            device: torch.device) -> None:
        if self.counts is None:
            self.counts = torch.zeros(self.num_tasks, device=device)
            self.nonfinite = torch.zeros(self.num_tasks, device=device)
        tasks = list(losses)
        bad = torch.stack([(~torch.isfinite(losses[t][0].detach())).any() for t in tasks]).float()  # (T_batch,)
        # a non-finite total with finite task losses (e.g. the R3F term) is charged to every task of the batch
        bad = torch.maximum(bad, (~torch.isfinite(total)).float() * (1 - bad.max()))
        for task, flag in zip(tasks, bad):
            self.counts[task] += len(losses[task][0])
            self.nonfinite[task] += flag

    def reduce(self, strategy) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts, non-finite flags) summed over every rank: one collective."""
        if self.counts is None:
            raise RuntimeError("an optimizer step without a training step in its window")
        stats = strategy.reduce(torch.cat([self.counts, self.nonfinite]), reduce_op="sum")
        return stats[:self.num_tasks], stats[self.num_tasks:]

    def reset(self) -> None:
        self.counts, self.nonfinite = None, None
