"""The task families, data side: one `Family` entry per family says what a catalogue entry of that family needs, how
its raw rows are checked, how they are tokenized and how an example becomes batch rows. The catalogue, validation,
preprocessing and the collator ask this registry and never name a family.

A new family is one entry here (fields, checks, a batched `preprocess`) plus one head (heads/, registered in
lightning_modules/heads_factory.py): docs/architecture.md, "Adding a family".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from datamodules.catalogue import TaskSpec
    from datamodules.preprocess import Lengths

Check = Callable[[dict[str, list]], list[bool]]  # a batch of raw rows -> True for each bad row
Preprocess = Callable[..., dict[str, list]]  # (examples, indices) -> columns, under `dataset.map(batched=True)`


@dataclass(frozen=True)
class Family:
    name: str
    fields: tuple[str, ...]  # catalogue fields an entry must set, besides `source` and `inputs`
    input_counts: tuple[int, ...]  # how many `inputs` columns an entry may name
    metrics: tuple[str, ...]  # metrics it can report (lightning_modules/metrics.py)
    default_metrics: tuple[str, ...]  # when the entry names none; the first is the primary metric
    checks: Callable[[TaskSpec], dict[str, Check]]  # target field -> check of the raw rows (inputs: always text)
    problem: str  # what a bad target field is, for the error message
    # (spec, tokenizer, lengths, for_eval) -> batched preprocess writing `input_ids` (+ `token_type_ids`), `length`
    # and the family's targets (docs/architecture.md, "Preprocessed columns")
    preprocess: Callable[[TaskSpec, PreTrainedTokenizerBase, Lengths, bool], Preprocess]
    row_per_choice: bool = False  # `input_ids` holds one encoding per choice; each becomes a batch row
    # columns the collator carries (docs/architecture.md, "Collated batch"), besides the encoding and `label`:
    row_targets: tuple[str, ...] = ()  # one integer per row -> (R,) long, 0 on other families' rows
    sequence_targets: tuple[str, ...] = ()  # token ids per row -> (R, L) long, -100 padded
    eval_lists: dict[str, str] = field(default_factory=dict)  # evaluation column -> batch key of a per-row list


# ---- raw columns ---------------------------------------------------------------------------------------------------
def column(batch: dict[str, list], name: str) -> list:
    """A (possibly dotted) column of a batch: `choices.text` reads `batch["choices"][i]["text"]`."""
    root, *path = name.split(".")
    values = batch[root]
    for key in path:
        values = [None if v is None else v[key] for v in values]
    return values


def texts_bad(values: list) -> list[bool]:
    return [not isinstance(v, str) for v in values]


def label_to_id(spec: TaskSpec, value: Any, upper: int | None) -> int | float | None:
    """The training target of a raw label (an id below `upper`, or a finite float for regression), or None when it
    is unmapped, out of range or not finite."""
    if value is None:
        return None
    if spec.label_map is not None:
        return spec.label_map.get(value, spec.label_map.get(str(value)))
    if spec.is_regression:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if number and math.isfinite(value) else None  # NaN/inf targets would poison the loss
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
        return None
    return int(value) if 0 <= value < upper else None


def choice_list(spec: TaskSpec, batch: dict[str, list]) -> list[list]:
    if isinstance(spec.choices, str):
        return column(batch, spec.choices)
    return [list(row) for row in zip(*(column(batch, c) for c in spec.choices))]


def encoded(enc) -> dict[str, list]:
    """The columns of a tokenizer encoding a row needs: `input_ids`, and `token_type_ids` where the tokenizer makes
    them (BERT-style segment ids; the whole encoding is kept, as run_glue does)."""
    return {key: enc[key] for key in ("input_ids", "token_type_ids") if key in enc}


# ---- classification (single sentence, pair, regression) ------------------------------------------------------------
def classification_checks(spec: TaskSpec) -> dict[str, Check]:
    return {spec.label: lambda b: [label_to_id(spec, v, spec.num_labels) is None for v in column(b, spec.label)]}


def preprocess_classification(spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths,
                              for_eval: bool) -> Preprocess:
    def preprocess(examples: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
        texts = [column(examples, name) for name in spec.inputs]
        if len(texts) > 2:  # e.g. MultiRC (paragraph, question, answer): the rest joins the second segment
            texts = [texts[0], [" ".join(parts) for parts in zip(*texts[1:])]]
        enc = tok(*texts, truncation=True, max_length=lengths.max_length)  # pairs: longest_first keeps both
        labels = [float(label_to_id(spec, v, spec.num_labels)) for v in column(examples, spec.label)]
        return {**encoded(enc), "label": labels, "length": [len(x) for x in enc["input_ids"]]}
    return preprocess


# ---- multiple choice -----------------------------------------------------------------------------------------------
def multiple_choice_checks(spec: TaskSpec) -> dict[str, Check]:
    def choices_bad(batch: dict[str, list]) -> list[bool]:
        return [not isinstance(v, list) or not v or any(not isinstance(c, str) for c in v)
                for v in choice_list(spec, batch)]

    def label_bad(batch: dict[str, list]) -> list[bool]:
        return [(i := label_to_id(spec, v, spec.num_choices)) is None or isinstance(c, list) and i >= len(c)
                for v, c in zip(column(batch, spec.label), choice_list(spec, batch))]
    return {str(spec.choices): choices_bad, spec.label: label_bad}


def preprocess_multiple_choice(spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths,
                               for_eval: bool) -> Preprocess:
    """One (context, choice) encoding per choice; `label` is the correct choice's index, `rows` the choice count."""
    def preprocess(examples: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
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
        labels = [float(label_to_id(spec, v, spec.num_choices)) for v in column(examples, spec.label)]
        return {**columns, "label": labels,
                "length": [len(rows) * max(map(len, rows)) for rows in input_ids], "rows": list(map(len, input_ids))}
    return preprocess


# ---- extractive QA -------------------------------------------------------------------------------------------------
def span_checks(spec: TaskSpec) -> dict[str, Check]:
    def answers_bad(batch: dict[str, list]) -> list[bool]:
        bad = []
        for context, answers in zip(column(batch, spec.inputs[1]), column(batch, spec.answers)):
            if not isinstance(answers, dict) or not isinstance(context, str):
                bad.append(True)
                continue
            texts, starts = answers.get("text") or [], answers.get("answer_start") or []
            if not texts:
                bad.append(not spec.allow_no_answer)
                continue
            bad.append(len(texts) != len(starts) or any(context[s:s + len(t)] != t for t, s in zip(texts, starts)))
        return bad
    return {spec.answers: answers_bad}


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


def preprocess_span(spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths, for_eval: bool) -> Preprocess:
    """Long contexts become several windows (rows) with stride, as transformers' run_qa.py does. Evaluation rows
    remember their example (`example_index`, from `with_indices=True`): the evaluation sampler keeps them together."""
    def preprocess(examples: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
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
            start, end = answer_tokens(offsets, sequence_ids, answers[example])
            out["start_positions"].append(start)
            out["end_positions"].append(end)
            if for_eval:
                out["example_index"].append(indices[example] if indices is not None else example)
                out["offsets"].append([list(o) if s == 1 else None for o, s in zip(offsets, sequence_ids)])
                out["context"].append(contexts[example])
                out["gold_answers"].append(list(answers[example]["text"]))
        return out
    return preprocess


# ---- summarization -------------------------------------------------------------------------------------------------
def summarization_checks(spec: TaskSpec) -> dict[str, Check]:
    return {spec.target: lambda b: texts_bad(column(b, spec.target))}


def preprocess_summarization(spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths,
                             for_eval: bool) -> Preprocess:
    def preprocess(examples: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
        enc = tok(column(examples, spec.inputs[0]), truncation=True, max_length=lengths.max_length)
        targets = tok(text_target=column(examples, spec.target), truncation=True, max_length=lengths.max_target_length)
        return {**encoded(enc), "target_ids": targets["input_ids"], "length": [len(x) for x in enc["input_ids"]]}
    return preprocess


# ---- the registry --------------------------------------------------------------------------------------------------
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("classification", fields=("label", "num_labels"), input_counts=(1, 2, 3),
           metrics=("accuracy", "f1", "matthews_corrcoef", "pearson", "spearman"), default_metrics=("accuracy",),
           checks=classification_checks,
           problem="null, unmapped or outside num_labels (regression: not a finite number)",
           preprocess=preprocess_classification),
    Family("multiple_choice", fields=("label", "choices", "num_choices"), input_counts=(1, 2, 3),
           metrics=("accuracy",), default_metrics=("accuracy",), checks=multiple_choice_checks,
           problem="null, unmapped or outside the choices", preprocess=preprocess_multiple_choice,
           row_per_choice=True),
    Family("span", fields=("answers",), input_counts=(2,), metrics=("exact_match", "squad_f1"),
           default_metrics=("exact_match", "squad_f1"), checks=span_checks,
           problem="an answer that is not at its answer_start in the context (or no answer where allow_no_answer "
                   "is false)", preprocess=preprocess_span, row_targets=("start_positions", "end_positions"),
           eval_lists={"offsets": "offsets", "context": "contexts", "gold_answers": "gold_answers",
                       "example_index": "example_index"}),
    Family("summarization", fields=("target",), input_counts=(1,), metrics=("rouge1", "rouge2", "rougeL", "rougeLsum"),
           default_metrics=("rouge1", "rouge2", "rougeLsum"), checks=summarization_checks, problem="null or not text",
           preprocess=preprocess_summarization, sequence_targets=("target_ids",)),
)}
