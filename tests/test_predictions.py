"""Predictions users can use: every evaluation batch carries each example's index in its split, and the per-task
JSONL files join back to the inputs: every example once, in split order, with its input text and gold, under
2-process DDP at the end of `fit`, and the same from `train.py predict` on one process."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from core.metrics import SquadScore
from datamodules.catalogue import Catalogue
from lightning_modules.predictions import lines
from tests.conftest import ROOT, demo_datamodule
from tests.test_cli import TINY_MODEL, train

TASKS = ["demo_sentiment", "demo_rating", "demo_choice", "demo_span"]
EXAMPLES = 25  # odd, and not a multiple of the evaluation batch: rank 1 ends with a filler batch
FOLDERS = {"demo_sentiment": "sentiment", "demo_rating": "rating", "demo_choice": "choice", "demo_span": "span"}
RUN = ["--config", "configs/quickstart.yaml", f"--data.tasks=[{','.join(TASKS)}]",
       f"--data.max_eval_examples={EXAMPLES}", "--data.eval_batch_size=4", "--trainer.enable_progress_bar=false",
       *TINY_MODEL]


def source(task: str) -> list[dict]:
    path = ROOT / "data" / "demo" / FOLDERS[task] / "validation.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()[:EXAMPLES]]


def read(folder: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{task}.jsonl").read_text().splitlines()]


def test_every_evaluation_batch_carries_each_examples_index_in_its_split(demo_cache):
    data = demo_datamodule(TASKS, demo_cache, max_eval_examples=EXAMPLES, eval_batch_size=4)
    for task, loader in enumerate(data.val_dataloader()):
        batches = list(loader)
        per_example = torch.cat([torch.unique_consecutive(b["split_index"]) for b in batches])
        assert per_example.tolist() == list(range(EXAMPLES)), data.specs[task].name
        for batch in batches:
            if "example_index" in batch:  # span windows: their example's index, not their row's
                assert batch["split_index"].tolist() == batch["example_index"]
    train = next(iter(data.train_dataloader()))
    assert train["split_index"].shape == train["task_ids"].shape and (train["split_index"] >= 0).all()


def test_a_line_joins_the_prediction_to_its_id_inputs_choices_and_gold():
    spec = Catalogue.load().tasks["commonsense_qa"]  # id column, dotted choices, letters mapped to choice ids
    rows = {"id": ["q0", "q1"], "question": ["where?", "who?"], "answerKey": ["B", "E"],
            "choices": [{"label": list("ABCDE"), "text": list(text)} for text in ("abcde", "vwxyz")]}
    got = lines(spec, "validation", [{"task": spec.name, "index": 1, "prediction": 4}], rows)
    assert got == [{"index": 1, "id": "q1", "split": "validation", "inputs": {"question": "who?"},
                    "choices": list("vwxyz"), "gold": "E", "predicted": "E", "prediction": 4}]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """A 2-process DDP fit that evaluates its best weights and writes their predictions at the end."""
    tmp = tmp_path_factory.mktemp("ddp-predictions")
    result = train("fit", *RUN, "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_steps=10",
                   "--trainer.val_check_interval=5", "--data.max_tokens=null", "--data.batch_size=8",
                   f"--data.cache_dir={tmp}/c", f"--trainer.logger.init_args.save_dir={tmp}",
                   "--evaluate.weights=best", "--predictions.after_fit=true", f"--predictions.dirpath={tmp}/preds",
                   timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_predictions_under_two_process_ddp_join_back_to_their_inputs(ddp_run):
    final = json.loads((ddp_run / "muppet" / "version_0" / "final_metrics.json").read_text())["validation"]
    for task in TASKS:
        lines, rows = read(ddp_run / "preds", task), source(task)
        assert [line["index"] for line in lines] == list(range(EXAMPLES)), task  # each once, in split order
        assert all(line["split"] == "validation" for line in lines)
        for line, row in zip(lines, rows):
            assert all(line["inputs"][name] == row[name] for name in line["inputs"]) and line["inputs"], task
    # the predictions are those the final evaluation scored: the same best weights, gathered across both ranks
    sentiment = read(ddp_run / "preds", "demo_sentiment")
    for line, row in zip(sentiment, source("demo_sentiment")):
        p = line["prediction"]
        assert line["gold"] == row["label"] and line["predicted"] == ["negative", "positive"][p["label"]]
        assert len(p["probabilities"]) == 2 and math.isclose(sum(p["probabilities"]), 1.0, rel_tol=1e-5)
    accuracy = sum(line["predicted"] == line["gold"] for line in sentiment) / EXAMPLES
    assert math.isclose(accuracy, final["demo_sentiment"]["accuracy"], rel_tol=1e-6)
    choice = read(ddp_run / "preds", "demo_choice")
    assert all(line["choices"] == row["options"] for line, row in zip(choice, source("demo_choice")))
    accuracy = sum(line["prediction"] == line["gold"] for line in choice) / EXAMPLES
    assert math.isclose(accuracy, final["demo_choice"]["accuracy"], rel_tol=1e-6)
    span = read(ddp_run / "preds", "demo_span")
    assert all(isinstance(line["prediction"], str) and line["prediction"] in line["inputs"]["context"]
               for line in span)
    exact_match = SquadScore("exact_match")
    exact_match.update([line["prediction"] for line in span], [line["gold"]["text"] for line in span])
    exact = float(exact_match.compute())
    assert math.isclose(exact, final["demo_span"]["exact_match"], rel_tol=1e-6, abs_tol=1e-6)
    assert all(isinstance(line["prediction"], float) for line in read(ddp_run / "preds", "demo_rating"))


@pytest.mark.slow
def test_the_predict_subcommand_on_one_process_writes_the_same_predictions(ddp_run):
    best = next((ddp_run / "muppet" / "version_0" / "checkpoints").glob("step*-score*.ckpt"))
    result = train("predict", *RUN, f"--data.cache_dir={ddp_run}/c", f"--trainer.logger.init_args.save_dir={ddp_run}",
                   f"--ckpt_path={best}")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = ddp_run / "muppet" / "version_1" / "predictions"  # the predict run's own folder
    for task in TASKS:
        one, two = read(folder, task), read(ddp_run / "preds", task)
        assert [line["index"] for line in one] == list(range(EXAMPLES))
        for a, b in zip(one, two):
            if task == "demo_sentiment":
                assert a["prediction"]["label"] == b["prediction"]["label"]
                torch.testing.assert_close(a["prediction"]["probabilities"], b["prediction"]["probabilities"])
            elif task == "demo_rating":
                assert math.isclose(a["prediction"], b["prediction"], rel_tol=1e-4, abs_tol=1e-5)
            else:
                assert a == b, task


@pytest.mark.slow
def test_end_of_fit_stages_under_ddp_use_the_weights_each_asks_for(tmp_path):
    """One 2-process DDP fit: the final evaluation asks for the best weights, the predictions for the last (the run
    ends at step 12, after its last validation at 10): each gets its own, through `ckpt_path`."""
    result = train("fit", *RUN, "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_steps=12",
                   "--trainer.val_check_interval=5", "--data.max_tokens=null", "--data.batch_size=8",
                   f"--data.cache_dir={tmp_path}/c", f"--trainer.logger.init_args.save_dir={tmp_path}",
                   "--evaluate.weights=best", "--predictions.after_fit=true", "--predictions.weights=last",
                   f"--predictions.dirpath={tmp_path}/preds", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "muppet" / "version_0"
    report = json.loads((run / "final_metrics.json").read_text())
    assert Path(report["checkpoint"]).name.startswith("step") and report["step"] in (5, 10)
    final = run / "checkpoints" / "final.ckpt"
    assert torch.load(final, map_location="cpu", weights_only=False)["global_step"] == 12
    again = train("predict", *RUN, f"--data.cache_dir={tmp_path}/c", f"--trainer.logger.init_args.save_dir={tmp_path}",
                  f"--ckpt_path={final}", f"--predictions.dirpath={tmp_path}/from_final")
    assert again.returncode == 0, again.stderr[-3000:]
    for line, reference in zip(read(tmp_path / "preds", "demo_sentiment"), read(tmp_path / "from_final",
                                                                                "demo_sentiment")):
        torch.testing.assert_close(line["prediction"]["probabilities"], reference["prediction"]["probabilities"])
    validated = train("validate", *RUN, f"--data.cache_dir={tmp_path}/c",
                      f"--trainer.logger.init_args.save_dir={tmp_path}", f"--ckpt_path={report['checkpoint']}")
    assert validated.returncode == 0, validated.stderr[-3000:]
    score = re.search(r"val at step \d+: score ([0-9.]+)", validated.stderr + validated.stdout)
    assert score and math.isclose(float(score.group(1)), report["validation"]["score"], abs_tol=1e-4)
