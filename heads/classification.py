"""Sentence / sentence-pair classification (cross-entropy), one head per task; its regression variant (`num_labels:
1`, MSE on normalised targets) lives here too. Data side: datamodules/families/classification.py."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.batch import BackboneOutput
from core.metrics import label_metrics, update_label_metrics
from core.task_spec import TaskSpec
from heads.base import Head, HeadContext


class ClassificationHead(Head):
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
        chance = torch.full_like(labels, math.log(self.num_labels), dtype=torch.float)
        return F.cross_entropy(logits.float(), labels.long(), reduction="none"), chance

    def predict(self, logits, batch, rows, decoding):
        """{label: class id, probabilities: one per class} per example."""
        probabilities = logits.float().softmax(-1)
        return [{"label": int(p.argmax()), "probabilities": p.tolist()} for p in probabilities.cpu()]

    def make_metrics(self, spec):
        return label_metrics(spec.metrics, max(2, self.num_labels))

    def update_metrics(self, metrics, logits, batch, rows, decoding):
        update_label_metrics(metrics, logits.argmax(-1), batch["labels"][rows])


class RegressionHead(ClassificationHead):
    """One score per example (num_labels = 1). It learns the target normalised by its task's training mean and
    standard deviation, so predicting the mean costs 1 as a chance-level prediction does on every other task: the
    raw loss is the MSE in the task's own units and the chance-level loss the variance. The statistics are buffers
    (they travel with checkpoints and exports); predictions and metrics are in the original units."""

    def __init__(self, hidden_size: int, dropout: float = 0.1) -> None:
        super().__init__(hidden_size, 1, dropout)
        self.register_buffer("label_mean", torch.zeros(()))
        self.register_buffer("label_std", torch.ones(()))
        self.register_buffer("label_count", torch.zeros((), dtype=torch.long))  # 0: not set from data yet

    def use_train_statistics(self, statistics: dict[str, Any]) -> None:
        """The training targets' mean, (population) standard deviation and count; a head that has them already (from
        `init_from` or a resumed checkpoint) keeps its own."""
        if int(self.label_count) == 0:
            self.set_label_statistics(statistics["mean"], statistics["std"], statistics["count"])

    def set_label_statistics(self, mean: float, std: float, count: int) -> None:
        self.label_mean.fill_(mean)
        self.label_std.fill_(std if std > 0 else 1.0)
        self.label_count.fill_(count)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:  # (R_t, 1) normalised -> (R_t,) original units
        return logits.squeeze(-1).float() * self.label_std + self.label_mean

    def example_losses(self, logits, batch, rows):
        raw = F.mse_loss(self.scores(logits), batch["labels"][rows].float(), reduction="none")
        return raw, (self.label_std.float() ** 2).expand_as(raw)

    def distributions(self, logits, batch, rows):
        return []

    def predict(self, logits, batch, rows, decoding):
        return self.scores(logits).tolist()

    def update_metrics(self, metrics, logits, batch, rows, decoding):
        update_label_metrics(metrics, self.scores(logits), batch["labels"][rows])


def build(spec: TaskSpec, context: HeadContext) -> Head:
    if spec.fields.is_regression:
        return RegressionHead(context.hidden_size, context.dropout)
    return ClassificationHead(context.hidden_size, spec.fields.num_labels, context.dropout)
