"""Extractive QA (span), data side: (question, context) pairs with SQuAD-style answers `{text: [...],
answer_start: [...]}`; long contexts become several windows (rows) with stride, as transformers' run_qa.py does.
Entries whose answers are strings only (ReCoRD, MRQA-style sets) set `locate_answers`: each string is found in the
context to make the SQuAD-style column. Head: heads/span.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from datasets import Dataset, Value

from core.batch import SOURCE_INDEX, BatchKey
from core.errors import DataValidationError
from core.task_spec import BOOL, COLUMN, TaskSpec
from datamodules.families.base import DataFamily, EntryProblem, column, encoded


@dataclass
class SpanFields:
    answers: str  # SQuAD-style {text, answer_start} column
    allow_no_answer: bool = False  # SQuAD v2: unanswerable questions allowed
    # `answers` holds answer strings only (ReCoRD): each is found in the context to make the SQuAD-style column;
    # `answers` and the context input are then top-level columns
    locate_answers: bool = False

    def columns(self) -> list[str]:
        return [self.answers]


def find_answer(context: str, answer: str) -> int:
    """Character offset of the first whole-word occurrence of `answer` in `context` (else the first occurrence
    anywhere, else -1): "Ed" is found as a word, not inside "Edward"."""
    if not answer:
        return -1
    match = re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", context)
    return match.start() if match else context.find(answer)


def answer_tokens(offsets: list, sequence_ids: list, answers: dict) -> tuple[int, int]:
    """Token span of the first answer inside this window's context, or (0, 0) when it is not fully inside."""
    if not answers["text"]:
        return 0, 0
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    context = [i for i, s in enumerate(sequence_ids) if s == 1]
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return 0, 0
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def answers_bad(context: Any, answers: Any, allow_no_answer: bool) -> bool:
    if not isinstance(answers, dict) or not isinstance(context, str):
        return True
    texts, starts = answers.get("text") or [], answers.get("answer_start") or []
    if not isinstance(texts, list) or not isinstance(starts, list):  # scalars instead of lists
        return True
    if not texts:
        return not allow_no_answer
    return len(texts) != len(starts) or any(not isinstance(t, str) or isinstance(s, bool) or not isinstance(s, int)
                                            or context[s:s + len(t)] != t for t, s in zip(texts, starts))


def scalar_answers(features: Any, name: str, locate: bool) -> str | None:
    """What of the (possibly dotted) answers column `name` holds one value per example where lists belong (the
    column's type says: a JSON file with `{"text": "Denver", "answer_start": 12}` loads as a struct of scalars), or
    None."""
    feature = features
    for key in name.split("."):
        feature = feature.get(key) if isinstance(feature, dict) else None
    if locate:
        return "one string per example" if isinstance(feature, Value) else None
    scalars = [k for k in ("text", "answer_start") if isinstance(feature, dict) and isinstance(feature.get(k), Value)]
    return f"one {' and one '.join(scalars)} per example" if scalars else None


