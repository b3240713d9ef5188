"""Metrics and answer decoding."""

import pytest
import torch

from heads.base import MASKED
from heads.span import decode_answers
from lightning_modules.metrics import Rouge, TaskMetrics, rouge_fmeasure, split_sentences, squad_scores

# A two-sentence summary pair where stemming matters (arrest/arrested, charges/charged).
PREDICTION = "Police arrest two men in Leeds on Tuesday. The men face charges of robbing a jewellery shop!"
REFERENCE = ("Two men have been arrested after a jewellery shop robbery in Leeds.\n"
             "Both were charged on Tuesday and are due in court.")
# rouge_score 0.1.2, RougeScorer([...], use_stemmer=True), sentences joined by newlines before scoring (as Hugging
# Face's summarization example does). Without stemming rouge1 would be 18/39; rougeL without sentences 12/39.
EXPECTED = {"rouge1": 22 / 39, "rouge2": 10 / 37, "rougeL": 12 / 39, "rougeLsum": 20 / 39}


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


def test_rouge_equals_the_rouge_score_package_with_stemming():
    assert split_sentences(PREDICTION) == ["Police arrest two men in Leeds on Tuesday.",
                                           "The men face charges of robbing a jewellery shop!"]
    for key, value in EXPECTED.items():
        assert rouge_fmeasure(key, PREDICTION, REFERENCE) == pytest.approx(value, abs=1e-12)
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")  # requirements-test.txt
    scorer = rouge_scorer.RougeScorer(list(EXPECTED), use_stemmer=True)
    reference = scorer.score("\n".join(split_sentences(REFERENCE)), "\n".join(split_sentences(PREDICTION)))
    assert {k: v.fmeasure for k, v in reference.items()} == pytest.approx(EXPECTED, abs=1e-12)


def test_rouge_is_a_mean_over_examples_that_merges_exactly_across_ranks():
    pairs = [(PREDICTION, REFERENCE), ("the cat sat", "the cat sat"), ("", "a reference"), ("words", "")]
    whole, rank0, rank1 = Rouge("rougeLsum"), Rouge("rougeLsum"), Rouge("rougeLsum")
    whole.update(*map(list, zip(*pairs)))
    rank0.update(*map(list, zip(*pairs[:1])))
    rank1.update(*map(list, zip(*pairs[1:])))
    rank0.merge_state(rank1)  # what DDP's sum-reduction of the states does
    expected = (EXPECTED["rougeLsum"] + 1.0) / 4
    assert float(whole.compute()) == pytest.approx(expected) and float(rank0.compute()) == float(whole.compute())
    metrics = TaskMetrics(["rouge1", "rouge2", "rougeLsum", "rougeL"])
    metrics.update_texts([PREDICTION], [REFERENCE])
    assert {k: float(v) for k, v in metrics.compute().items()} == pytest.approx(EXPECTED, abs=1e-6)
