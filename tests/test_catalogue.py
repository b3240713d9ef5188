"""Every catalogue entry, fed a small local dataset with its declared columns, goes through loading, validation,
preprocessing and collation (the hub is not reachable here; after loading the code path is the same)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset, load_dataset

from datamodules.catalogue import Catalogue, CatalogueError, parse_entry
from datamodules.families import FAMILIES
from datamodules.families.span import find_answer
from datamodules.holdout import holdout_rows
from tests.conftest import demo_datamodule

CATALOGUE = Catalogue.load()
# Local copies (`local:`, read under a data root) whose file named `validation` was drawn from an upstream test split
# (the SOURCES.md of the shared local copies): their validation is carved from train instead.
UPSTREAM_TEST_FILES = {"trec": "validation", "yelp_polarity": "validation"}
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
    return float(i % 5) if getattr(spec, "is_regression", False) else i % upper


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
        if spec.locate_answers:  # answer strings only (ReCoRD): the loader finds them in the context
            put(row, spec.answers, [answer, answer])
        else:
            put(row, spec.answers, {"text": [] if unanswerable else [answer],
                                    "answer_start": [] if unanswerable else [context.index(answer)]})
        put(row, spec.inputs[1], context)
    elif spec.family == "token_classification":
        words = text(i).split()
        put(row, spec.inputs[0], words)
        put(row, spec.label, [(i + k) % len(spec.label_names) for k in range(len(words))])
    else:
        put(row, spec.target, text(i + 5, 5))
    if spec.id:
        put(row, spec.id, f"example-{i}")
    return row


@pytest.mark.parametrize("family", FAMILIES)
def test_every_catalogue_entry_loads_preprocesses_and_collates(family, tmp_path):
    generated = set(CATALOGUE.mixtures.get("tasksource", []))  # tests/test_tasksource.py covers those
    specs = [s for s in CATALOGUE.tasks.values() if s.family == family and s.name not in generated]
    entries = {}
    for spec in specs:
        files = {}
        for name in spec.splits.values():
            base = re.sub(r"\[.*\]$", "", name)
            path = tmp_path / spec.name / f"{base}.jsonl"
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(json.dumps(synthetic_row(spec, i)) + "\n" for i in range(12)))
            files[base] = str(path)
        entry = {k: v for k, v in spec.to_dict().items() if k not in ("name", "catalogue_dir", "data_root")}
        if spec.validation_from_train:  # 12 synthetic rows: hold out 3
            entry["validation_from_train"] = {"size": 0.25, "seed": 0}
        entries[spec.name] = {**entry, "source": {"path": "json", "data_files": files}}
    (tmp_path / "catalogue.yaml").write_text(yaml.safe_dump(entries))
    dm = demo_datamodule(list(entries), str(tmp_path / "cache"), catalogue=[str(tmp_path / "catalogue.yaml")],
                         batch_size=64)
    batches = list(dm.train_dataloader())
    assert set(torch.cat([b["task_ids"] for b in batches]).tolist()) == set(range(len(specs)))
    assert len(specs) == 1 or all(len(b["task_ids"].unique()) > 1 for b in batches)  # mixed batches
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
    assert {f: families.count(f) for f in set(families)} == {"classification": 26, "multiple_choice": 10, "span": 6,
                                                              "summarization": 4}
    assert [s.name for s in CATALOGUE.select("glue")] == ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli",
                                                          "rte"]
    names = {s.name for s in muppet}
    assert "record" in names and "race" not in names  # race: an evaluation target (docs/catalogue.md)
    assert [s.name for s in CATALOGUE.select("muppet_eval")] == ["rte", "boolq", "race", "squad", "mnli"]


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
    ({"family": "summarization", "source": {"path": "json"}, "inputs": ["d"], "target": "s",
      "validation_from_train": {"size": 1.5}}, "field 'validation_from_train': 'size' must be"),
    ({"family": "summarization", "source": {"path": "json"}, "inputs": ["d"], "target": "s",
      "validation_from_train": {"size": 10}, "splits": {"train": "train", "validation": "test"}},
     "drop the 'validation' entry of field 'splits'"),
    ({"family": "span", "source": {"path": "json"}, "inputs": ["q", "c"], "answers": "a.text",
      "locate_answers": True}, "field 'locate_answers' needs a top-level 'answers' column"),
    ({"family": "classification", "source": {"path": "json"}, "inputs": ["a"], "label": "y", "num_labels": 2,
      "locate_answers": True}, "unknown field(s) ['locate_answers'] for family 'classification'"),
    ({"family": "classification", "source": {"path": "json"}, "inputs": ["a"], "label": "y", "num_labels": 2,
      "label_map": {"yes": 1, "no": 2}}, "field 'label_map' maps {'no': 2} outside 0..1"),
    ({"family": "multiple_choice", "source": {"path": "json"}, "inputs": ["q"], "label": "y", "choices": "c",
      "num_choices": 4, "label_map": {"E": 4}}, "field 'label_map' maps {'E': 4} outside 0..3"),
    ({"family": "classification", "source": {"path": "json"}, "inputs": ["a"], "label": "y", "num_labels": "2"},
     "field 'num_labels' must be an integer, or 'features' (read from the data), got '2' (str)"),
    ({"family": "multiple_choice", "source": {"path": "json"}, "inputs": ["q"], "choices": "c", "label": "y",
      "num_choices": 4.0}, "field 'num_choices' must be an integer, or 'features' (read from the data), got 4.0 (float)"),
    ({"family": "classification", "source": {"path": "json"}, "inputs": ["a", 3], "label": "y", "num_labels": 2},
     "field 'inputs' must be a column name or a list of them"),
    ({"family": "classification", "source": "glue", "inputs": ["a"], "label": "y", "num_labels": 2},
     "field 'source' must be a mapping"),
    ({"family": "classification", "source": {"path": "json"}, "inputs": ["a"], "label": "y", "num_labels": 2,
      "metrics": "accuracy"}, "field 'metrics' must be a list of metric names, got 'accuracy' (str)"),
    ({"family": "classification", "source": {"path": "json"}, "inputs": ["a"], "label": "y", "num_labels": 2,
      "label_map": {"pos": "1"}}, "field 'label_map' must be a mapping of raw label -> integer id"),
    ({"family": "span", "source": {"path": "json"}, "inputs": ["q", "c"], "answers": "a", "allow_no_answer": "yes"},
     "field 'allow_no_answer' must be true or false"),
    ({"family": "summarization", "source": {"path": "json"}, "inputs": ["d"], "target": "s",
      "max_eval_examples": 0}, "field 'max_eval_examples' must be an integer >= 1, got 0"),
])
def test_bad_entries_fail_naming_task_and_field(entry, message):
    with pytest.raises(CatalogueError, match=re.escape(message)) as error:
        parse_entry("my_task", entry)
    assert "my_task" in str(error.value)


def test_task_name_with_a_dot_is_refused():
    entry = {"family": "classification", "source": {"path": "json"}, "inputs": ["a"], "label": "y", "num_labels": 2}
    with pytest.raises(CatalogueError, match=re.escape("task name 'glue.rte' must be a non-empty string without '.'")):
        parse_entry("glue.rte", entry)


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


def test_no_entry_validates_on_a_test_split():
    """Validation picks checkpoints; a labelled test split serves `test` only, and validating on train rows needs
    `validation_from_train` (the carved rows then leave train)."""
    for spec in CATALOGUE.tasks.values():
        validation = re.sub(r"\[.*\]$", "", spec.splits["validation"])
        assert not validation.startswith("test"), spec.name
        local = spec.local or {}
        if spec.name in UPSTREAM_TEST_FILES:
            carved = local.get("validation_from_train") or spec.validation_from_train
            local_validation = (local.get("splits") or {}).get("validation", "")
            assert carved and UPSTREAM_TEST_FILES[spec.name] not in local_validation, spec.name
        assert spec.splits["validation"] != spec.splits["train"] or spec.validation_from_train, spec.name
        files = spec.source.get("data_files")
        if isinstance(files, dict):
            assert "test" not in Path(str(files.get(validation, ""))).name, spec.name
    generated = set(CATALOGUE.mixtures.get("tasksource", []))  # carved where tasksource names no validation split
    carved = {n for n, s in CATALOGUE.tasks.items() if s.validation_from_train and n not in generated}
    assert {"ag_news", "dbpedia_14", "yelp_polarity", "imdb", "trec"} <= carved
    assert all(CATALOGUE.tasks[n].splits.get("test") for n in carved)


def carved_catalogue(tmp_path: Path, size: int | float, seed: int) -> str:
    """demo_sentiment (via the catalogue) with validation held out of train and its own validation file as test."""
    spec = CATALOGUE.tasks["demo_sentiment"]
    entry = {k: v for k, v in spec.to_dict().items() if k not in ("name", "catalogue_dir", "data_root", "splits")}
    entry.update(source=spec.load_kwargs(), splits={"train": "train", "test": "validation"},
                 validation_from_train={"size": size, "seed": seed})
    path = tmp_path / f"carved-{size}-{seed}.yaml"
    path.write_text(yaml.safe_dump({"carved": entry}))
    return str(path)


def test_validation_carved_from_train_is_disjoint_deterministic_and_cached(tmp_path):
    cache = tmp_path / "cache"
    dm = demo_datamodule(["carved"], str(cache), catalogue=[carved_catalogue(tmp_path, 300, 0)])
    spec = dm.specs[0]
    source = load_dataset(**spec.load_kwargs(), split="train")
    held = holdout_rows(len(source), 300, 0)
    rest = sorted(set(range(len(source))) - set(held.tolist()))
    train, validation = dm.raw_split(spec, "train"), dm.raw_split(spec, "validation")
    assert len(held) == 300 and validation.to_list() == source.select(held).to_list()
    assert len(rest) == len(source) - 300 and train.to_list() == source.select(rest).to_list()
    assert dm.raw_split(spec, "test").to_list() == load_dataset(**spec.load_kwargs(), split="validation").to_list()
    assert train._fingerprint != validation._fingerprint

    def cached(module) -> dict[str, str]:
        return {s: module._preprocessed(module.specs[0], s).cache_files[0]["filename"] for s in ("train", "validation")}

    files, listing = cached(dm), sorted(p.name for p in cache.rglob("*.arrow"))
    assert Path(files["train"]).name.startswith("train-") and Path(files["validation"]).name.startswith("validation-")
    # caps cut the carved parts afterwards: same train rows (same cache file), validation = first rows of the carve
    capped = demo_datamodule(["carved"], str(cache), catalogue=[carved_catalogue(tmp_path, 300, 0)],
                             max_eval_examples=50, max_examples_per_task=100)
    assert capped.raw_split(spec, "validation").to_list() == source.select(held[:50]).to_list()
    assert cached(capped)["train"] == files["train"]
    again = demo_datamodule(["carved"], str(cache), catalogue=[carved_catalogue(tmp_path, 300, 0)])
    assert cached(again) == files
    reseeded = demo_datamodule(["carved"], str(cache), catalogue=[carved_catalogue(tmp_path, 0.15, 1)])
    assert set(holdout_rows(len(source), 0.15, 1).tolist()) != set(held.tolist())
    assert set(cached(reseeded).values()).isdisjoint(files.values())
    assert set(listing) <= {p.name for p in cache.rglob("*.arrow")}


def test_answer_strings_are_located_as_whole_words_in_the_context():
    context = "Edwards met Ed in Paris. Ed left for the U.S. on Monday."
    assert find_answer(context, "Ed") == context.index("Ed in") and find_answer(context, "Paris") == 18
    assert find_answer(context, "U.S") == context.index("U.S.") and find_answer(context, "Rome") == -1
    spec = CATALOGUE.tasks["record"]
    raw = Dataset.from_dict({"query": ["@placeholder left"], "passage": [context],
                             "answers": [["Ed", "Edwards", "Ed", "Rome"]]})
    answers = FAMILIES["span"].prepare_raw(spec, raw, "train")[0]["answers"]
    assert answers == {"text": ["Ed", "Edwards"], "answer_start": [12, 0]}
    assert all(context[s:s + len(t)] == t for t, s in zip(answers["text"], answers["answer_start"]))
