"""Optimizer and schedule defaults of the paper (AdamW betas (0.9, 0.98), eps 1e-6; linear warmup and decay)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


class PaperAdamW(torch.optim.AdamW):
    """AdamW with the RoBERTa/MUPPET defaults."""

    def __init__(self, params: Iterable, lr: float = 1e-5, betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6,
                 weight_decay: float = 0.01) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def decay_groups(module: nn.Module) -> list[dict]:
    """Weight decay on matrices only: biases and LayerNorm weights (1-D parameters) get none."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2]},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def linear_warmup_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float
                        ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup` steps (a fraction of `total_steps` when < 1), then linear decay to 0."""
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
