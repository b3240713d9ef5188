"""Bad input fails before training, naming the task, split and field (rows: how many, first index), and writes
nothing."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from datamodules.multitask import MultiTaskDataModule
from datamodules.validation import DataValidationError
from tests.conftest import TOKENIZER

GOOD = {
    "classification": {"a": "some words here", "b": "other words", "y": 1},
    "span": {"q": "what colour", "c": "the sky is blue today", "ans": {"text": ["blue"], "answer_start": [11]}},
    "multiple_choice": {"q": "pick one", "opts": ["x", "y", "z"], "y": 2},
    "summarization": {"doc": "a long document", "sum": "short"},
}
ENTRIES = {
    "classification": {"family": "classification", "inputs": ["a", "b"], "label": "y", "num_labels": 2},
    "span": {"family": "span", "inputs": ["q", "c"], "answers": "ans"},
    "multiple_choice": {"family": "multiple_choice", "inputs": ["q"], "choices": "opts", "label": "y",
                        "num_choices": 3},
    "summarization": {"family": "summarization", "inputs": ["doc"], "target": "sum"},
}


def run_prepare(tmp_path, family: str, rows: list[dict], split: str = "train", entry_overrides: dict | None = None,
                good: list[dict] | None = None):
    good = good if good is not None else [GOOD[family]] * 5
    files = {}
    for name, data in (("train", rows if split == "train" else good), ("validation", rows if split != "train" else good)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
        files[name] = str(path)
    entry = {**ENTRIES[family], **(entry_overrides or {}), "source": {"path": "json", "data_files": files}}
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"my_task": entry}))
    cache = tmp_path / "cache"
    dm = MultiTaskDataModule(tasks=["my_task"], tokenizer=TOKENIZER, catalogue=[str(tmp_path / "tasks.yaml")],
                             cache_dir=str(cache))
    try:
        dm.prepare_data()
    except DataValidationError:
        assert not cache.exists() or not any(cache.rglob("*.arrow")), "nothing may be written before the checks pass"
        raise


def bad_rows(family: str, bad: dict, where: list[int], n: int = 8) -> list[dict]:
    return [{**GOOD[family], **bad} if i in where else GOOD[family] for i in range(n)]


@pytest.mark.parametrize("family, bad, field, split", [
    ("classification", {"y": 7}, "y", "train"),  # outside num_labels
    ("classification", {"y": None}, "y", "validation"),
    ("classification", {"b": None}, "b", "train"),  # a null text field
    ("multiple_choice", {"y": 3}, "y", "train"),  # outside the choices
    ("span", {"ans": {"text": ["green"], "answer_start": [11]}}, "ans", "validation"),  # answer not in context
    ("span", {"ans": {"text": ["blue"], "answer_start": [0]}}, "ans", "train"),  # not at its answer_start
    ("span", {"ans": {"text": [], "answer_start": []}}, "ans", "train"),  # no answer but v1 style
    ("summarization", {"sum": None}, "sum", "train"),
])
def test_bad_rows_are_named_with_count_and_first_index(tmp_path, family, bad, field, split):
    with pytest.raises(DataValidationError) as error:
        run_prepare(tmp_path, family, bad_rows(family, bad, where=[3, 6]), split)
    message = str(error.value)
    assert f"task 'my_task', split '{split}'" in message and f"field '{field}'" in message
    assert "in 2 row(s), first at index 3" in message


def test_unmapped_label_is_named(tmp_path):
    rows = [{**GOOD["classification"], "y": v} for v in ("pos", "neg", "neutral", "pos")]
    with pytest.raises(DataValidationError, match=re.escape("field 'y' is null, unmapped or outside num_labels "
                                                            "(regression: not a finite number) in 1 row(s), first at "
                                                            "index 2")):
        run_prepare(tmp_path, "classification", rows, entry_overrides={"label_map": {"neg": 0, "pos": 1}})


def test_missing_column_is_named(tmp_path):
    rows = [{"a": "text", "y": 0}] * 4
    with pytest.raises(DataValidationError, match=re.escape("task 'my_task', split 'train': missing column(s) ['b']")):
        run_prepare(tmp_path, "classification", rows, good=rows)


def test_empty_split_is_named(tmp_path):
    with pytest.raises(DataValidationError, match=re.escape("task 'my_task', split 'validation': the split is empty")):
        run_prepare(tmp_path, "summarization", [], split="validation")


def test_unanswerable_questions_pass_when_allowed(tmp_path):
    rows = bad_rows("span", {"ans": {"text": [], "answer_start": []}}, where=[1, 2])
    run_prepare(tmp_path, "span", rows, entry_overrides={"allow_no_answer": True})
    assert any((tmp_path / "cache").rglob("*.arrow"))


def test_zero_batch_size_is_named():
    with pytest.raises(ValueError, match="data.batch_size: must be an integer >= 1, got 0"):
        MultiTaskDataModule(tasks=["demo_sentiment"], tokenizer=TOKENIZER, batch_size=0)


def test_skip_labels_drops_rows_before_the_checks(tmp_path):
    rows = bad_rows("classification", {"y": -1}, where=[0, 4])
    run_prepare(tmp_path, "classification", rows, good=rows, entry_overrides={"skip_labels": [-1]})
    dm = MultiTaskDataModule(tasks=["my_task"], tokenizer=TOKENIZER, catalogue=[str(tmp_path / "tasks.yaml")],
                             cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    assert len(dm.train_set) == 6


def test_non_finite_regression_targets_are_named(tmp_path):
    """A NaN or infinite regression target (parquet and the JSON reader keep them) fails before training instead of
    making every loss NaN."""
    from datasets import Dataset

    rows = {"a": ["x y", "y z", "z w", "w v"], "b": ["p", "q", "r", "s"], "y": [0.5, float("nan"), 2.0, float("inf")]}
    files = {}
    for split in ("train", "validation"):
        files[split] = str(tmp_path / f"{split}.parquet")
        Dataset.from_dict(rows if split == "train" else {**rows, "y": [0.5, 1.0, 2.0, 3.0]}).to_parquet(files[split])
    entry = {**ENTRIES["classification"], "num_labels": 1, "metrics": ["pearson"],
             "source": {"path": "parquet", "data_files": files}}
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"my_task": entry}))
    dm = MultiTaskDataModule(tasks=["my_task"], tokenizer=TOKENIZER, catalogue=[str(tmp_path / "tasks.yaml")],
                             cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataValidationError, match=re.escape("task 'my_task', split 'train'")) as error:
        dm.prepare_data()
    assert "not a finite number) in 2 row(s), first at index 1" in str(error.value)


def test_nan_regression_target_in_json_is_named(tmp_path):
    rows = [{**GOOD["classification"], "y": v} for v in (0.5, 1.5, float("nan"), 2.5)]  # json.dumps writes NaN
    with pytest.raises(DataValidationError, match=re.escape("(regression: not a finite number) in 1 row(s), first at "
                                                            "index 2")):
        run_prepare(tmp_path, "classification", rows, entry_overrides={"num_labels": 1, "metrics": ["pearson"]},
                    good=[{**GOOD["classification"], "y": 0.5}] * 5)
