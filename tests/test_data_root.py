"""A data root (`data.data_root` / MUPPET_DATA_ROOT): catalogue entries with a `local:` section are read from their
local copy under it, with the section's fields over the hub entry's; without one the hub source stays. The copies
here are tiny JSONL files written by the tests (the real `datasets` json builder reads them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.catalogue import DEFAULT_CATALOGUE, Catalogue, CatalogueError
from datamodules.multitask import DATA_ROOT_ENV, MultiTaskDataModule
from tests.conftest import TOKENIZER

WORDS = "the quick brown fox jumps over a lazy dog near the river bank".split()


def sentence(i: int) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(6))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def mrpc_rows(n: int, start: int = 0) -> list[dict]:
    """GLUE MRPC's columns: sentence1, sentence2, label (0 = not_equivalent, 1 = equivalent)."""
    return [{"sentence1": sentence(i), "sentence2": sentence(i + 3), "label": i % 2} for i in range(start, start + n)]


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """<root>/mrpc/{train,validation}.jsonl; MUPPET_DATA_ROOT unset unless a test sets it."""
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    folder = tmp_path / "data"
    write_jsonl(folder / "mrpc" / "train.jsonl", mrpc_rows(12))
    write_jsonl(folder / "mrpc" / "validation.jsonl", mrpc_rows(5, start=100))
    return folder


def data_module(root: Path | None, tmp_path: Path, tasks=("mrpc",), **kwargs) -> MultiTaskDataModule:
    return MultiTaskDataModule(tasks=list(tasks), tokenizer=TOKENIZER, cache_dir=str(tmp_path / "cache"),
                               data_root=None if root is None else str(root), **kwargs)


def assert_reads_local_copy(dm: MultiTaskDataModule, root: Path) -> None:
    (spec,) = dm.specs
    files = spec.load_kwargs()["data_files"]
    assert spec.source["path"] == "json" and spec.data_root == str(root.resolve())
    assert files == {split: str(root.resolve() / "mrpc" / f"{split}.jsonl") for split in ("train", "validation")}
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 12 and len(dm.eval_sets["validation"][0]) == 5
    assert dm.raw_split(spec, "validation")["sentence1"][0] == sentence(100)  # the rows of the file, not the hub's


def test_an_entry_with_a_local_section_is_read_from_the_data_root(root, tmp_path):
    assert_reads_local_copy(data_module(root, tmp_path), root)


def test_the_environment_variable_gives_the_data_root(root, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    assert_reads_local_copy(data_module(None, tmp_path), root)


def test_without_a_data_root_the_hub_source_is_kept(root, tmp_path):
    (spec,) = data_module(None, tmp_path).specs  # nothing is loaded: the hub is not reachable here
    assert spec.data_root is None and spec.load_kwargs() == {"path": "nyu-mll/glue", "name": "mrpc"}
    assert spec.to_dict() == Catalogue.load().tasks["mrpc"].to_dict()
    rooted = Catalogue.load(data_root=str(root)).tasks
    assert rooted["rte"].load_kwargs() == {"path": "nyu-mll/glue", "name": "rte"}  # no local section: still the hub


def test_a_data_root_that_is_not_a_folder_is_named(root, tmp_path):
    for missing in (tmp_path / "nowhere", root / "mrpc" / "train.jsonl"):
        with pytest.raises(CatalogueError, match="data.data_root") as error:
            data_module(missing, tmp_path)
        assert str(missing) in str(error.value)


def test_a_local_section_overrides_splits_holdout_columns_and_labels(root, tmp_path):
    """Like the shipped trec entry: the local copy's `validation` file is an upstream test split (so it is `test`,
    and validation is held out of train), with other column names and another label order."""
    catalogue = tmp_path / "tasks.yaml"
    catalogue.write_text("""
topics:
  family: classification
  source: {path: some-org/topics}
  inputs: [question]
  label: coarse
  num_labels: 3
  local:
    source: {path: json, data_files: {train: topics/train.jsonl, validation: topics/validation.jsonl}}
    splits: {train: train, test: validation}
    validation_from_train: {size: 4, seed: 0}
    inputs: [text]
    label: label
    label_map: {0: 0, 1: 2, 2: 1}
""")
    write_jsonl(root / "topics" / "train.jsonl", [{"text": sentence(i), "label": i % 3} for i in range(16)])
    write_jsonl(root / "topics" / "validation.jsonl", [{"text": sentence(i), "label": 1} for i in range(50, 56)])
    hub = Catalogue.load(str(catalogue)).tasks["topics"]
    assert hub.splits == {"train": "train", "validation": "validation"} and hub.validation_from_train is None
    dm = data_module(root, tmp_path, tasks=["topics"], catalogue=[str(catalogue)])
    (spec,) = dm.specs
    assert spec.splits == {"train": "train", "validation": "train", "test": "validation"}
    assert spec.validation_from_train == {"size": 4, "seed": 0} and spec.inputs == ["text"]
    assert spec.fields.label == "label" and spec.fields.label_map == {0: 0, 1: 2, 2: 1}
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set) == 12 and len(dm.eval_sets["validation"][0]) == 4 and len(dm.eval_sets["test"][0]) == 6
    assert set(dm.eval_sets["test"][0]["label"]) == {2}  # raw 1 mapped to class 2


def test_every_shipped_local_section_resolves_under_the_data_root(root):
    """Every shipped entry with a local copy reads JSON files under the root; the copies whose `validation` file is
    drawn from an upstream test split use it as `test` only (validation picks checkpoints)."""
    hub, local = Catalogue.load().tasks, Catalogue.load(DEFAULT_CATALOGUE, data_root=str(root)).tasks
    with_copies = [name for name, spec in hub.items() if spec.local]
    assert {"mrpc", "trec", "yelp_polarity", "arc_easy", "squad_v2", "xsum"} <= set(with_copies)
    for name in with_copies:
        files = local[name].load_kwargs()["data_files"]
        assert local[name].source["path"] == "json"
        assert all(Path(f).is_relative_to(root.resolve()) for f in files.values()), name
        assert hub[name].source["path"] != "json" and hub[name].data_root is None, name  # the hub entry as it was
    for name in ("trec", "yelp_polarity"):
        assert local[name].splits == {"train": "train", "validation": "train", "test": "validation"}
        assert local[name].validation_from_train is not None
