"""tasksource as a catalogue source (datamodules/tasksource_import.py, datamodules/tasksource_source.py,
datamodules/from_data.py): the committed catalogue is what the pinned package generates, and generated entries load
local data shaped like their source through the real `datasets` path, keeping what tasksource's loader changes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import yaml
from datasets import ClassLabel, Dataset, Features, Sequence, Value

from core.errors import CatalogueError, MissingPackageError
from datamodules.catalogue import DEFAULT_CATALOGUE, Catalogue
from datamodules.multitask import MultiTaskDataModule
from datamodules.tasksource_import import (
    CATALOGUE_FILE,
    MIXTURE_FILE,
    entries,
    licenses_of,
    render,
)
from tests.conftest import TOKENIZER

GENERATED = Catalogue.load()
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "near", "river", "bank"]


def text(i: int, n: int = 6) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n))


def local_entry(tmp_path: Path, name: str, splits: dict[str, Dataset]) -> str:
    """A test catalogue holding the generated entry `name` with its source pointed at parquet files of `splits`
    (features, ClassLabel included, travel in the files)."""
    entry = yaml.safe_load((Path(DEFAULT_CATALOGUE) / "tasksource.yaml").read_text())[name]
    files = {}
    for split, rows in splits.items():
        rows.to_parquet(tmp_path / f"{split}.parquet")
        files[split] = str(tmp_path / f"{split}.parquet")
    entry["source"] = {**{k: v for k, v in entry["source"].items() if k == "tasksource"}, "path": "parquet",
                       "data_files": files}
    (tmp_path / "catalogue.yaml").write_text(yaml.safe_dump({name: entry}))
    return str(tmp_path / "catalogue.yaml")


def datamodule(catalogue: str, name: str, tmp_path: Path) -> MultiTaskDataModule:
    return MultiTaskDataModule(tasks=[name], tokenizer=TOKENIZER, catalogue=[catalogue],
                               cache_dir=str(tmp_path / "cache"), batch_size=8)


def test_the_committed_catalogue_is_what_the_pinned_package_generates():
    tasks, notes, _ = entries(licenses_of())
    catalogue, mixtures = render(tasks, notes)
    assert catalogue == (Path(DEFAULT_CATALOGUE) / CATALOGUE_FILE).read_text(encoding="utf-8")
    assert mixtures == (Path(DEFAULT_CATALOGUE) / MIXTURE_FILE).read_text(encoding="utf-8")
    assert len(GENERATED.select(["tasksource"])) >= 500


def test_rte_shaped_input_keeps_its_validation_split_second_sentence_and_label_ids(tmp_path, caplog):
    features = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                         "label": ClassLabel(names=["entailment", "not_entailment"]), "idx": Value("int32")})

    def split(n: int) -> Dataset:
        return Dataset.from_dict({"sentence1": [text(i) for i in range(n)], "sentence2": [text(i + 3) for i in range(n)],
                                  "label": [i % 2 for i in range(n)], "idx": list(range(n))}, features=features)
    catalogue = local_entry(tmp_path, "ts_glue_rte", {"train": split(40), "validation": split(277)})
    dm = datamodule(catalogue, "ts_glue_rte", tmp_path)
    with caplog.at_level(logging.INFO):
        spec = dm.task_specs[0]  # what the model is built from: settled from the data
    assert spec["inputs"] == ["sentence1", "sentence2"] and spec["num_labels"] == 2 and spec["label_map"] is None
    assert "num_labels 2 read from the features of column 'label' (ClassLabel ['entailment', 'not_entailment'])" \
        in caplog.text
    dm.prepare_data()
    assert len(dm.raw_split(dm.specs[0], "validation")) == 277  # whole: tasksource's loader keeps 138 of it
    assert dm.raw_split(dm.specs[0], "train")["label"][:4] == [0, 1, 0, 1]  # the dataset's own ids
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["input_ids"].shape[0] > 0


def csqa_split(n: int) -> Dataset:
    """CommonsenseQA's shape: 5 choices as a struct of lists, the answer as a letter."""
    features = Features({"id": Value("string"), "question": Value("string"), "question_concept": Value("string"),
                         "choices": {"label": Sequence(Value("string")), "text": Sequence(Value("string"))},
                         "answerKey": Value("string")})
    return Dataset.from_dict({"id": [str(i) for i in range(n)], "question": [text(i) for i in range(n)],
                              "question_concept": ["x"] * n,
                              "choices": [{"label": list("ABCDE"), "text": [text(i + c, 2) for c in range(5)]}
                                          for i in range(n)],
                              "answerKey": ["ABCDE"[i % 5] for i in range(n)]}, features=features)


