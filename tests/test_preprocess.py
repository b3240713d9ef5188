"""Per-family preprocessing: pair encoding, span windows with stride and answers mapped through offsets, multiple
choice pairs, summarization targets; the tokenized cache is reused by a second run."""

from __future__ import annotations

from datasets import Dataset
from transformers import AutoTokenizer

import datamodules.multitask as multitask
from datamodules.catalogue import parse_entry
from datamodules.preprocess import Lengths, make_preprocess
from tests.conftest import TOKENIZER, demo_datamodule

TOK = AutoTokenizer.from_pretrained(TOKENIZER)


def run(entry: dict, rows: list[dict], lengths: Lengths, for_eval: bool = False) -> Dataset:
    spec = parse_entry("t", {"source": {"path": "json"}, **entry})
    raw = Dataset.from_list(rows)
    return raw.map(make_preprocess(spec, TOK, lengths, for_eval), batched=True, with_indices=True,
                   remove_columns=raw.column_names)


def test_long_span_contexts_become_windows_whose_labels_point_at_the_answer():
    context = " ".join("the dog is big ." for _ in range(30)) + " the cat is purple . " + \
        " ".join("the bus is slow ." for _ in range(30))
    answer = "purple"
    rows = [{"q": "what color is it ?", "c": context, "a": {"text": [answer], "answer_start": [context.index(answer)]}}]
    entry = {"family": "span", "inputs": ["q", "c"], "answers": "a", "allow_no_answer": True}
    out = run(entry, rows, Lengths(max_length=64, doc_stride=16), for_eval=True)
    assert len(out) > 3 and set(out["example_index"]) == {0}
    hits = 0
    for ids, start, end, offsets in zip(out["input_ids"], out["start_positions"], out["end_positions"], out["offsets"]):
        assert len(ids) <= 64
        if start:
            hits += 1
            assert context[offsets[start][0]:offsets[end][1]] == answer
        else:
            assert end == 0  # windows without the answer point at <s>: no answer here
    assert hits >= 1


def test_pairs_are_truncated_without_dropping_a_field():
    rows = [{"a": "short premise", "b": " ".join(["word"] * 200), "y": 1}]
    out = run({"family": "classification", "inputs": ["a", "b"], "label": "y", "num_labels": 2}, rows,
              Lengths(max_length=32))
    ids = out["input_ids"][0]
    assert len(ids) == 32 and TOK.decode(ids).startswith("<s> short premise</s></s>")


def test_every_choice_is_paired_with_the_context():
    rows = [{"q": "which is a fruit ?", "opts": ["apple", "car", "saw"], "y": 0}]
    out = run({"family": "multiple_choice", "inputs": ["q"], "choices": "opts", "label": "y", "num_choices": 3}, rows,
              Lengths())
    texts = [TOK.decode(ids) for ids in out["input_ids"][0]]
    assert [t.split("</s></s>")[1].removesuffix("</s>").strip() for t in texts] == ["apple", "car", "saw"]
    assert out["length"][0] == 3 * max(len(x) for x in out["input_ids"][0])


def test_summaries_become_decoder_targets():
    out = run({"family": "summarization", "inputs": ["d"], "target": "s"},
              [{"d": "a long article about a dog", "s": "dog story"}], Lengths(max_target_length=8))
    assert TOK.decode(out["target_ids"][0], skip_special_tokens=True).strip() == "dog story"


def test_second_run_reads_the_tokenized_cache(tmp_path, monkeypatch):
    demo_datamodule(["demo_sentiment", "demo_span"], str(tmp_path))
    cached = sorted(p.name for p in tmp_path.rglob("*.arrow"))
    assert cached

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again despite the cache")
    monkeypatch.setattr(multitask, "make_preprocess", lambda *a, **k: no_tokenizing)
    dm = demo_datamodule(["demo_sentiment", "demo_span"], str(tmp_path))
    assert len(dm.train_set) > 0 and sorted(p.name for p in tmp_path.rglob("*.arrow")) == cached
