"""Every catalogue entry, fed a small local dataset with its declared columns, goes through loading, validation,
preprocessing and collation (the hub is not reachable here; after loading the code path is the same)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from datamodules.catalogue import FAMILIES, Catalogue, CatalogueError, parse_entry
from tests.conftest import demo_datamodule

CATALOGUE = Catalogue.load()
WORDS = "the quick brown fox jumps over a lazy dog near river bank while birds sing".split()


def text(i: int, n: int = 8) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n))


def put(row: dict, dotted: str, value) -> None:
    root, *rest = dotted.split(".")
    if rest:
        row.setdefault(root, {})[rest[0]] = value
    else:
        row[root] = value


def raw_label(spec, i: int, upper: int):
    if spec.label_map:
        keys = [k for k, v in spec.label_map.items() if v < upper]
        return keys[i % len(keys)]
    return float(i % 5) if spec.is_regression else i % upper


def synthetic_row(spec, i: int) -> dict:
    row: dict = {}
    for k, name in enumerate(spec.inputs):
        put(row, name, text(i + k))
    if spec.family == "classification":
        put(row, spec.label, raw_label(spec, i, spec.num_labels))
    elif spec.family == "multiple_choice":
        choices = [text(i + 3 + c, 4) for c in range(spec.num_choices)]
        if isinstance(spec.choices, str):
            put(row, spec.choices, choices)
            if "." in spec.choices:  # a struct column such as {text: [...], label: [...]}
                row[spec.choices.split(".")[0]].setdefault("label", [chr(65 + c) for c in range(len(choices))])
        else:
            for name, choice in zip(spec.choices, choices):
                put(row, name, choice)
        put(row, spec.label, raw_label(spec, i, spec.num_choices))
    elif spec.family == "span":
        context = text(i, 30)
        answer = " ".join(context.split()[10:12])
        unanswerable = spec.allow_no_answer and i % 3 == 0
        put(row, spec.answers, {"text": [] if unanswerable else [answer],
                                "answer_start": [] if unanswerable else [context.index(answer)]})
        put(row, spec.inputs[1], context)
    else:
        put(row, spec.target, text(i + 5, 5))
    return row


@pytest.mark.parametrize("family", FAMILIES)
def test_every_catalogue_entry_loads_preprocesses_and_collates(family, tmp_path):
    specs = [s for s in CATALOGUE.tasks.values() if s.family == family]
    entries = {}
    for spec in specs:
        files = {}
        for name in spec.splits.values():
            base = re.sub(r"\[.*\]$", "", name)
            path = tmp_path / spec.name / f"{base}.jsonl"
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(json.dumps(synthetic_row(spec, i)) + "\n" for i in range(12)))
            files[base] = str(path)
        entry = {k: v for k, v in spec.to_dict().items() if k not in ("name", "catalogue_dir")}
        entries[spec.name] = {**entry, "source": {"path": "json", "data_files": files}}
    (tmp_path / "catalogue.yaml").write_text(yaml.safe_dump(entries))
    dm = demo_datamodule(list(entries), str(tmp_path / "cache"), catalogue=[str(tmp_path / "catalogue.yaml")],
                         batch_size=64)
    batches = list(dm.train_dataloader())
    assert set(torch.cat([b["task_ids"] for b in batches]).tolist()) == set(range(len(specs)))
    assert all(len(b["task_ids"].unique()) > 1 for b in batches)  # mixed batches
    assert all(b["input_ids"].shape == b["attention_mask"].shape for b in batches)
    for loader in dm.val_dataloader():
        val = next(iter(loader))
        assert len(val["task_ids"].unique()) == 1
        if family == "summarization":
            assert (val["target_ids"] != -100).any()


def test_paper_mixture_has_the_papers_counts():
    muppet = CATALOGUE.select("muppet")
    families = [s.family for s in muppet]
    assert len(muppet) == 46
    assert {f: families.count(f) for f in FAMILIES} == {"classification": 26, "multiple_choice": 10, "span": 6,
                                                         "summarization": 4}
    assert [s.name for s in CATALOGUE.select("glue")] == ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli",
                                                          "rte"]


def test_selection_by_family_and_mixture_deduplicates():
    chosen = CATALOGUE.select(["span", "squad", "demo_sentiment", "quickstart"])
    names = [s.name for s in chosen]
    assert len(names) == len(set(names)) and names.count("squad") == 1
    assert {s.family for s in CATALOGUE.select("multiple_choice")} == {"multiple_choice"}


@pytest.mark.parametrize("entry, message", [
    ({"family": "regression"}, "field 'family'"),
    ({"family": "classification", "source": {"path": "json"}, "inputs": ["a"], "label": "y"}, "'num_labels'"),
    ({"family": "classification", "source": {"path": "json"}, "inputs": ["a"], "label": "y", "num_labels": 2,
      "colour": 1}, "unknown field(s) ['colour']"),
    ({"family": "span", "source": {"path": "json"}, "inputs": ["q"], "answers": "a"}, "field 'inputs'"),
    ({"family": "span", "source": {"path": "json"}, "inputs": ["q", "c"], "answers": "a", "splits": {"train": "x"}},
     "field 'splits' needs 'train' and 'validation'"),
    ({"family": "classification", "source": {"path": "json"}, "inputs": ["a"], "label": "y", "num_labels": 2,
      "metrics": ["bleu"]}, "unknown metric(s) ['bleu']"),
])
def test_bad_entries_fail_naming_task_and_field(entry, message):
    with pytest.raises(CatalogueError, match=re.escape(message)) as error:
        parse_entry("my_task", entry)
    assert "my_task" in str(error.value)


def test_unknown_task_or_mixture_name_fails_naming_it():
    with pytest.raises(CatalogueError, match="unknown task or mixture 'not_a_task'"):
        CATALOGUE.select(["rte", "not_a_task"])


def test_user_task_from_own_files_needs_no_code(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text("review,verdict\n" + "".join(f"{text(i)},{'good' if i % 2 else 'bad'}\n" for i in range(20)))
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"my_reviews": {
        "family": "classification", "source": {"path": "csv", "data_files": {"train": "reviews.csv",
                                                                             "validation": "reviews.csv"}},
        "inputs": ["review"], "label": "verdict", "label_map": {"bad": 0, "good": 1}, "num_labels": 2}}))
    dm = demo_datamodule(["my_reviews"], str(tmp_path / "cache"), catalogue=[str(tmp_path / "mine.yaml")])
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["labels"].tolist()) == {0.0, 1.0}
    assert Path(dm.specs[0].load_kwargs()["data_files"]["train"]).is_absolute()
    assert torch.equal(batch["task_ids"].unique(), torch.tensor([0]))
