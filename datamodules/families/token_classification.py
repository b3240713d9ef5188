"""Token classification (NER), data side: a row is a list of words with one IOB2 tag per word. Words are tokenized
with `is_split_into_words=True` and tags aligned to sub-tokens through `word_ids()` as transformers' run_ner.py does:
a word's first sub-token carries its tag, the other sub-tokens and special tokens -100 (`label_all_tokens`: every
sub-token, continuations of a B-X word tagged I-X). Words beyond `max_length` tokens are cut and not scored.
Evaluation rows also carry each kept word's first sub-token and gold tag: predictions and metrics are per word.
Head: heads/token_classification.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from core.batch import BatchKey
from core.task_spec import BOOL, COLUMN, LABEL_MAP, TaskSpec, is_str_list
from datamodules.families.base import DataFamily, EntryProblem, class_id, column, encoded
from datamodules.families.base import label_names as raw_values

IOB2 = re.compile(r"O|[BI]-\S+")


@dataclass
class TokenClassificationFields:
    label: str  # tag column: one tag per word (ids, or raw values mapped by `label_map`)
    label_names: list[str]  # tag names in id order, IOB2 (O, B-X, I-X)
    label_map: dict[Any, int] | None = None  # raw tag value -> tag id
    label_all_tokens: bool = False  # train on every sub-token (continuations of B-X as I-X), not only a word's first

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def columns(self) -> list[str]:
        return [self.label]


def words_bad(values: list) -> list[bool]:
    return [not isinstance(v, list) or not v or any(not isinstance(w, str) for w in v) for v in values]


def tag_ids(fields: TokenClassificationFields, tags: Any, words: Any) -> list[int] | None:
    """The tag ids of a row, None when the tags are not a list of known tags, one per word."""
    if not isinstance(tags, list) or not isinstance(words, list) or len(tags) != len(words):
        return None
    ids = [class_id(t, fields.label_map, fields.num_labels) for t in tags]
    return None if None in ids else ids


def continuation_ids(names: list[str]) -> list[int]:
    """run_ner's `b_to_i_label`: the tag a continuation sub-token of a word tagged with each tag gets (B-X -> I-X)."""
    return [names.index("I-" + n[2:]) if n.startswith("B-") and "I-" + n[2:] in names else i
            for i, n in enumerate(names)]


def word_prefix(tok: PreTrainedTokenizerBase) -> str:
    """"" when the tokenizer encodes a pre-split word as it encodes that word inside running text (WordPiece, or
    byte-level BPE with `add_prefix_space`); " " when a word needs a leading space for that (byte-level BPE without
    it, e.g. roberta-base's own tokenizer: run_ner then loads it with `add_prefix_space=True`)."""
    first = len(tok("a", add_special_tokens=False)["input_ids"])
    running = tok("a Paris", add_special_tokens=False)["input_ids"][first:]  # " Paris" inside running text

    def second_word(prefix: str) -> list[int]:
        enc = tok([prefix + "a", prefix + "Paris"], is_split_into_words=True, add_special_tokens=False)
        return [i for i, w in zip(enc["input_ids"], enc.word_ids()) if w == 1]
    return " " if second_word("") != running and second_word(" ") == running else ""


