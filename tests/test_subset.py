"""Few-shot training subsets (data.train_fraction / data.train_examples): nested across sizes for one seed,
deterministic, seed-dependent, drawn from the carved train split, and keyed into the preprocess cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from datamodules.subset import check_subset, subset_rows
from tests.conftest import demo_datamodule


def test_fractions_and_counts_are_nested_prefixes_of_one_permutation():
    rows = {f: set(subset_rows(1000, f, None, 7, "t")) for f in (0.1, 0.2, 0.5, 1.0)}
    assert [len(rows[f]) for f in (0.1, 0.2, 0.5, 1.0)] == [100, 200, 500, 1000]
    assert rows[0.1] < rows[0.2] < rows[0.5] < rows[1.0]
    counts = {n: set(subset_rows(1000, None, n, 7, "t")) for n in (16, 64, 100)}
    assert counts[16] < counts[64] < counts[100] == rows[0.1]  # the same permutation whichever option
    assert len(subset_rows(50, None, 100, 7, "t")) == 50 and len(subset_rows(50, 0.001, None, 7, "t")) == 1


def test_subset_is_deterministic_and_depends_on_seed_and_task():
    first = subset_rows(1000, 0.1, None, 0, "a")
    assert (first == subset_rows(1000, 0.1, None, 0, "a")).all()
    assert list(first) == sorted(first)  # source order
    assert set(first) != set(subset_rows(1000, 0.1, None, 1, "a"))
    assert set(first) != set(subset_rows(1000, 0.1, None, 0, "b"))


@pytest.mark.parametrize("fraction, examples, message", [
    (0.5, 10, "both set"), (0.0, None, "train_fraction must be in (0, 1]"), (1.5, None, "train_fraction"),
    (None, 0, "train_examples must be an integer >= 1"), (None, 2.5, "train_examples")])
def test_bad_subset_options_fail_naming_the_option(fraction, examples, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("]", r"\]")):
        check_subset(fraction, examples)


def texts(dm, split: str = "train") -> list[str]:
    return [dm.raw_split(dm.specs[0], split)["text"][i] for i in range(len(dm.raw_split(dm.specs[0], split)))]


def test_datamodule_trains_on_the_subset_and_caches_it_under_its_own_key(tmp_path):
    cache = str(tmp_path / "cache")
    sizes, fingerprints = {}, {}
    for name, kwargs in {"full": {}, "f10": {"train_fraction": 0.1}, "f10s1": {"train_fraction": 0.1, "seed": 1},
                         "n64": {"train_examples": 64}}.items():
        dm = demo_datamodule(["demo_sentiment"], cache, **kwargs)
        sizes[name] = len(dm.train_set.datasets[0])
        fingerprints[name] = dm.train_set.datasets[0]._fingerprint
        assert len(dm.eval_sets["validation"][0]) == 200  # validation untouched
    assert sizes == {"full": 2000, "f10": 200, "f10s1": 200, "n64": 64}
    assert len(set(fingerprints.values())) == len(fingerprints)  # one cache entry per subset
    again = demo_datamodule(["demo_sentiment"], cache, train_fraction=0.1)
    assert again.train_set.datasets[0]._fingerprint == fingerprints["f10"]  # ... reused by the same settings
    assert (Path(cache) / "demo_sentiment").is_dir()


def test_subset_comes_from_the_carved_train_rows(tmp_path):
    rows = [{"text": f"sentence number {i} .", "label": i % 2} for i in range(100)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    entry = {"family": "classification", "source": {"path": "json", "data_files": {"train": str(tmp_path / "train.jsonl")}},
             "validation_from_train": {"size": 20, "seed": 0}, "inputs": ["text"], "label": "label", "num_labels": 2}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"carved": entry}))
    make = lambda **kw: demo_datamodule(["carved"], str(tmp_path / "cache"),  # noqa: E731
                                        catalogue=[str(tmp_path / "mine.yaml")], **kw)
    dm = make(train_fraction=0.5)
    train, held = set(texts(dm)), set(texts(dm, "validation"))
    assert len(train) == 40 and len(held) == 20 and not train & held
    assert set(texts(make(train_fraction=0.25))) < train

