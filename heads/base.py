"""The one interface every head implements.

A head reads the backbone's output for its rows of a mixed batch and returns logits; `example_losses` turns them into
one raw loss per example and the size n of the output space that example was predicted over (loss scaling divides
by log n; `None` = no output space, e.g. regression).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MASKED = -1e4  # logit of positions a head must not pick (finite, so KL terms and bf16 stay well-defined)


@dataclass
class BackboneOutput:
    hidden: torch.Tensor  # (R, T, H) token states: encoder output, or BART's decoder reading the same tokens
    pooled: torch.Tensor  # (R, H) first token (encoders) or the final EOS state (BART)
    lm_logits: torch.Tensor | None = None  # (R_sum, L, V) summarization rows only, in batch order
    lm_rows: torch.Tensor | None = None  # (R_sum,) the batch rows `lm_logits` belongs to (ascending)


class Head(nn.Module):
    family: str

    def forward(self, out: BackboneOutput, batch: dict, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def example_losses(self, logits: torch.Tensor, batch: dict, rows: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(E,) raw loss per example and (E,) output-space size n (or None: leave unscaled)."""
        raise NotImplementedError

    def distributions(self, logits: torch.Tensor, batch: dict, rows: torch.Tensor) -> list[torch.Tensor]:
        """Logit tensors whose softmax is a prediction (R3F compares them under input noise); [] for none."""
        return [logits]
