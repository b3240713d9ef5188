"""Span answers given as text only (catalogue field `locate_answers`): find each answer string in the context and
write the SQuAD-style `{text, answer_start}` column that the span family reads. ReCoRD's answers are passage entities
given as strings; datasets that ship only answer strings (MRQA's `answers`, TriviaQA-style sets) fit the same way."""

from __future__ import annotations

import re

from datasets import Dataset

from datamodules.catalogue import TaskSpec


def find_answer(context: str, answer: str) -> int:
    """Character offset of the first whole-word occurrence of `answer` in `context` (else the first occurrence
    anywhere, else -1): "Ed" is found as a word, not inside "Edward"."""
    if not answer:
        return -1
    match = re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", context)
    return match.start() if match else context.find(answer)


def locate_answers(dataset: Dataset, spec: TaskSpec) -> Dataset:
    """Replace the answer-string list column `spec.answers` by `{text, answer_start}` located in the context
    (`spec.inputs[1]`); duplicates are dropped, and so are strings not in the context (the validation step then
    names any example left with no answer). Any other task unchanged."""
    if not spec.locate_answers:
        return dataset

    def locate(batch: dict[str, list]) -> dict[str, list]:
        located = []
        for answers, context in zip(batch[spec.answers], batch[spec.inputs[1]]):
            found = [(a, find_answer(context, a)) for a in dict.fromkeys(answers or [])]
            found = [(a, start) for a, start in found if start >= 0]
            located.append({"text": [a for a, _ in found], "answer_start": [start for _, start in found]})
        return {spec.answers: located}

    return dataset.map(locate, batched=True, desc=f"locate answers of {spec.name}")
