"""Metrics shared by the heads: a task's metric container and the library-backed metrics whose states reduce exactly
across DDP ranks (sums and counts). ROUGE is `rouge_score`'s (the reference Hugging Face's summarization example and
`evaluate` use), SQuAD EM/F1 torchmetrics' `SQuAD`, entity-level F1 seqeval's entity extraction (IOB2)."""

from __future__ import annotations

import re

import torch
from rouge_score import rouge_scorer
from seqeval.metrics.sequence_labeling import get_entities
from torch import nn
from torchmetrics import MeanMetric, Metric, PearsonCorrCoef, SpearmanCorrCoef
from torchmetrics.classification import BinaryF1Score, MatthewsCorrCoef, MulticlassF1Score
from torchmetrics.text import SQuAD

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# SquadScore's metric names -> the key of torchmetrics' SQuAD result
SQUAD_KEYS = {"exact_match": "exact_match", "squad_f1": "f1", "answerable_exact_match": "exact_match",
              "answerable_f1": "f1"}


class TaskMetrics(nn.Module):
    """The metrics one task's catalogue entry asks for, by name; the first is the task's primary metric
    (`val/score`). The task's head builds them and feeds them."""

    def __init__(self, metrics: dict[str, Metric]) -> None:
        super().__init__()
        self.names = list(metrics)
        self.metrics = nn.ModuleDict(metrics)

    def items(self):
        return self.metrics.items()

    def __contains__(self, name: str) -> bool:
        return name in self.metrics

    def __getitem__(self, name: str) -> Metric:
        return self.metrics[name]

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: metric.compute() for name, metric in self.metrics.items()}

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()


def label_metrics(names: list[str], num_classes: int) -> TaskMetrics:
    """Metrics over predicted vs gold labels (classification and multiple choice)."""
    binary = num_classes == 2
    makers = {"accuracy": MeanMetric,
              "f1": lambda: BinaryF1Score() if binary else MulticlassF1Score(num_classes, average="macro"),
              "matthews_corrcoef": lambda: MatthewsCorrCoef("binary") if binary
              else MatthewsCorrCoef("multiclass", num_classes=num_classes),
              "pearson": PearsonCorrCoef, "spearman": SpearmanCorrCoef}
    return TaskMetrics({name: makers[name]() for name in names})


def update_label_metrics(metrics: TaskMetrics, preds: torch.Tensor, targets: torch.Tensor) -> None:
    for name, metric in metrics.items():
        if name == "accuracy":
            metric.update((preds == targets.to(preds.dtype)).float())
        elif name in ("pearson", "spearman"):
            metric.update(preds.float(), targets.float())
        else:
            metric.update(preds.long(), targets.long())


class SumMetric(Metric):
    """A mean over examples kept as a float64 sum and a count (exact across ranks)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def add(self, total: float, count: int) -> None:
        self.total += total
        self.count += count

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


def split_sentences(text: str) -> list[str]:
    """Sentences for ROUGE-Lsum: a break at every line break and after `.`, `!` or `?` followed by whitespace.

    Stands in for nltk's punkt (`nltk.sent_tokenize`, which Hugging Face's summarization example uses and whose data
    is a separate download); unlike punkt it also breaks after abbreviations ("U.S. officials")."""
    return [s for s in re.split(r"\n|(?<=[.!?])\s+", text) if s.strip()]


class Rouge(SumMetric):
    """Mean ROUGE F-measure over examples (`rouge1`, `rouge2`, `rougeL`, `rougeLsum`) with Porter stemming, computed
    by `rouge_score`; for `rougeLsum` both texts are first split into one sentence per line (`split_sentences`)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.scorer = rouge_scorer.RougeScorer([key], use_stemmer=True)

    def update(self, predictions: list[str], references: list[str]) -> None:
        lines = (lambda t: "\n".join(split_sentences(t))) if self.key == "rougeLsum" else (lambda t: t)
        scores = [self.scorer.score(lines(r), lines(p))[self.key].fmeasure for p, r in zip(predictions, references)]
        self.add(sum(scores), len(scores))


class SquadScore(Metric):
    """`exact_match` or `squad_f1` in [0, 1]: torchmetrics' `SQuAD` (the official v1.1 script's normalisation), with
    no gold answer meaning the answer is "" (the official v2 script's rule). `answerable_exact_match` and
    `answerable_f1` score only the questions that have a gold answer (the v2 script's `HasAns_exact` / `HasAns_f1`):
    how well the answers are found, apart from how often the model abstains (NaN on a set with no answerable
    question)."""

    full_state_update = False

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = SQUAD_KEYS[key]
        self.answerable_only = key.startswith("answerable_")
        self.squad = SQuAD()

    def update(self, predictions: list[str], golds: list[list[str]]) -> None:
        if self.answerable_only:
            predictions, golds = [p for p, g in zip(predictions, golds) if g], [g for g in golds if g]
        ids = [str(i) for i in range(len(predictions))]
        self.squad.update([{"prediction_text": p, "id": i} for p, i in zip(predictions, ids)],
                          [{"answers": {"text": list(g) or [""], "answer_start": [0] * max(1, len(g))}, "id": i}
                           for g, i in zip(golds, ids)])

    def compute(self) -> torch.Tensor:
        return (self.squad.compute()[self.key] / 100).float()

    def reset(self) -> None:
        super().reset()
        self.squad.reset()


class EntityScore(Metric):
    """Entity-level (micro) precision, recall or F1 over IOB2 tag sequences, as seqeval's `classification_report`:
    entities from seqeval's `get_entities`, counts summed over examples and ranks (exact across ranks)."""

    full_state_update = False

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key  # entity_precision | entity_recall | entity_f1
        for name in ("correct", "predicted", "gold"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: list[list[str]], golds: list[list[str]]) -> None:
        for pred, gold in zip(predictions, golds):
            pred_entities, gold_entities = set(get_entities(pred)), set(get_entities(gold))
            self.correct += len(pred_entities & gold_entities)
            self.predicted += len(pred_entities)
            self.gold += len(gold_entities)

    def compute(self) -> torch.Tensor:
        precision = self.correct / self.predicted.clamp(min=1)
        recall = self.correct / self.gold.clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else precision * 0
        return {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1}[self.key].float()
