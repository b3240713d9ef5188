"""The one interface every head implements: everything the model and its evaluation do with a family's outputs.

A head reads the backbone's output for its rows of a mixed batch and returns logits (`forward`), and from them:
- `example_losses`: one raw loss per example and the loss a chance-level prediction of that example costs (log n
  over n classes, choices, positions, tags or vocabulary entries; the target variance for regression). Loss scaling
  divides the first by the second, so every task starts at about 1;
- `distributions`: logits whose softmax is a prediction (R3F compares them under input noise);
- `predict`: one JSON-ready prediction per example (what `predict` writes);
- `make_metrics` and `update_metrics`: the task's metrics, fed from its predictions and the gold in the batch;
- `use_train_statistics`: what its family's data side computed from the training split (regression: mean, std).
A family is one head file here (registered in heads/registry.py) plus its data side in datamodules/families/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from core.batch import BackboneOutput
from core.errors import UserError
from core.metrics import TaskMetrics
from core.task_spec import TaskSpec

MASKED = -1e4  # logit of positions a head must not pick (finite, so KL terms and bf16 stay well-defined)
__all__ = ["MASKED", "BackboneOutput", "Decoding", "Head", "HeadContext", "NotStandard", "StandardHead"]
ROBERTA_LIKE = ("roberta", "xlm-roberta")  # their standard task classes name the backbone `roberta`


class NotStandard(UserError, ValueError):
    """A head that no standard Hugging Face task class reproduces; the message says why."""


@dataclass
class StandardHead:
    """A head as a standard Hugging Face task model's: `auto_class` (a transformers Auto class name), the head's
    tensors under that model's parameter names, and notes on what differs (decoding, pooler use)."""

    auto_class: str
    tensors: dict[str, torch.Tensor]
    notes: list[str]


def linear_tensors(prefix: str, layer: nn.Linear) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": layer.weight.detach().cpu(), f"{prefix}.bias": layer.bias.detach().cpu()}


def backbone_attribute(model_type: str) -> str:
    """The attribute under which a standard task class keeps its backbone (`roberta`, `bert`, ...)."""
    return "roberta" if model_type in ROBERTA_LIKE else model_type


@dataclass(frozen=True)
class HeadContext:
    """What building a head may need to know about the model."""

    hidden_size: int
    vocab_size: int
    is_encoder_decoder: bool
    dropout: float = 0.1  # inside classification-style heads
    label_smoothing: float = 0.1  # of generative heads' cross-entropy
    # classification-style heads: dense(H, H) + tanh before the output layer (RoBERTa's); false: the output layer alone
    dense: bool = True


@dataclass
class Decoding:
    """What turning a task's logits into predictions may need besides the batch."""

    spec: TaskSpec  # the task (a shared head serves several)
    tokenizer: Any  # PreTrainedTokenizerBase
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
        raise NotImplementedError

    def update_metrics(self, metrics: TaskMetrics, logits: torch.Tensor, batch: dict, rows: torch.Tensor,
                       decoding: Decoding) -> None:
        """Score this batch's predictions for the task against the gold in the batch."""
        raise NotImplementedError

    def use_train_statistics(self, statistics: dict[str, Any]) -> None:
        """What the task's family computed from its training split (core/handoff.py); default: nothing to use."""

    def decoder_targets(self, batch: dict) -> torch.Tensor | None:
        """Generative heads: (R, L) target ids the decoder reads (shifted) for their rows; None for others."""
        return None

    def standard(self, model_type: str, pooling: str) -> StandardHead:
        """This head as a standard Hugging Face task model's over an encoder of `model_type` pooled by `pooling`
        (lightning_modules/hf_export.py); NotStandard where no standard class reproduces it."""
        raise NotStandard(f"no standard Hugging Face class reproduces its {type(self).__name__}")