class Span(DataFamily):
    name = "span"
    Fields = SpanFields
    field_types = {"answers": COLUMN, "allow_no_answer": BOOL, "locate_answers": BOOL}
    input_counts = (2,)
    metrics = ("exact_match", "squad_f1", "answerable_exact_match", "answerable_f1")  # core.metrics.SQUAD_KEYS
    batch_keys = (BatchKey("start_positions", "start_positions", "row_long"),
                  BatchKey("end_positions", "end_positions", "row_long"),
                  BatchKey("offsets", "offsets", "list"), BatchKey("context", "contexts", "list"),
                  BatchKey("gold_answers", "gold_answers", "list"), BatchKey(SOURCE_INDEX, "example_index", "list"))
    problem = ("an answer that is not at its answer_start in the context, answers that are not lists, or no answer "
               "where allow_no_answer is false")

    def default_metrics(self, fields: SpanFields) -> list[str]:
        return ["exact_match", "squad_f1"]

    def check_entry(self, spec: TaskSpec) -> None:
        if spec.fields.locate_answers and "." in f"{spec.fields.answers}{spec.inputs[-1]}":
            raise EntryProblem("locate_answers", "field 'locate_answers' needs a top-level 'answers' column and a "
                                                 "top-level context column (the last of 'inputs')")

    def target_checks(self, spec: TaskSpec) -> dict:
        fields = spec.fields

        def bad(batch: dict[str, list]) -> list[bool]:
            return [answers_bad(c, a, fields.allow_no_answer)
                    for c, a in zip(column(batch, spec.inputs[1]), column(batch, fields.answers))]
        return {fields.answers: bad}

    def prepare_raw(self, spec: TaskSpec, dataset: Dataset, split: str) -> Dataset:
        """`locate_answers`: replace the answer-string list column by `{text, answer_start}` located in the context;
        duplicates are dropped, and so are strings not in the context (the checks then name any example left with no
        answer). Answers given as scalars instead of lists are named here, from the column's type."""
        fields = spec.fields
        scalars = scalar_answers(dataset.features, fields.answers, fields.locate_answers)
        if scalars:
            lists = '["Denver", "Boulder"]' if fields.locate_answers else '{"text": ["Denver"], "answer_start": [12]}'
            raise DataValidationError(f"task '{spec.name}', split '{split}': field '{fields.answers}' holds {scalars}; "
                                      f"it takes lists, e.g. {lists}")
        if not fields.locate_answers:
            return dataset
        answers_column, context_column = spec.fields.answers, spec.inputs[1]

        def locate(batch: dict[str, list]) -> dict[str, list]:
            located = []
            for answers, context in zip(batch[answers_column], batch[context_column]):
                found = [(a, find_answer(context, a)) for a in dict.fromkeys(answers or [])]
                found = [(a, start) for a, start in found if start >= 0]
                located.append({"text": [a for a, _ in found], "answer_start": [start for _, start in found]})
            return {answers_column: located}

        return dataset.map(locate, batched=True, desc=f"locate answers of {spec.name}")

    def preprocess(self, spec, tok, lengths, for_eval):
        """Evaluation rows remember their example (`example_index`, from `with_indices=True`): the evaluation sampler
        keeps them together."""
        def preprocess(examples: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
            questions = [q.lstrip() for q in column(examples, spec.inputs[0])]
            contexts, answers = column(examples, spec.inputs[1]), column(examples, spec.fields.answers)
            try:
                enc = tok(questions, contexts, truncation="only_second", max_length=lengths.max_length,
                          stride=lengths.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
            except Exception as error:  # noqa: BLE001 - the tokenizer's own error (a Rust panic type) has no class
                longest = max(len(tok(q)["input_ids"]) for q in questions)
                raise DataValidationError(
                    f"task '{spec.name}': a question of {longest} tokens leaves no room for its context windows with "
                    f"data.max_length {lengths.max_length} and data.doc_stride {lengths.doc_stride}; raise "
                    f"data.max_length or lower data.doc_stride ({str(error).splitlines()[0] if str(error) else ''})"
                ) from error
            out: dict[str, list] = {**encoded(enc), "length": [len(x) for x in enc["input_ids"]],
                                    "start_positions": [], "end_positions": []}
            if for_eval:
                out |= {SOURCE_INDEX: [], "offsets": [], "context": [], "gold_answers": []}
            for i, offsets in enumerate(enc["offset_mapping"]):
                example = enc["overflow_to_sample_mapping"][i]
                sequence_ids = enc.sequence_ids(i)
                start, end = answer_tokens(offsets, sequence_ids, answers[example])
                out["start_positions"].append(start)
                out["end_positions"].append(end)
                if for_eval:
                    out[SOURCE_INDEX].append(indices[example] if indices is not None else example)
                    out["offsets"].append([list(o) if s == 1 else None for o, s in zip(offsets, sequence_ids)])
                    out["context"].append(contexts[example])
                    out["gold_answers"].append(list(answers[example]["text"]))
            return out
        return preprocess

    def gold_column(self, spec: TaskSpec) -> str:
        return spec.fields.answers

    def placeholder_target(self, spec: TaskSpec, row: dict[str, Any]) -> dict[str, Any]:
        return {spec.fields.answers: [] if spec.fields.locate_answers else {"text": [], "answer_start": []}}

    def outputs(self, spec: TaskSpec) -> str:
        return "answer span"
