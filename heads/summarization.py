"""Summarization: BART's decoder and LM head (logits come from the backbone), label-smoothed cross-entropy per
target token; predictions are generated (beam search). Data side: datamodules/families/summarization.py."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.batch import BackboneOutput
from core.metrics import Rouge, TaskMetrics
from core.task_spec import TaskSpec
from heads.base import Head, HeadContext


class SummarizationHead(Head):
    generative = True

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
        return per_token.sum(-1) / tokens, torch.full_like(tokens, math.log(self.vocab_size), dtype=torch.float)

    def distributions(self, logits, batch, rows):
        return [logits[batch["target_ids"][rows, :logits.shape[1]] != -100]]

    def predict(self, logits, batch, rows, decoding):
        """The generated summary per example."""
        return decoding.tokenizer.batch_decode(decoding.generate(batch, rows), skip_special_tokens=True)

    def decoder_targets(self, batch):
        return batch["target_ids"]

    def make_metrics(self, spec):
        return TaskMetrics({name: Rouge(name) for name in spec.metrics})

    def update_metrics(self, metrics, logits, batch, rows, decoding):
        tokenizer, targets = decoding.tokenizer, batch["target_ids"][rows]
        references = tokenizer.batch_decode(targets.masked_fill(targets == -100, tokenizer.pad_token_id),
                                            skip_special_tokens=True)
        predictions = self.predict(logits, batch, rows, decoding)
        for metric in metrics.metrics.values():
            metric.update(predictions, references)


def build(spec: TaskSpec, context: HeadContext) -> Head:
    return SummarizationHead(context.vocab_size, context.label_smoothing)
