"""Metrics (library-backed, exact across ranks) and answer decoding."""

import random

import pytest
import torch
from seqeval.metrics import f1_score, precision_score, recall_score

from core.metrics import EntityScore, Rouge, SquadScore, TaskMetrics, label_metrics, split_sentences, \
    update_label_metrics
from heads.base import MASKED
from heads.span import decode_answers

# A two-sentence summary pair where stemming matters (arrest/arrested, charges/charged).
PREDICTION = "Police arrest two men in Leeds on Tuesday. The men face charges of robbing a jewellery shop!"
REFERENCE = ("Two men have been arrested after a jewellery shop robbery in Leeds.\n"
             "Both were charged on Tuesday and are due in court.")
# rouge_score 0.1.2, RougeScorer([...], use_stemmer=True), sentences joined by newlines before scoring (as Hugging
# Face's summarization example does). Without stemming rouge1 would be 18/39; rougeL without sentences 12/39.
EXPECTED = {"rouge1": 22 / 39, "rouge2": 10 / 37, "rougeL": 12 / 39, "rougeLsum": 20 / 39}


def squad(prediction: str, golds: list[str]) -> tuple[float, float]:
    em, f1 = SquadScore("exact_match"), SquadScore("squad_f1")
    for metric in (em, f1):
        metric.update([prediction], [golds])
    return float(em.compute()), float(f1.compute())


def test_squad_scores_normalise_and_handle_no_answer():
    assert squad("The Eiffel Tower!", ["eiffel tower"]) == (1.0, 1.0)
    em, f1 = squad("tower in paris", ["eiffel tower"])
    assert em == 0.0 and abs(f1 - 0.4) < 1e-6
    assert squad("", []) == (1.0, 1.0) and squad("paris", []) == (0.0, 0.0)


def test_answerable_squad_scores_leave_out_the_unanswerable_questions():
    predictions, golds = ["eiffel tower", "", "paris", "", ""], [["Eiffel Tower"], [], [], ["the Louvre"], []]
    scores = {}
    for name in ("exact_match", "answerable_exact_match", "answerable_f1"):
        metric = SquadScore(name)
        metric.update(predictions, golds)
        scores[name] = float(metric.compute())
    # all five: right, right abstention, wrong answer, wrong abstention, right abstention; answerable: two of them
    assert scores == pytest.approx({"exact_match": 0.6, "answerable_exact_match": 0.5, "answerable_f1": 0.5})
    abstaining = SquadScore("answerable_f1")
    abstaining.update(["", ""], [[], ["x"]])  # abstaining everywhere scores nothing on the answerable ones
    assert float(abstaining.compute()) == 0.0


def test_squad_score_merges_exactly_across_ranks():
    pairs = [("Denver Broncos", ["Denver Broncos", "the Broncos"]), ("a cat", ["the dog"]), ("", []), ("x y", ["y"])]
    whole, rank0, rank1 = SquadScore("squad_f1"), SquadScore("squad_f1"), SquadScore("squad_f1")
    whole.update(*map(list, zip(*pairs)))
    rank0.update(*map(list, zip(*pairs[:2])))
    rank1.update(*map(list, zip(*pairs[2:])))
    rank0.squad.merge_state(rank1.squad)  # what DDP's sum-reduction of the states does
    assert float(rank0.compute()) == pytest.approx(float(whole.compute())) == pytest.approx((1 + 0 + 1 + 2 / 3) / 4)


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
    metrics = label_metrics(["accuracy", "f1", "matthews_corrcoef"], num_classes=2)
    update_label_metrics(metrics, torch.tensor([1, 0, 1, 1]), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    values = metrics.compute()
    assert list(values) == ["accuracy", "f1", "matthews_corrcoef"]
    assert float(values["accuracy"]) == 0.75 and abs(float(values["f1"]) - 0.8) < 1e-6


def test_rouge_is_rouge_score_with_stemming_and_sentences_on_lines():
    assert split_sentences(PREDICTION) == ["Police arrest two men in Leeds on Tuesday.",
                                           "The men face charges of robbing a jewellery shop!"]
    for key, value in EXPECTED.items():
        rouge = Rouge(key)
        rouge.update([PREDICTION], [REFERENCE])
        assert float(rouge.compute()) == pytest.approx(value, abs=1e-6)


def test_rouge_is_a_mean_over_examples_that_merges_exactly_across_ranks():
    pairs = [(PREDICTION, REFERENCE), ("the cat sat", "the cat sat"), ("", "a reference"), ("words", "")]
    whole, rank0, rank1 = Rouge("rougeLsum"), Rouge("rougeLsum"), Rouge("rougeLsum")
    whole.update(*map(list, zip(*pairs)))
    rank0.update(*map(list, zip(*pairs[:1])))
    rank1.update(*map(list, zip(*pairs[1:])))
    rank0.merge_state(rank1)  # what DDP's sum-reduction of the states does
    expected = (EXPECTED["rougeLsum"] + 1.0) / 4
    assert float(whole.compute()) == pytest.approx(expected) and float(rank0.compute()) == float(whole.compute())
    metrics = TaskMetrics({key: Rouge(key) for key in EXPECTED})
    for metric in metrics.metrics.values():
        metric.update([PREDICTION], [REFERENCE])
    assert {k: float(v) for k, v in metrics.compute().items()} == pytest.approx(EXPECTED, abs=1e-6)


def random_tags(rng: random.Random, length: int) -> list[str]:
    tags, previous = [], "O"
    for _ in range(length):
        kind = rng.choice(["O", "B", "I"])
        entity = previous[2:] if kind == "I" and previous != "O" and rng.random() < 0.8 else rng.choice("PLO")
        tags.append("O" if kind == "O" else f"{kind}-{entity}")
        previous = tags[-1]
    return tags


def test_entity_scores_equal_seqeval_and_merge_exactly_across_ranks():
    rng = random.Random(0)
    golds = [random_tags(rng, rng.randint(1, 12)) for _ in range(300)]
    preds = [[t if rng.random() < 0.7 else rng.choice(["O", "B-P", "I-P", "B-L", "I-O"]) for t in g] for g in golds]
    for key, reference in (("entity_f1", f1_score), ("entity_precision", precision_score),
                           ("entity_recall", recall_score)):
        whole, rank0, rank1 = EntityScore(key), EntityScore(key), EntityScore(key)
        whole.update(preds, golds)
        rank0.update(preds[:120], golds[:120])
        rank1.update(preds[120:], golds[120:])
        rank0.merge_state(rank1)
        assert float(whole.compute()) == pytest.approx(reference(golds, preds), abs=1e-6)
        assert float(rank0.compute()) == float(whole.compute())
