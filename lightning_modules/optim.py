"""Optimizer and schedule defaults of the paper (AdamW betas (0.9, 0.98), eps 1e-6; linear warmup and decay)."""

from __future__ import annotations

from typing import Iterable

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn


class PaperAdamW(torch.optim.AdamW):
    """AdamW with the RoBERTa/MUPPET defaults."""

    def __init__(self, params: Iterable, lr: float = 1e-5, betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6,
                 weight_decay: float = 0.01) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


NO_DECAY = ("bias", "layernorm", "layer_norm", "ln_", "norm.weight", "_norm", "embeddings.norm")


def decays(name: str) -> bool:
    """Weight decay by parameter *name*: biases and normalisation weights get none. Names, not shapes: under FSDP
    (`use_orig_params=True`) Lightning builds the optimizer after wrapping, when every parameter is a flat 1-D shard."""
    lowered = name.lower()
    return not any(marker in lowered for marker in NO_DECAY)


def decay_groups(module: nn.Module) -> list[dict]:
    """Two parameter groups: decayed (matrices, embeddings) and not decayed (biases, LayerNorm), with a printed
    summary of their sizes."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    decayed = [p for n, p in named if decays(n)]
    plain = [p for n, p in named if not decays(n)]
    count = lambda params: sum(p.numel() for p in params)  # noqa: E731
    rank_zero_info(f"weight decay on {len(decayed)} tensors ({count(decayed):,} parameters); none on {len(plain)} "
                   f"bias/LayerNorm tensors ({count(plain):,} parameters)")
    return [{"params": decayed}, {"params": plain, "weight_decay": 0.0}]


def linear_warmup_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float
                        ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup` steps (a fraction of `total_steps` when < 1), then linear decay to 0."""
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
