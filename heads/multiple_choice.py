"""Multiple choice: score every (context, choice) row, softmax over the choices of each example; one scorer shared
by the family by default. Data side: datamodules/families/multiple_choice.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.batch import BackboneOutput
from core.metrics import label_metrics, update_label_metrics
from core.task_spec import TaskSpec
from heads.base import MASKED, ROBERTA_LIKE, Head, HeadContext, NotStandard, StandardHead, backbone_attribute, \
    linear_tensors
from heads.classification import dense_tanh, first_token_only, needs_dense


def group_rows(scores: torch.Tensor, example_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R,) scores of rows grouped by (contiguous) example id -> (E, K) padded with MASKED, and (E,) choice counts."""
    _, counts = torch.unique_consecutive(example_ids, return_counts=True)
    grouped = scores.new_full((len(counts), int(counts.max())), MASKED)
    position = torch.arange(len(scores), device=scores.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts)
    grouped[torch.repeat_interleave(torch.arange(len(counts), device=scores.device), counts), position] = scores
    return grouped, counts


def correct_choices(batch: dict, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E,) the correct choice of each example (every row of an example carries it as its label), (E,) choice counts."""
    _, counts = torch.unique_consecutive(batch["example_ids"][rows], return_counts=True)
    return batch["labels"][rows][torch.cumsum(counts, 0) - counts].long(), counts


class MultipleChoiceHead(Head):
    def __init__(self, hidden_size: int, dropout: float = 0.1, hidden_layer: bool = True) -> None:
        """hidden_layer=False (`model.head_dense=false`): the scorer alone over the pooled row."""
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size) if hidden_layer else None
        self.dropout = nn.Dropout(dropout)
        self.scorer = nn.Linear(hidden_size, 1)

    def forward(self, out: BackboneOutput, batch: dict, rows: torch.Tensor) -> torch.Tensor:  # -> (E_t, K)
        scores = self.scorer(dense_tanh(self.dense, self.dropout, out.pooled[rows])).squeeze(-1)
        return group_rows(scores.float(), batch["example_ids"][rows])[0]

    def example_losses(self, logits, batch, rows):
        correct, counts = correct_choices(batch, rows)  # chance: uniform over the example's own choices
        return F.cross_entropy(logits, correct, reduction="none"), counts.float().log()

    def predict(self, logits, batch, rows, decoding):
        """The chosen choice's index per example."""
        return logits.argmax(-1).tolist()

    def make_metrics(self, spec):
        return label_metrics(spec.metrics, 2)

    def update_metrics(self, metrics, logits, batch, rows, decoding):
        update_label_metrics(metrics, logits.argmax(-1), correct_choices(batch, rows)[0])

    def standard(self, model_type, pooling):
        """`*ForMultipleChoice` scores pooler(first token) with one linear layer: this head's dense+tanh is the
        pooler, its scorer the classifier."""
        first_token_only(pooling)
        needs_dense(self.dense)
        if model_type not in (*ROBERTA_LIKE, "bert"):
            raise NotStandard(f"{model_type}'s *ForMultipleChoice is not pooler(dense+tanh)+linear")
        return StandardHead("AutoModelForMultipleChoice", {
            **linear_tensors(f"{backbone_attribute(model_type)}.pooler.dense", self.dense),
            **linear_tensors("classifier", self.scorer)}, ["the task head's dense+tanh is stored as the pooler"])


def build(spec: TaskSpec, context: HeadContext) -> Head:
    return MultipleChoiceHead(context.hidden_size, context.dropout, context.dense)
