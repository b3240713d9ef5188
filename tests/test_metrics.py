"""Metrics and answer decoding."""

import torch

from heads.base import MASKED
from heads.span import decode_answers
from lightning_modules.metrics import TaskMetrics, squad_scores


def test_squad_scores_normalise_and_handle_no_answer():
    assert squad_scores("The Eiffel Tower!", ["eiffel tower"]) == (1.0, 1.0)
    em, f1 = squad_scores("tower in paris", ["eiffel tower"])
    assert em == 0.0 and abs(f1 - 0.4) < 1e-9
    assert squad_scores("", []) == (1.0, 1.0) and squad_scores("paris", []) == (0.0, 0.0)


def test_decode_picks_the_best_span_across_windows_or_no_answer():
    logits = torch.full((2, 2, 6), MASKED)
    logits[:, :, 0] = 0.0  # the no-answer score of both windows: 0
    offsets = [[None, None, [0, 3], [4, 9], [10, 12], None], [None, None, [4, 9], [10, 12], [13, 18], None]]
    context = "the quick is brown"
    logits[1, 0, 3], logits[1, 1, 4] = 5.0, 4.0  # window 2: "is brown"
    answers = decode_answers(logits, [7, 7], offsets, [context, context], allow_no_answer=True)
    assert answers == {7: "is brown"}
    logits[1, 0, 3], logits[1, 1, 4] = -1.0, -1.0
    assert decode_answers(logits, [7, 7], offsets, [context] * 2, allow_no_answer=True) == {7: ""}
    assert decode_answers(logits, [7, 7], offsets, [context] * 2, allow_no_answer=False)[7] != ""


def test_task_metrics_compute_each_requested_metric():
    metrics = TaskMetrics(["accuracy", "f1", "matthews_corrcoef"], num_classes=2)
    metrics.update_labels(torch.tensor([1, 0, 1, 1]), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    values = metrics.compute()
    assert float(values["accuracy"]) == 0.75 and abs(float(values["f1"]) - 0.8) < 1e-6
    rouge = TaskMetrics(["rouge1", "rougeL"])
    rouge.update_texts(["the cat sat"], ["the cat sat"])
    assert float(rouge.compute()["rouge1"]) == 1.0
