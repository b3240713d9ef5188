"""Sentence / sentence-pair classification (cross-entropy) and regression (MSE), one head per task."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from heads.base import BackboneOutput, Head


class ClassificationHead(Head):
    family = "classification"

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.dense, self.dropout = nn.Linear(hidden_size, hidden_size), nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, out: BackboneOutput, batch: dict, rows: torch.Tensor) -> torch.Tensor:  # (R_t, H) -> (R_t, C)
        pooled = out.pooled[rows]
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(pooled)))))

    def example_losses(self, logits, batch, rows):
        labels = batch["labels"][rows]
        if self.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float(), reduction="none"), None
        n = torch.full_like(labels, float(self.num_labels))
        return F.cross_entropy(logits.float(), labels.long(), reduction="none"), n

    def distributions(self, logits, batch, rows):
        return [] if self.num_labels == 1 else [logits]

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1) if self.num_labels == 1 else logits.argmax(-1)
