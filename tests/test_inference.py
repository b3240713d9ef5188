"""Inference on raw rows (lightning_modules/inference.py) gives what `predict` writes for the same weights, rows and
tasks, from an export folder and from a checkpoint; a RoBERTa classification task exported as a standard Hugging Face
folder (lightning_modules/hf_export.py) gives the same logits through AutoModelForSequenceClassification and label
names through pipeline("text-classification")."""

from __future__ import annotations

import dataclasses
import json

import lightning as L
import pytest
import torch
from transformers import (
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    pipeline,
)

from datamodules.catalogue import Catalogue
from datamodules.families.base import Lengths
from lightning_modules.hf_export import NotStandard, save_standard, status
from lightning_modules.inference import Predictor, main
from lightning_modules.muppet import MuppetModule
from lightning_modules.predictions import WritePredictions
from tests.conftest import ROOT, demo_datamodule

TASKS = ["demo_sentiment", "demo_topic_pair", "demo_rating", "demo_choice", "demo_span"]
FOLDERS = {"demo_sentiment": "sentiment", "demo_topic_pair": "topic_pair", "demo_rating": "rating",
           "demo_choice": "choice", "demo_span": "span"}
EXAMPLES, BATCH = 8, 4


def source(task: str) -> list[dict]:
    path = ROOT / "data" / "demo" / FOLDERS[task] / "validation.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()[:EXAMPLES]]


@pytest.fixture(scope="module")
def trained(tiny_roberta, demo_cache, tmp_path_factory):
    """(export folder, checkpoint, predictions folder of `predict` with those weights) after 3 training steps."""
    folder = tmp_path_factory.mktemp("inference")
    data = demo_datamodule(TASKS, demo_cache, batch_size=8, max_eval_examples=EXAMPLES, eval_batch_size=BATCH,
                           max_length=96, doc_stride=24)  # not the defaults: inference must take these
    module = MuppetModule(backbone=tiny_roberta, task_specs=data.task_specs)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        use_distributed_sampler=False, reload_dataloaders_every_n_epochs=1,
                        default_root_dir=str(folder), callbacks=[WritePredictions(str(folder / "predictions"))])
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(folder / "run.ckpt")
    module.export_pretrained(folder / "export", dataclasses.asdict(data.lengths))
    trainer.predict(module, datamodule=data)  # what `train.py predict` writes for these weights
    return folder / "export", folder / "run.ckpt", folder / "predictions"


def expected(predictions, task: str) -> list[dict]:
    return [json.loads(line) for line in (predictions / f"{task}.jsonl").read_text().splitlines()]


def test_inference_from_an_export_writes_what_predict_writes(trained):
    export, _, predictions = trained
    predictor = Predictor.load(export)
    assert predictor.tasks == TASKS and predictor.module.backbone.pooling == "first"
    for task in TASKS:
        assert predictor.lines(task, source(task), batch_size=BATCH, split="validation") == \
               expected(predictions, task), task


def test_an_export_and_a_checkpoint_carry_the_lengths_trained_with_and_an_argument_overrides_them(trained):
    for path in trained[:2]:
        assert Predictor.load(path).lengths == Lengths(max_length=96, max_target_length=64, doc_stride=24), path
        assert Predictor.load(path, max_length=40).lengths == Lengths(40, 64, 24), path


@pytest.fixture(scope="module")
def from_checkpoint(trained) -> Predictor:
    return Predictor.load(trained[1])


def test_inference_from_a_checkpoint_writes_what_predict_writes(trained, from_checkpoint):
    assert from_checkpoint.module.backbone.pooling == "first"
    for task in ("demo_sentiment", "demo_span"):
        assert from_checkpoint.lines(task, source(task), batch_size=BATCH, split="validation") == \
               expected(trained[2], task), task


@pytest.mark.parametrize("task,gold", [("demo_sentiment", "label"), ("demo_rating", "stars"),
                                       ("demo_choice", "answer"), ("demo_span", "answers")])
def test_rows_without_gold_are_predicted_alike_in_other_batch_shapes(trained, from_checkpoint, task, gold):
    """The family's preprocess reads a target: rows without one get a placeholder; the lines show no gold. Other
    batch shapes give the same predictions up to float rounding."""
    bare = [{k: v for k, v in row.items() if k != gold} for row in source(task)]
    got = from_checkpoint.lines(task, bare, batch_size=5)
    assert all("gold" not in line for line in got)
    for line, reference in zip(got, expected(trained[2], task), strict=True):
        prediction = reference["prediction"]
        if isinstance(prediction, dict):
            assert line["prediction"]["label"] == prediction["label"]
            torch.testing.assert_close(line["prediction"]["probabilities"], prediction["probabilities"])
        elif isinstance(prediction, float):
            assert line["prediction"] == pytest.approx(prediction, abs=1e-5)
        else:
            assert line["prediction"] == prediction


