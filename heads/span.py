"""Extractive QA: start/end logits over each row's input positions; answers decoded per example across its windows,
with a maximum answer length and SQuAD v2's no-answer option (the `<s>`/`[CLS]` position). Data side:
datamodules/families/span.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.batch import BackboneOutput
from core.metrics import SquadScore, TaskMetrics
from core.task_spec import TaskSpec
from heads.base import MASKED, Head, HeadContext, StandardHead, linear_tensors


class SpanHead(Head):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(self, out: BackboneOutput, batch: dict, rows: torch.Tensor) -> torch.Tensor:  # -> (R_t, 2, T)
        logits = self.qa_outputs(out.hidden[rows]).float().transpose(1, 2)
        return logits.masked_fill(batch["attention_mask"][rows, None, :] == 0, MASKED)

    def example_losses(self, logits, batch, rows):
        start = F.cross_entropy(logits[:, 0], batch["start_positions"][rows], reduction="none")
        end = F.cross_entropy(logits[:, 1], batch["end_positions"][rows], reduction="none")
        return (start + end) / 2, batch["attention_mask"][rows].sum(-1).float().log()  # chance: over the positions

    def distributions(self, logits, batch, rows):
        return [logits[:, 0], logits[:, 1]]

    def predict(self, logits, batch, rows, decoding):
        """The answer text per example (all its windows are in the batch; "" = no answer)."""
        picked = rows.tolist()
        answers = decode_answers(logits, [batch["example_index"][r] for r in picked],
                                 [batch["offsets"][r] for r in picked], [batch["contexts"][r] for r in picked],
                                 decoding.spec.fields.allow_no_answer, decoding.max_answer_length)
        return list(answers.values())

    def standard(self, model_type, pooling):
        """`*ForQuestionAnswering`'s `qa_outputs` over the token states."""
        return StandardHead("AutoModelForQuestionAnswering", linear_tensors("qa_outputs", self.qa_outputs),
                            ["start/end logits equal on real tokens; answers are decoded by the pipeline's own "
                             "post-processing (this project's: max_answer_length, no-answer at the first token)"])

    def make_metrics(self, spec):
        return TaskMetrics({name: SquadScore(name) for name in spec.metrics})

    def update_metrics(self, metrics, logits, batch, rows, decoding):
        golds = {batch["example_index"][r]: batch["gold_answers"][r] for r in rows.tolist()}
        predictions = self.predict(logits, batch, rows, decoding)
        for metric in metrics.metrics.values():
            metric.update(predictions, list(golds.values()))


def build(spec: TaskSpec, context: HeadContext) -> Head:
    return SpanHead(context.hidden_size)


def decode_answers(logits: torch.Tensor, example_ids: list[int], offsets: list, contexts: list[str],
                   allow_no_answer: bool, max_answer_length: int = 30, top_k: int = 20) -> dict[int, str]:
    """Best answer text per example over all its windows (`run_qa.py` post-processing)."""
    best: dict[int, tuple[float, str]] = {}
    null: dict[int, float] = {}
    for start_logits, end_logits, example, window, context in zip(
            logits[:, 0].tolist(), logits[:, 1].tolist(), example_ids, offsets, contexts):
        null[example] = min(null.get(example, float("inf")), start_logits[0] + end_logits[0])
        starts = sorted(range(len(window)), key=lambda i: -start_logits[i])[:top_k]
        ends = sorted(range(len(window)), key=lambda i: -end_logits[i])[:top_k]
        for s in starts:
            for e in ends:
                if window[s] is None or window[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = start_logits[s] + end_logits[e]
                if score > best.get(example, (float("-inf"), ""))[0]:
                    best[example] = (score, context[window[s][0]:window[e][1]])
    answers = {}
    for example in null:
        score, text = best.get(example, (float("-inf"), ""))
        answers[example] = "" if allow_no_answer and null[example] > score else text
    return answers