def test_an_entry_that_runs_tasksources_code_keeps_all_five_choices_and_the_validation_split(tmp_path, caplog):
    spec = GENERATED.tasks["ts_commonsense_qa"]
    assert spec.source["tasksource"] == "commonsense_qa" and spec.num_choices == "features"
    catalogue = local_entry(tmp_path, "ts_commonsense_qa", {"train": csqa_split(30), "validation": csqa_split(21)})
    dm = datamodule(catalogue, "ts_commonsense_qa", tmp_path)
    with caplog.at_level(logging.INFO):
        dm.prepare_data()
    assert dm.task_specs[0]["num_choices"] == 5 and "num_choices 5 read from the data" in caplog.text
    validation = dm.raw_split(dm.specs[0], "validation")
    assert len(validation) == 21 and validation["labels"][:6] == [0, 1, 2, 3, 4, 0]  # "ABCDE".index(answerKey)
    assert [len(c) for c in validation["choices_list"]] == [5] * 21
    dm.setup("fit")
    assert next(iter(dm.val_dataloader()[0]))["input_ids"].shape[0] == 8 * 5  # 8 examples x 5 choices


def test_a_static_multiple_choice_entry_keeps_five_choices_and_maps_letters_in_order(tmp_path, caplog):
    spec = GENERATED.tasks["ts_openbookqa"]  # static: question_stem, choices.text, answerKey
    assert "tasksource" not in spec.source and spec.choices == "choices.text"
    rows = csqa_split(25).rename_column("question", "question_stem")
    catalogue = local_entry(tmp_path, "ts_openbookqa", {"train": rows, "validation": rows})
    dm = datamodule(catalogue, "ts_openbookqa", tmp_path)
    with caplog.at_level(logging.INFO):
        resolved = dm.task_specs[0]
    assert resolved["num_choices"] == 5 and resolved["label_map"] == {c: i for i, c in enumerate("ABCDE")}
    dm.prepare_data()
    dm.setup("fit")
    assert {int(r) for b in dm.train_dataloader() for r in b["labels"].unique().tolist()} == set(range(5))


def test_validation_is_carved_from_train_where_the_data_has_none_and_the_log_says_so(tmp_path, caplog):
    features = Features({"sentence1": Value("string"), "label": ClassLabel(names=["a", "b", "c"])})
    rows = Dataset.from_dict({"sentence1": [text(i) for i in range(50)], "label": [i % 3 for i in range(50)]},
                             features=features)
    catalogue = local_entry(tmp_path, "ts_glue_rte", {"train": rows})
    dm = datamodule(catalogue, "ts_glue_rte", tmp_path)
    with caplog.at_level(logging.INFO):
        spec = dm.task_specs[0]
    assert spec["inputs"] == ["sentence1"] and spec["num_labels"] == 3  # no sentence2 in this data
    assert spec["validation_from_train"] == {"size": 0.1, "seed": 0} and "validation carved from train" in caplog.text
    dm.prepare_data()
    assert len(dm.raw_split(dm.specs[0], "validation")) == 5


def test_a_split_slice_of_an_entry_read_whole_selects_what_load_dataset_would(tmp_path):
    features = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                         "label": ClassLabel(names=["entailment", "not_entailment"]), "idx": Value("int32")})
    rows = Dataset.from_dict({"sentence1": [text(i) for i in range(40)], "sentence2": [text(i + 3) for i in range(40)],
                              "label": [i % 2 for i in range(40)], "idx": list(range(40))}, features=features)
    catalogue = local_entry(tmp_path, "ts_glue_rte", {"train": rows, "validation": rows})
    entry = yaml.safe_load(Path(catalogue).read_text())
    entry["ts_glue_rte"]["splits"] = {"train": "train[:25%]", "validation": "validation[-3:]+validation[:2]"}
    Path(catalogue).write_text(yaml.safe_dump(entry))
    dm = datamodule(catalogue, "ts_glue_rte", tmp_path)
    dm.prepare_data()
    assert dm.raw_split(dm.specs[0], "train")["idx"] == list(range(10))
    assert dm.raw_split(dm.specs[0], "validation")["idx"] == [37, 38, 39, 0, 1]
    entry["ts_glue_rte"]["splits"]["train"] = "train[:ten]"
    Path(catalogue).write_text(yaml.safe_dump(entry))
    dm = datamodule(catalogue, "ts_glue_rte", tmp_path / "again")
    with pytest.raises(CatalogueError, match=r"ts_glue_rte.*train\[:ten\]"):
        dm.prepare_data()


def test_a_missing_tasksource_package_is_named_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tasksource", None)  # `import tasksource` now raises ImportError
    with pytest.raises(MissingPackageError, match=r"task 'ts_commonsense_qa' runs tasksource's preprocessing of "
                                                  r"'commonsense_qa': it needs the optional package tasksource==0\.1\.1"):
        MultiTaskDataModule(tasks=["ts_commonsense_qa"], tokenizer=TOKENIZER, cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()
    MultiTaskDataModule(tasks=["ts_glue_rte"], tokenizer=TOKENIZER, cache_dir=str(tmp_path / "cache"))  # static: fine
