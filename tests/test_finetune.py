"""The second stage with the same train.py: the fine-tuning configs follow RoBERTa's published recipes and start
from an export with reused heads; at the end of `fit` the best or the last weights are evaluated on the validation
and test splits (`final/<task>/<metric>`, `final_metrics.json`) and the module keeps its final weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from datamodules.catalogue import Catalogue
from datamodules.multitask import MultiTaskDataModule
from lightning_modules.export import HEADS_FILE
from lightning_modules.after_fit import FINAL_CHECKPOINT, EndOfFit, FinalEvaluation
from lightning_modules.muppet import MuppetModule
from tests.conftest import ROOT, TINY, demo_datamodule
from tests.test_cli import scalars
from tests.test_configs import CpuCLI
from train import TRAINER_DEFAULTS

# (config, task, family, lr, examples per update, epochs, weight decay): Liu et al. (2019), Appendix C, Table 10;
# RTE at fairseq's values (examples/roberta/README.glue.md)
RECIPES = [("finetune_rte.yaml", "rte", "classification", 2e-5, 16, 10, 0.1),
           ("finetune_race.yaml", "race", "multiple_choice", 1e-5, 16, 4, 0.1),
           ("finetune_squad.yaml", "squad", "span", 1.5e-5, 48, 2, 0.01)]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r[0])
def test_finetune_configs_follow_the_published_recipes(recipe):
    name, task, family, lr, batch, epochs, decay = recipe
    config = yaml.safe_load((ROOT / "configs" / name).read_text())
    trainer, model, data = config["trainer"], config["model"], config["data"]
    assert [s.family for s in Catalogue.load().select(data["tasks"])] == [family] and data["tasks"] == [task]
    adam = model["optimizer"]["init_args"]
    assert (adam["lr"], adam["weight_decay"], adam["betas"], adam["eps"]) == (lr, decay, [0.9, 0.98], 1e-6)
    assert data["batch_size"] * trainer["devices"] * trainer.get("accumulate_grad_batches", 1) == batch
    assert data["max_tokens"] is None and trainer["max_epochs"] == epochs and model["warmup"] == 0.06
    assert model["loss_scaling"] == "none" and model["init_from"] is None
    assert config["evaluate"]["weights"] == "best" and config["predictions"]["after_fit"] is True


class FinalWeights(Callback):
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}


def demo_catalogue(tmp_path: Path) -> str:
    """The demo catalogue plus a sentiment task whose test split is its validation file, and a second
    multiple-choice task that no pre-finetuning run has seen."""
    demo = yaml.safe_load((ROOT / "configs" / "tasks" / "demo.yaml").read_text())
    folder = ROOT / "data" / "demo"
    sentiment = {**demo["demo_sentiment"], "splits": {"train": "train", "validation": "validation", "test": "test"}}
    sentiment["source"] = {"path": "json", "data_files": {
        split: str(folder / "sentiment" / f"{'train' if split == 'train' else 'validation'}.jsonl")
        for split in ("train", "validation", "test")}}
    choice = {**demo["demo_choice"], "source": {"path": "json", "data_files": {
        split: str(folder / "choice" / f"{split}.jsonl") for split in ("train", "validation")}}}
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump({"sentiment_tested": sentiment, "new_choice": choice}))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["best", "last"])
def test_final_evaluation_of_the_chosen_weights(weights, tiny_roberta, demo_cache, tmp_path):
    data = demo_datamodule(["sentiment_tested", "demo_choice"], demo_cache, batch_size=16, max_eval_examples=24,
                           eval_batch_size=8, catalogue=[str(ROOT / "configs" / "tasks"), demo_catalogue(tmp_path)])
    torch.manual_seed(0)
    module = MuppetModule(backbone=tiny_roberta, task_specs=data.task_specs, dropout=0.0)
    module.optimizer = lambda params: torch.optim.AdamW(params, lr=3e-3)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/score", mode="max")
    final = FinalWeights()
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=9, val_check_interval=3, logger=logger,
                        callbacks=[checkpoints, final], enable_progress_bar=False, limit_val_batches=1,
                        enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                        reload_dataloaders_every_n_epochs=1)
    trainer.fit(module, datamodule=data)
    trainer.limit_val_batches = 1.0  # fit validated one batch per task; the final evaluation reads whole splits
    last_score = float(trainer.validate(module, datamodule=data, verbose=False)[0]["val/score"])
    EndOfFit(trainer, module, data).run(None, FinalEvaluation(weights), None)
    report = json.loads((Path(trainer.log_dir) / "final_metrics.json").read_text())
    validation = report["validation"]
    assert set(validation) == {"score", "sentiment_tested", "demo_choice"}
    if weights == "best":
        best = torch.load(checkpoints.best_model_path, weights_only=False)
        assert report["checkpoint"] == checkpoints.best_model_path and report["step"] == best["global_step"]
    else:
        assert report["checkpoint"] == str(tmp_path / "checkpoints" / FINAL_CHECKPOINT) and report["step"] == 9
        saved = torch.load(report["checkpoint"], weights_only=False)["state_dict"]
        assert all(torch.equal(value, final.state[name]) for name, value in saved.items())
        assert math.isclose(validation["score"], last_score, rel_tol=1e-6)  # the final weights on whole splits
    assert trainer.limit_val_batches == 1.0 and trainer.limit_test_batches == 1.0  # restored as they were
    # the tested task's test split is its validation file; the other task has no test split
    assert report["test"]["sentiment_tested"] == validation["sentiment_tested"] and "demo_choice" not in report["test"]
    run = Path(trainer.log_dir)
    accuracy = validation["sentiment_tested"]["accuracy"]
    assert scalars(run, "final/sentiment_tested/accuracy") == [pytest.approx(accuracy)]
    assert scalars(run, "final_test/score") and scalars(run, "final/score")
    assert len(scalars(run, "val/score")) == 4  # 3 validations in fit and ours: the final one logs under final/


def rte_cli(init_from, demo_cache, tmp_path, *extra: str) -> CpuCLI:
    """The RTE fine-tuning config from `init_from` with reused heads, on a demo task seen in pre-finetuning and a
    multiple-choice task new to it (not run)."""
    catalogue = f"[{ROOT / 'configs' / 'tasks'},{demo_catalogue(tmp_path)}]"
    return CpuCLI(MuppetModule, MultiTaskDataModule, parser_kwargs={"parser_mode": "omegaconf"},
                  trainer_defaults=TRAINER_DEFAULTS, seed_everything_default=0, run=False,
                  args=["--config", "configs/finetune_rte.yaml", f"--model.init_from={init_from}",
                        "--model.reuse_heads=true", "--data.tasks=[demo_sentiment,new_choice]",
                        f"--data.catalogue={catalogue}", f"--data.cache_dir={demo_cache}",
                        f"--trainer.logger.init_args.save_dir={tmp_path}", *extra])


def test_fine_tuning_config_starts_from_an_export_and_reuses_its_heads(tiny_roberta, demo_cache, tmp_path):
    """The RTE recipe with demo tasks: a task seen in pre-finetuning keeps its head, a multiple-choice task new to
    it keeps the family's shared head; the backbone and tokenizer are the export's (no hub: the config names
    roberta-large)."""
    upstream = demo_datamodule(["demo_sentiment", "demo_choice"], demo_cache)
    module = MuppetModule(backbone=tiny_roberta, task_specs=upstream.task_specs)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01)  # differ from any fresh initialisation
    export = module.export_pretrained(tmp_path / "export")
    cli = rte_cli(export, demo_cache, tmp_path)
    heads = torch.load(export / HEADS_FILE)
    model = cli.model
    assert model.hparams.backbone == "roberta-large" and model.backbone.config.hidden_size == TINY["roberta"][
        "hidden_size"]
    assert cli.datamodule.tokenizer_name == str(export)
    for name, value in model.heads.state_dict().items():
        assert torch.equal(value, heads[name]), name
    for name, value in model.backbone.model.state_dict().items():
        assert torch.equal(value, module.backbone.model.state_dict()[name]), name


def test_fine_tuning_starts_from_a_checkpoint_alone(demo_cache, tmp_path):
    """`--model.init_from=X.ckpt` with the backbone's folder gone and the config naming roberta-large (not on disk,
    no hub): backbone and tokenizer are rebuilt from what the checkpoint stores, its weights and heads loaded, and
    two fine-tuning steps run."""
    import shutil

    from tests.conftest import save_tiny
    folder = save_tiny("roberta", tmp_path / "tiny")
    upstream = demo_datamodule(["demo_sentiment", "demo_choice"], demo_cache)
    module = MuppetModule(backbone=folder, task_specs=upstream.task_specs)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01)  # differ from any fresh initialisation
    trainer = L.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_checkpointing=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "upstream.ckpt")  # on_save_checkpoint stores config and tokenizer
    shutil.rmtree(folder)
    cli = rte_cli(tmp_path / "upstream.ckpt", demo_cache, tmp_path, "--trainer.max_steps=2",
                  "--trainer.val_check_interval=2", "--evaluate.weights=last", "--predictions.after_fit=false",
                  "--data.max_tokens=null", "--data.batch_size=4", "--trainer.accumulate_grad_batches=1",
                  "--trainer.precision=32-true")
    model = cli.model
    assert model.hparams.backbone == "roberta-large" and model.backbone.config.hidden_size == TINY["roberta"][
        "hidden_size"]
    text = "the movie was overall delightful ."
    assert model.tokenizer(text)["input_ids"] == module.tokenizer(text)["input_ids"]
    assert cli.datamodule.tokenizer(text)["input_ids"] == module.tokenizer(text)["input_ids"]
    for name, value in model.backbone.model.state_dict().items():
        assert torch.equal(value, module.backbone.model.state_dict()[name]), name
    old_heads = module.heads.state_dict()
    for name, value in model.heads.state_dict().items():  # sentiment's own head, the shared multiple-choice head
        assert torch.equal(value, old_heads[name]), name
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2


def test_a_checkpoint_without_a_stored_config_needs_the_backbone_named(demo_cache, tmp_path):
    upstream = demo_datamodule(["demo_sentiment"], demo_cache)
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="model.init_from .*old.ckpt' stores no backbone config.*model.backbone"):
        MuppetModule(backbone=None, init_from=str(path), task_specs=upstream.task_specs)


@pytest.mark.slow
def test_init_from_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    bad = tmp_path / "weights.txt"
    bad.write_text("not a checkpoint\n")
    import subprocess
    import sys

    from tests.test_cli import OFFLINE
    result = subprocess.run([sys.executable, "train.py", "fit", "--config", "configs/quickstart.yaml",
                             f"--model.init_from={bad}", f"--trainer.logger.init_args.save_dir={tmp_path}/logs"],
                            cwd=ROOT, env=OFFLINE, capture_output=True, text=True, timeout=300)
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert last.startswith(f"error: model.init_from '{bad}' is not a Lightning checkpoint"), last
    assert not (tmp_path / "logs").exists()
