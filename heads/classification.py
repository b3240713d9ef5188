"""Sentence / sentence-pair classification (cross-entropy), one head per task; its regression variant (`num_labels:
1`, MSE on normalised targets) lives here too. Data side: datamodules/families/classification.py."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.batch import BackboneOutput
from core.metrics import label_metrics, update_label_metrics
from core.task_spec import TaskSpec
from heads.base import (ROBERTA_LIKE, Head, HeadContext, NotStandard, StandardHead, backbone_attribute,
                        linear_tensors)

POOLING_WHY = {"mean": "no standard class averages the tokens",
               "pooler": "the standard classes have one dense+tanh over the first token, this head adds its own after "
                         "the backbone's pooler"}


def dense_tanh(dense: nn.Linear | None, dropout: nn.Dropout, pooled: torch.Tensor) -> torch.Tensor:
    """dropout, dense, tanh, dropout (RoBERTa's head before its output layer); without `dense`: dropout alone."""
    pooled = dropout(pooled)
    return pooled if dense is None else dropout(torch.tanh(dense(pooled)))


def needs_dense(dense: nn.Linear | None) -> None:
    """Standard classification and multiple-choice classes have a dense+tanh layer before their output layer."""
    if dense is None:
        raise NotStandard("the head has no dense+tanh layer (model.head_dense=false); the standard classes have one")


def first_token_only(pooling: str) -> None:
    """Standard classification and multiple-choice classes read the first token."""
    if pooling != "first":
        raise NotStandard(f"{pooling} pooling: {POOLING_WHY.get(pooling, 'standard classes read the first token')}")


class ClassificationHead(Head):
    """dense(H, H) + tanh + out_proj(H, C) over the pooled row; `dense`: a projection shared with other tasks' heads
    (`model.head_sharing=projection`), else the head's own; `hidden_layer=False` (`model.head_dense=false`): out_proj
    alone."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1, dense: nn.Linear | None = None,
                 hidden_layer: bool = True) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.dense = (dense if dense is not None else nn.Linear(hidden_size, hidden_size)) if hidden_layer else None
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, out: BackboneOutput, batch: dict, rows: torch.Tensor) -> torch.Tensor:  # (R_t, H) -> (R_t, C)
        return self.out_proj(dense_tanh(self.dense, self.dropout, out.pooled[rows]))

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

    def output_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return linear_tensors(prefix, self.out_proj)

    def standard(self, model_type, pooling):
        """RoBERTa's `RobertaClassificationHead` is this head (dropout, dense, tanh, dropout, out_proj over the first
        token); for BERT its dense+tanh is the model's pooler and out_proj its classifier."""
        first_token_only(pooling)
        needs_dense(self.dense)
        if model_type in ROBERTA_LIKE:
            return StandardHead("AutoModelForSequenceClassification", {
                **linear_tensors("classifier.dense", self.dense), **self.output_tensors("classifier.out_proj")}, [])
        if model_type == "bert":
            return StandardHead("AutoModelForSequenceClassification", {
                **linear_tensors(f"{backbone_attribute(model_type)}.pooler.dense", self.dense),
                **self.output_tensors("classifier")}, ["the task head's dense+tanh is stored as BERT's pooler"])
        raise NotStandard(f"{model_type}'s *ForSequenceClassification head is not dense+tanh+out_proj over the first "
                          f"token (supported: {', '.join((*ROBERTA_LIKE, 'bert'))})")


class RegressionHead(ClassificationHead):
    """One score per example (num_labels = 1). It learns the target normalised by its task's training mean and
    standard deviation, so predicting the mean costs 1 as a chance-level prediction does on every other task: the
    raw loss is the MSE in the task's own units and the chance-level loss the variance. The statistics are buffers
    (they travel with checkpoints and exports); predictions and metrics are in the original units."""

    def __init__(self, hidden_size: int, dropout: float = 0.1, dense: nn.Linear | None = None,
                 hidden_layer: bool = True) -> None:
        super().__init__(hidden_size, 1, dropout, dense, hidden_layer)
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

    def output_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The output layer with the normalisation folded in: the standard model's logit is the score."""
        std, mean = self.label_std.float().cpu(), self.label_mean.float().cpu()
        weights = linear_tensors(prefix, self.out_proj)
        return {f"{prefix}.weight": weights[f"{prefix}.weight"] * std, f"{prefix}.bias": weights[f"{prefix}.bias"] * std
                + mean}

    def standard(self, model_type, pooling):
        head = super().standard(model_type, pooling)
        head.notes.append("regression: the logit is the score in the task's units (the head's normalisation is "
                          "folded into the output layer); pipeline('text-classification') applies a sigmoid to a "
                          "single logit unless function_to_apply='none'")
        return head


def label_set(spec: TaskSpec) -> str | None:
    """What tasks share one head by under `model.head_sharing=label_set`: `3` for 3 classes without names, `3_<hash of
    the class names in id order>` where `label_map` names them (every 3-way NLI task with the same names and ids);
    None for regression (its head holds its own task's target statistics)."""
    fields = spec.fields
    if fields.is_regression:
        return None
    names = [sorted(str(raw) for raw, i in (fields.label_map or {}).items() if i == id_)
             for id_ in range(fields.num_labels)]
    if all(n in ([], [str(id_)]) for id_, n in enumerate(names)):
        return str(fields.num_labels)
    return f"{fields.num_labels}_{hashlib.sha1(json.dumps(names).encode()).hexdigest()[:8]}"


def shared_projection(context: HeadContext) -> nn.Linear:
    """The dense(H, H) every classification head of the model shares under `model.head_sharing=projection`."""
    return nn.Linear(context.hidden_size, context.hidden_size)


def build(spec: TaskSpec, context: HeadContext, dense: nn.Linear | None = None) -> Head:
    """dense: the shared projection (`shared_projection`), else each head has its own."""
    if spec.fields.is_regression:
        return RegressionHead(context.hidden_size, context.dropout, dense, context.dense)
    return ClassificationHead(context.hidden_size, spec.fields.num_labels, context.dropout, dense, context.dense)
