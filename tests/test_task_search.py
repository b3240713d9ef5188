"""Finding tasks (datamodules/task_search.py): the catalogue listed and searched offline, with each task's family,
source, outputs, mixtures and local copy, and with a data root whether the local copy's files are there."""

from __future__ import annotations

import json

import pytest

from datamodules.task_search import main


def test_list_a_mixture_shows_family_source_outputs_and_mixtures(capsys):
    rows = main(["list", "--mixture", "quickstart"])
    assert [r["name"] for r in rows] == ["demo_sentiment", "demo_topic_pair", "demo_rating", "demo_choice",
                                         "demo_span"]
    assert [r["outputs"] for r in rows] == ["2 classes", "2 classes", "regression", "3 choices", "answer span"]
    assert rows[0]["family"] == "classification" and rows[0]["source"] == "json"
    assert "quickstart" in rows[0]["mixtures"].split(",")
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["name", "family", "source", "outputs", "mixtures", "license", "local"]
    assert out.rstrip().endswith("5 task(s)")


def test_search_needs_every_word_and_filters_by_family(capsys):
    rte = main(["search", "glue rte", "--mixture", "glue"])
    assert [r["name"] for r in rte] == ["rte"] and rte[0]["source"] == "nyu-mll/glue:rte"
    assert "superglue" in rte[0]["mixtures"].split(",") and rte[0]["outputs"] == "2 classes"
    choices = main(["search", "super_glue", "--family", "multiple_choice", "--mixture", "muppet", "--json"])
    assert [r["name"] for r in choices] == ["copa"] and choices[0]["outputs"] == "2 choices"
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["name"] == "copa"
    assert main(["search", "no-such-task-anywhere"]) == []


def test_local_copies_with_and_without_a_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MUPPET_DATA_ROOT", raising=False)
    assert {r["name"]: r["local"] for r in main(["list", "--family", "classification"])}["sst2"] == "yes"
    (tmp_path / "sst2").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "sst2" / f"{split}.jsonl").write_text('{"sentence": "fine .", "label": 1}\n')
    local = {r["name"]: r["local"] for r in main(["list", "--data-root", str(tmp_path)])}
    assert local["sst2"] == "present" and local["demo_sentiment"] == "-"
    assert local["cola"] == f"missing: {tmp_path.resolve() / 'cola' / 'train.jsonl'}"


def test_unknown_mixture_and_a_search_without_query_are_named(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["list", "--mixture", "nope"])
    assert exit_.value.code == 2 and "unknown mixture 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["search"])
