"""Per-task validation metrics (torchmetrics, so they are exact across DDP ranks)."""

from __future__ import annotations

import collections
import functools
import re
import string

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric, PearsonCorrCoef, SpearmanCorrCoef
from torchmetrics.classification import BinaryF1Score, MatthewsCorrCoef, MulticlassF1Score

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


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


def split_sentences(text: str) -> list[str]:
    """Sentences for ROUGE-Lsum: a break at every line break and after `.`, `!` or `?` followed by whitespace.

    Stands in for nltk's punkt (`nltk.sent_tokenize`, which Hugging Face's summarization example uses and whose data
    is a separate download); unlike punkt it also breaks after abbreviations ("U.S. officials")."""
    return [s for s in re.split(r"\n|(?<=[.!?])\s+", text) if s.strip()]


@functools.cache
def _stemmer():
    from nltk.stem.porter import PorterStemmer  # the stemmer `rouge_score` uses; needs no nltk data download
    return functools.lru_cache(maxsize=2 ** 16)(PorterStemmer().stem)


def rouge_tokens(text: str) -> list[str]:
    """`rouge_score`'s tokenizer with `use_stemmer=True`: lower case, runs of [a-z0-9], Porter stems of words > 3."""
    stem = _stemmer()
    return [stem(t) if len(t) > 3 else t for t in re.sub(r"[^a-z0-9]+", " ", text.lower()).split()]


def _fmeasure(hits: int, pred_len: int, ref_len: int) -> float:
    precision, recall = hits / max(pred_len, 1), hits / max(ref_len, 1)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _lcs_table(ref: list[str], pred: list[str]) -> list[list[int]]:
    table = [[0] * (len(pred) + 1) for _ in range(len(ref) + 1)]
    for i in range(1, len(ref) + 1):
        for j in range(1, len(pred) + 1):
            same = ref[i - 1] == pred[j - 1]
            table[i][j] = table[i - 1][j - 1] + 1 if same else max(table[i - 1][j], table[i][j - 1])
    return table


def _lcs_indices(ref: list[str], pred: list[str]) -> list[int]:
    """Positions in `ref` of one longest common subsequence (`rouge_score`'s backtracking and tie-break)."""
    table, i, j, found = _lcs_table(ref, pred), len(ref), len(pred), []
    while i > 0 and j > 0:
        if ref[i - 1] == pred[j - 1]:
            found.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return found


def rouge_fmeasure(key: str, prediction: str, reference: str) -> float:
    """One ROUGE F-measure, equal to `rouge_score.rouge_scorer.RougeScorer([key], use_stemmer=True)` on the same
    pair; for `rougeLsum` both texts are first split by `split_sentences` (summary-level union LCS, ROUGE 1.5.5)."""
    if key == "rougeLsum":
        refs = [t for t in map(rouge_tokens, split_sentences(reference)) if t]
        preds = [t for t in map(rouge_tokens, split_sentences(prediction)) if t]
        ref_left = collections.Counter(t for s in refs for t in s)
        pred_left = collections.Counter(t for s in preds for t in s)
        hits = 0
        for ref in refs:
            for token in (ref[i] for i in sorted(set().union(*(_lcs_indices(ref, p) for p in preds)))):
                if ref_left[token] > 0 and pred_left[token] > 0:  # a token is counted at most as often as it occurs
                    hits, ref_left[token], pred_left[token] = hits + 1, ref_left[token] - 1, pred_left[token] - 1
        return _fmeasure(hits, sum(map(len, preds)), sum(map(len, refs)))
    ref, pred = rouge_tokens(reference), rouge_tokens(prediction)
    if key == "rougeL":
        return _fmeasure(_lcs_table(ref, pred)[-1][-1], len(pred), len(ref))
    n = int(key[len("rouge"):])
    ref_grams = collections.Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
    pred_grams = collections.Counter(tuple(pred[i:i + n]) for i in range(len(pred) - n + 1))
    return _fmeasure(sum((ref_grams & pred_grams).values()), sum(pred_grams.values()), sum(ref_grams.values()))


class Rouge(Metric):
    """Mean ROUGE F-measure over examples (`rouge1`, `rouge2`, `rougeL`, `rougeLsum`), with stemming, as papers
    report it. Sum and count states, so the mean over all DDP ranks is the mean over all examples."""

    full_state_update = False

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: list[str], references: list[str]) -> None:
        self.total += sum(rouge_fmeasure(self.key, p, r) for p, r in zip(predictions, references))
        self.count += len(predictions)

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


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
    if name in ROUGE_KEYS:
        return Rouge(name)
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
            values[name] = metric.compute()
        return values

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
