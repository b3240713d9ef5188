"""One batched `preprocess(examples)` per family, run under `dataset.map(batched=True)` with a fast tokenizer.

Every family writes `input_ids` (and `token_type_ids` when the tokenizer returns them: BERT-family segment ids, kept
as run_glue keeps the whole encoding) and `length` (tokens the example costs in a batch; a multiple-choice example counts
all of its choices, and also writes `rows`, its number of choices). Family targets follow docs/architecture.md ("Collated batch").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from transformers import PreTrainedTokenizerBase

from datamodules.catalogue import TaskSpec
from datamodules.validation import choice_list, column, label_to_id

PREPROCESS_VERSION = 3  # bump when the output of a preprocess function changes: it invalidates the cache


@dataclass(frozen=True)
class Lengths:
    max_length: int = 256  # encoder tokens per row
    max_target_length: int = 64  # summary tokens
    doc_stride: int = 64  # overlap between span-QA windows


def encoded(enc) -> dict[str, list]:
    """The columns of a tokenizer encoding a row needs: `input_ids`, and `token_type_ids` when the tokenizer makes them."""
    return {key: enc[key] for key in ("input_ids", "token_type_ids") if key in enc}


def preprocess_classification(spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths) -> Callable:
    def preprocess(examples: dict[str, list]) -> dict[str, list]:
        texts = [column(examples, name) for name in spec.inputs]
        if len(texts) > 2:  # e.g. MultiRC (paragraph, question, answer): the rest joins the second segment
            texts = [texts[0], [" ".join(parts) for parts in zip(*texts[1:])]]
        enc = tok(*texts, truncation=True, max_length=lengths.max_length)  # pairs: longest_first keeps both
        labels = [float(label_to_id(spec, v)) for v in column(examples, spec.label)]
        return {**encoded(enc), "label": labels, "length": [len(x) for x in enc["input_ids"]]}
    return preprocess


def preprocess_multiple_choice(spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths) -> Callable:
    def preprocess(examples: dict[str, list]) -> dict[str, list]:
        parts = zip(*(column(examples, name) for name in spec.inputs))
        firsts = [" ".join(p.strip() for p in row if p and p.strip()) for row in parts]
        choices = choice_list(spec, examples)
        flat_first = [f for f, cs in zip(firsts, choices) for _ in cs]
        flat_choice = [c for cs in choices for c in cs]
        enc = tok(flat_first, flat_choice, truncation=True, max_length=lengths.max_length)
        columns, start = {key: [] for key in encoded(enc)}, 0
        for cs in choices:  # regroup the flat (context, choice) encodings per example
            for key, values in columns.items():
                values.append(enc[key][start:start + len(cs)])
            start += len(cs)
        input_ids = columns["input_ids"]
        return {**columns, "label": [float(label_to_id(spec, v)) for v in column(examples, spec.label)],
                "length": [len(rows) * max(map(len, rows)) for rows in input_ids], "rows": list(map(len, input_ids))}
    return preprocess


def _answer_tokens(offsets: list, sequence_ids: list, answers: dict) -> tuple[int, int]:
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


def preprocess_span(spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths, for_eval: bool) -> Callable:
    """Long contexts become several windows (rows) with stride, as transformers' run_qa.py does. Run with
    `with_indices=True`: evaluation rows remember their example."""
    def preprocess(examples: dict[str, list], indices: list[int]) -> dict[str, list]:
        questions = [q.lstrip() for q in column(examples, spec.inputs[0])]
        contexts, answers = column(examples, spec.inputs[1]), column(examples, spec.answers)
        enc = tok(questions, contexts, truncation="only_second", max_length=lengths.max_length,
                  stride=lengths.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
        out: dict[str, list] = {**encoded(enc), "length": [len(x) for x in enc["input_ids"]],
                                "start_positions": [], "end_positions": []}
        if for_eval:
            out |= {"example_index": [], "offsets": [], "context": [], "gold_answers": []}
        for i, offsets in enumerate(enc["offset_mapping"]):
            example = enc["overflow_to_sample_mapping"][i]
            sequence_ids = enc.sequence_ids(i)
            start, end = _answer_tokens(offsets, sequence_ids, answers[example])
            out["start_positions"].append(start)
            out["end_positions"].append(end)
            if for_eval:
                out["example_index"].append(indices[example])
                out["offsets"].append([list(o) if s == 1 else None for o, s in zip(offsets, sequence_ids)])
                out["context"].append(contexts[example])
                out["gold_answers"].append(list(answers[example]["text"]))
        return out
    return preprocess


def preprocess_summarization(spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths) -> Callable:
    def preprocess(examples: dict[str, list]) -> dict[str, list]:
        enc = tok(column(examples, spec.inputs[0]), truncation=True, max_length=lengths.max_length)
        targets = tok(text_target=column(examples, spec.target), truncation=True, max_length=lengths.max_target_length)
        return {**encoded(enc), "target_ids": targets["input_ids"],
                "length": [len(x) for x in enc["input_ids"]]}
    return preprocess


def make_preprocess(spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths, for_eval: bool) -> Callable:
    if spec.family == "span":
        return preprocess_span(spec, tok, lengths, for_eval)
    return {"classification": preprocess_classification, "multiple_choice": preprocess_multiple_choice,
            "summarization": preprocess_summarization}[spec.family](spec, tok, lengths)


def cache_key_parts(spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths, for_eval: bool) -> list[Any]:
    """What the preprocessed output depends on, besides the raw data's own fingerprint."""
    return [PREPROCESS_VERSION, {k: v for k, v in spec.to_dict().items() if k not in ("metrics",)},
            tok.name_or_path, type(tok).__name__, len(tok), lengths, for_eval]
