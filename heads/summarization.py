"""Summarization: BART's decoder and LM head (logits come from the backbone), label-smoothed cross-entropy per
target token."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from heads.base import BackboneOutput, Head


class SummarizationHead(Head):
    family = "summarization"

    def __init__(self, vocab_size: int, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.vocab_size, self.label_smoothing = vocab_size, label_smoothing

    def forward(self, out: BackboneOutput, batch: dict, rows: torch.Tensor) -> torch.Tensor:  # -> (R_t, L, V)
        return out.lm_logits[torch.searchsorted(out.lm_rows, rows)]

    def example_losses(self, logits, batch, rows):
        targets = batch["target_ids"][rows, :logits.shape[1]]  # (R_t, L)
        per_token = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="none",
                                    label_smoothing=self.label_smoothing)
        tokens = (targets != -100).sum(-1).clamp(min=1)
        return per_token.sum(-1) / tokens, torch.full_like(tokens, self.vocab_size, dtype=torch.float)

    def distributions(self, logits, batch, rows):
        return [logits[batch["target_ids"][rows, :logits.shape[1]] != -100]]