class TokenClassification(DataFamily):
    name = "token_classification"
    Fields = TokenClassificationFields
    field_types = {"label": COLUMN, "label_names": (is_str_list, "a list of tag names"), "label_map": LABEL_MAP,
                   "label_all_tokens": BOOL}
    input_counts = (1,)
    metrics = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")
    batch_keys = (BatchKey("token_labels", "token_labels", "token"),
                  BatchKey("word_starts", "word_starts", "list"), BatchKey("gold_tags", "gold_tags", "list"))
    problem = "not a list of tags (ids below the number of label_names, or raw tags of label_map), one per word"

    def default_metrics(self, fields: TokenClassificationFields) -> list[str]:
        return ["entity_f1", "entity_precision", "entity_recall"]

    def check_entry(self, spec: TaskSpec) -> None:
        names = spec.fields.label_names
        if len(names) < 2 or len(set(names)) != len(names) or "O" not in names:
            raise EntryProblem("label_names", f"field 'label_names' must hold at least 2 distinct tag names, 'O' "
                                              f"among them, got {names}")
        bad = [n for n in names if not IOB2.fullmatch(n)]
        if bad:
            raise EntryProblem("label_names", f"field 'label_names' has tags {bad} that are not IOB2 (O, B-X, I-X)")
        outside = {k: v for k, v in (spec.fields.label_map or {}).items() if not 0 <= v < len(names)}
        if outside:
            raise EntryProblem("label_map", f"field 'label_map' maps {outside} outside 0..{len(names) - 1} "
                                            f"({len(names)} label_names)")

    # ---- raw rows --------------------------------------------------------------------------------------------------
    def input_checks(self, spec: TaskSpec) -> dict:
        name = spec.inputs[0]
        return {name: lambda b: words_bad(column(b, name))}

    def input_problem(self, spec: TaskSpec) -> str:
        return "null or not a non-empty list of words (strings)"

    def target_checks(self, spec: TaskSpec) -> dict:
        fields, words = spec.fields, spec.inputs[0]
        return {fields.label: lambda b: [tag_ids(fields, t, w) is None
                                         for t, w in zip(column(b, fields.label), column(b, words))]}

    # ---- tokenization ----------------------------------------------------------------------------------------------
    def preprocess(self, spec, tok, lengths, for_eval):
        """`token_labels` per token; evaluation rows add `word_starts` (each kept word's first sub-token, -1 for a
        word that makes no token) and `gold_tags` (the kept words' tag names)."""
        fields, prefix = spec.fields, word_prefix(tok)
        names, continuation = fields.label_names, continuation_ids(fields.label_names)

        def preprocess(examples: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
            words = column(examples, spec.inputs[0])
            tags = [tag_ids(fields, t, w) for t, w in zip(column(examples, fields.label), words)]
            enc = tok([[prefix + w for w in row] for row in words], is_split_into_words=True, truncation=True,
                      max_length=lengths.max_length)
            out: dict[str, list] = {**encoded(enc), "length": [len(x) for x in enc["input_ids"]], "token_labels": []}
            if for_eval:
                out |= {"word_starts": [], "gold_tags": []}
            for i, row_tags in enumerate(tags):
                word_ids, starts, labels = enc.word_ids(i), {}, []
                for position, word in enumerate(word_ids):
                    if word is None:
                        labels.append(-100)
                    elif word not in starts:
                        starts[word] = position
                        labels.append(row_tags[word])
                    else:
                        labels.append(continuation[row_tags[word]] if fields.label_all_tokens else -100)
                out["token_labels"].append(labels)
                if for_eval:  # truncated: the words up to the last one that has a token
                    cut = len(word_ids) >= lengths.max_length
                    kept = max(starts, default=-1) + 1 if cut else len(row_tags)
                    out["word_starts"].append([starts.get(w, -1) for w in range(kept)])
                    out["gold_tags"].append([names[t] for t in row_tags[:kept]])
            return out
        return preprocess

    # ---- predictions -----------------------------------------------------------------------------------------------
    def gold_column(self, spec: TaskSpec) -> str:
        return spec.fields.label

    def placeholder_target(self, spec: TaskSpec, row: dict[str, Any]) -> dict[str, Any]:
        words = column({k: [v] for k, v in row.items()}, spec.inputs[0])[0]
        tag = next(iter(spec.fields.label_map)) if spec.fields.label_map else 0
        return {spec.fields.label: [tag] * len(words) if isinstance(words, list) else []}

    def outputs(self, spec: TaskSpec) -> str:
        return f"{spec.fields.num_labels} tags"

    def prediction_extras(self, spec: TaskSpec, prediction: Any) -> dict[str, Any]:
        """`predicted`: the predicted tags as raw values (ids, or `label_map` keys), comparable with `gold`."""
        raw = raw_values(spec.fields.label_map)
        ids = {n: i for i, n in enumerate(spec.fields.label_names)}
        if not isinstance(prediction, list) or any(p not in ids for p in prediction):
            return {}
        return {"predicted": [raw.get(ids[p], ids[p]) if raw else ids[p] for p in prediction]}
