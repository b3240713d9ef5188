"""Per-task validation metrics (torchmetrics, so they are exact across DDP ranks)."""

from __future__ import annotations

import collections
import re
import string

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric, PearsonCorrCoef, SpearmanCorrCoef
from torchmetrics.classification import BinaryF1Score, MatthewsCorrCoef, MulticlassF1Score
from torchmetrics.text import ROUGEScore


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_scores(prediction: str, golds: list[str]) -> tuple[float, float]:
    """(exact match, token F1) against the best gold answer; no gold answers means the answer is ''."""
    golds = golds or [""]
    pred_tokens = normalize_answer(prediction).split()
    em, f1 = 0.0, 0.0
    for gold in golds:
        gold_tokens = normalize_answer(gold).split()
        em = max(em, float(pred_tokens == gold_tokens))
        if not pred_tokens or not gold_tokens:
            f1 = max(f1, float(pred_tokens == gold_tokens))
            continue
        common = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
        if common:
            precision, recall = common / len(pred_tokens), common / len(gold_tokens)
            f1 = max(f1, 2 * precision * recall / (precision + recall))
    return em, f1


def _make(name: str, num_classes: int) -> Metric:
    if name in ("accuracy", "exact_match", "squad_f1"):
        return MeanMetric()
    if name == "f1":
        return BinaryF1Score() if num_classes == 2 else MulticlassF1Score(num_classes, average="macro")
    if name == "matthews_corrcoef":
        return MatthewsCorrCoef(task="binary") if num_classes == 2 else MatthewsCorrCoef("multiclass",
                                                                                         num_classes=num_classes)
    if name == "pearson":
        return PearsonCorrCoef()
    if name == "spearman":
        return SpearmanCorrCoef()
    if name in ("rouge1", "rouge2", "rougeL"):
        return ROUGEScore(rouge_keys=(name,))
    raise ValueError(f"unknown metric '{name}'")


class TaskMetrics(nn.Module):
    """The metrics one task's catalogue entry asks for; the first is the task's primary metric (`val/score`)."""

    def __init__(self, names: list[str], num_classes: int = 2) -> None:
        super().__init__()
        self.names = list(names)
        self.metrics = nn.ModuleDict({n: _make(n, num_classes) for n in names})

    def update_labels(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        for name, metric in self.metrics.items():
            if name == "accuracy":
                metric.update((preds == targets.to(preds.dtype)).float())
            elif name in ("pearson", "spearman"):
                metric.update(preds.float(), targets.float())
            else:
                metric.update(preds.long(), targets.long())

    def update_answers(self, predictions: list[str], golds: list[list[str]]) -> None:
        scores = torch.tensor([squad_scores(p, g) for p, g in zip(predictions, golds)]).reshape(-1, 2)
        for name, column in (("exact_match", 0), ("squad_f1", 1)):
            if name in self.metrics:
                self.metrics[name].update(scores[:, column])

    def update_texts(self, predictions: list[str], references: list[str]) -> None:
        for metric in self.metrics.values():
            metric.update(predictions, references)

    def compute(self) -> dict[str, torch.Tensor]:
        values = {}
        for name, metric in self.metrics.items():
            value = metric.compute()
            values[name] = value[f"{name}_fmeasure"] if isinstance(value, dict) else value
        return values

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
