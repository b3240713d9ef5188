"""Token classification (NER): a linear tagger over every token state, as transformers' `*ForTokenClassification`
(dropout + linear), one per task. Loss: cross-entropy over an example's labelled sub-tokens, averaged per example;
chance: log(number of tags). Predictions and metrics are per word (its first sub-token's tag): entity-level
precision / recall / F1 (seqeval's entities) and word accuracy. Data side: datamodules/families/token_classification.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.batch import BackboneOutput
from core.metrics import EntityScore, SumMetric, TaskMetrics
from core.task_spec import TaskSpec
from heads.base import Head, HeadContext, StandardHead, linear_tensors

IGNORE = -100  # `token_labels` of unlabelled positions (continuation sub-tokens, special tokens, padding)


class TokenAccuracy(SumMetric):
    """Fraction of scored words whose predicted tag is the gold tag (seqeval's `accuracy_score`)."""

    def update(self, predictions: list[list[str]], golds: list[list[str]]) -> None:
        pairs = [(p, g) for pred, gold in zip(predictions, golds) for p, g in zip(pred, gold)]
        self.add(sum(p == g for p, g in pairs), len(pairs))


class TokenClassificationHead(Head):
    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.dropout, self.classifier = nn.Dropout(dropout), nn.Linear(hidden_size, num_labels)

    def forward(self, out: BackboneOutput, batch: dict, rows: torch.Tensor) -> torch.Tensor:  # -> (R_t, T, C)
        return self.classifier(self.dropout(out.hidden[rows]))  # (R_t, T, H) -> (R_t, T, C)

    def example_losses(self, logits, batch, rows):
        """Mean cross-entropy over each example's labelled tokens (0 for an example with none)."""
        labels = batch["token_labels"][rows]  # (R_t, T)
        tokens = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
        counts = (labels != IGNORE).sum(-1)  # (R_t,)
        raw = tokens.sum(-1) / counts.clamp(min=1)
        return raw, torch.full_like(raw, math.log(self.num_labels))

    def distributions(self, logits, batch, rows):
        labelled = batch["token_labels"][rows] != IGNORE  # (R_t, T)
        return [logits[labelled]] if labelled.any() else []  # (N, C)

    def predict(self, logits, batch, rows, decoding):
        """The tag name of each kept word (its first sub-token's; "O" for a word that makes no token)."""
        names = decoding.spec.fields.label_names
        best = logits.argmax(-1).tolist()  # (R_t, T)
        return [[names[tags[p]] if p >= 0 else "O" for p in batch["word_starts"][r]]
                for tags, r in zip(best, rows.tolist())]

    def standard(self, model_type, pooling):
        """`*ForTokenClassification`'s `classifier` over the token states."""
        return StandardHead("AutoModelForTokenClassification", linear_tensors("classifier", self.classifier),
                            ["tags per sub-token; this project scores a word by its first sub-token"])

    def make_metrics(self, spec: TaskSpec) -> TaskMetrics:
        return TaskMetrics({name: TokenAccuracy() if name == "token_accuracy" else EntityScore(name)
                            for name in spec.metrics})

    def update_metrics(self, metrics, logits, batch, rows, decoding):
        predictions = self.predict(logits, batch, rows, decoding)
        golds = [batch["gold_tags"][r] for r in rows.tolist()]
        for metric in metrics.metrics.values():
            metric.update(predictions, golds)


def build(spec: TaskSpec, context: HeadContext) -> Head:
    return TokenClassificationHead(context.hidden_size, spec.fields.num_labels, context.dropout)