def test_the_command_writes_jsonl(trained, tmp_path, capsys):
    export, _, predictions = trained
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in source("demo_choice")))
    main(["--model", str(export), "--task", "demo_choice", "--input", str(rows), "--output",
          str(tmp_path / "out.jsonl"), "--batch-size", str(BATCH), "--split", "validation", "--device", "cpu"])
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert got == expected(predictions, "demo_choice")
    with pytest.raises(SystemExit) as exit_:
        main(["--model", str(export), "--task", "nope", "--input", str(rows), "--device", "cpu"])
    assert exit_.value.code == 2 and "its tasks: ['demo_sentiment'" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_inference_on_a_gpu(trained):
    export, _, predictions = trained
    got = Predictor.load(export, device="cuda").lines("demo_sentiment", source("demo_sentiment"), BATCH,
                                                      split="validation")
    want = expected(predictions, "demo_sentiment")
    assert [line["prediction"]["label"] for line in got] == [line["prediction"]["label"] for line in want]


# ---- standard Hugging Face folders ----------------------------------------------------------------------------------
def module_logits(predictor: Predictor, task: str, rows: list[dict]) -> tuple[dict, torch.Tensor]:
    """(the collated batch, the task head's logits) of the project's own model."""
    batch = predictor.collator([row for example in predictor.encode(task, rows) for row in example])
    with torch.no_grad():
        _, logits = predictor.module(batch)
    return batch, logits[predictor.tasks.index(task)][1]


def test_a_roberta_classification_task_exports_as_a_standard_folder(trained, tmp_path):
    predictor = Predictor.load(trained[0])
    rows = source("demo_sentiment")
    save_standard(predictor.module, "demo_sentiment", tmp_path / "hf")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert type(model).__name__ == "RobertaForSequenceClassification"
    assert model.config.id2label == {0: "negative", 1: "positive"}
    batch, expected_logits = module_logits(predictor, "demo_sentiment", rows)
    with torch.no_grad():
        got = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    print(f"max abs logit difference: {(got - expected_logits).abs().max().item():.3g}")
    torch.testing.assert_close(got, expected_logits, rtol=0, atol=1e-5)
    classify = pipeline("text-classification", model=str(tmp_path / "hf"), device=-1)
    labels = [out["label"] for out in classify([row["text"] for row in rows])]
    assert labels == [line["predicted"] for line in predictor.lines("demo_sentiment", rows)]


def test_regression_choice_and_span_heads_export_with_equal_logits(trained, tmp_path):
    predictor = Predictor.load(trained[0])
    for task, auto in (("demo_rating", AutoModelForSequenceClassification),
                       ("demo_choice", AutoModelForMultipleChoice), ("demo_span", AutoModelForQuestionAnswering)):
        save_standard(predictor.module, task, tmp_path / task)
        model = auto.from_pretrained(tmp_path / task).eval()
        batch, ours = module_logits(predictor, task, source(task))
        with torch.no_grad():
            if task == "demo_choice":  # (E * K, T) rows -> (E, K, T), three choices each
                shape = (len(ours), -1, batch["input_ids"].shape[1])
                got = model(input_ids=batch["input_ids"].view(shape),
                            attention_mask=batch["attention_mask"].view(shape)).logits
            else:
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                got = torch.stack([out.start_logits, out.end_logits], 1) if task == "demo_span" else out.logits
        if task == "demo_span":  # equal on real tokens (the project's head masks padding)
            real = batch["attention_mask"][:, None, :].expand_as(ours).bool()
            got, ours = got[real], ours[real]
        if task == "demo_rating":  # the logit is the score in stars
            assert got.squeeze(-1).tolist() == pytest.approx(predictor.predict(task, source(task)), abs=1e-5)
        else:
            torch.testing.assert_close(got, ours, rtol=0, atol=1e-5, msg=task)


def test_heads_without_a_standard_class_are_named(tiny_roberta, capsys):
    module = MuppetModule(backbone=tiny_roberta, task_specs=[s.to_dict() for s in Catalogue.load().select(
        ["demo_sentiment", "demo_span"])], pooling="mean")
    table = status(module)
    assert table["demo_span"] == "AutoModelForQuestionAnswering"
    assert table["demo_sentiment"].startswith("not standard: task 'demo_sentiment': mean pooling: no standard class")
    with pytest.raises(NotStandard, match="mean pooling"):
        save_standard(module, "demo_sentiment", "unused")
