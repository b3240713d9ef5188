"""The one interface every head implements: everything the model and its evaluation do with a family's outputs.

A head reads the backbone's output for its rows of a mixed batch and returns logits (`forward`), and from them:
- `example_losses`: one raw loss per example and the loss a chance-level prediction of that example costs (log n
  over n classes, choices, positions or vocabulary entries; the target variance for regression). Loss scaling
  divides the first by the second, so every task starts at about 1;
- `distributions`: logits whose softmax is a prediction (R3F compares them under input noise);
- `predict`: one JSON-ready prediction per example (what `predict` returns);
- `make_metrics` and `update_metrics`: the task's metrics, fed from its predictions and the gold in the batch.
A new family is one head file here, registered in lightning_modules/heads_factory.py, plus its data-side entry in
datamodules/families.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from lightning_modules.metrics import TaskMetrics

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from datamodules.catalogue import TaskSpec

MASKED = -1e4  # logit of positions a head must not pick (finite, so KL terms and bf16 stay well-defined)


@dataclass
class BackboneOutput:
    hidden: torch.Tensor  # (R, T, H) token states: encoder output, or BART's decoder reading the same tokens
    pooled: torch.Tensor  # (R, H) per `model.pooling`: first token, masked mean, the model's pooler or the final EOS
    lm_logits: torch.Tensor | None = None  # (R_lm, L, V) rows of generative heads only, in batch order
    lm_rows: torch.Tensor | None = None  # (R_lm,) the batch rows `lm_logits` belongs to (ascending)


@dataclass
class Decoding:
    """What turning a task's logits into predictions may need besides the batch."""

    spec: TaskSpec  # the task (a shared head serves several)
    tokenizer: PreTrainedTokenizerBase
    generate: Callable[[dict, torch.Tensor], torch.Tensor]  # (batch, rows) -> generated token ids (R_t, L)
    max_answer_length: int = 30  # longest extracted answer, in tokens


class Head(nn.Module):
    generative: bool = False  # reads the backbone's LM logits and predicts by generating (needs an encoder-decoder)

    def forward(self, out: BackboneOutput, batch: dict, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def example_losses(self, logits: torch.Tensor, batch: dict, rows: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(E,) raw loss per example, in the task's own units, and (E,) the loss of a chance-level prediction."""
        raise NotImplementedError

    def distributions(self, logits: torch.Tensor, batch: dict, rows: torch.Tensor) -> list[torch.Tensor]:
        """Logit tensors whose softmax is a prediction (R3F compares them under input noise); [] for none."""
        return [logits]

    def predict(self, logits: torch.Tensor, batch: dict, rows: torch.Tensor, decoding: Decoding) -> list[Any]:
        """One prediction per example of these rows, in batch order, as plain Python values."""
        raise NotImplementedError

    def make_metrics(self, spec: TaskSpec) -> TaskMetrics:
        return TaskMetrics(spec.metrics)

    def update_metrics(self, metrics: TaskMetrics, logits: torch.Tensor, batch: dict, rows: torch.Tensor,
                       decoding: Decoding) -> None:
        """Score this batch's predictions for the task against the gold in the batch."""
        raise NotImplementedError

