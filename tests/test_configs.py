"""Every shipped config is instantiated through train.py's CLI (Trainer, strategy, callbacks, model, data) with a
tiny backbone of the same architecture and the bundled demo tasks swapped in, and trains a few steps on the CPU
with its own precision, clipping, R3F, generation and export. What needs a GPU (FSDP itself) is instantiated and
inspected, not run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from datamodules.catalogue import Catalogue
from datamodules.multitask import MultiTaskDataModule
from lightning_modules.checkpoint_io import AtomicCheckpointIO, LatestCheckpoint
from lightning_modules.muppet import MuppetModule
from lightning_modules.optim import decays
from tests.conftest import TINY, TOKENIZER
from tests.test_cli import CONFIGS
from train import TRAINER_DEFAULTS, MuppetCLI, main

DEMO = {"roberta": "[demo_sentiment,demo_topic_pair,demo_rating,demo_choice,demo_span]",
        "bart": "[demo_sentiment,demo_choice,demo_span,demo_summary]"}


class CpuCLI(MuppetCLI):
    """Keeps the configured strategy for inspection and runs on one CPU process instead when it needs a GPU."""

    def instantiate_trainer(self, **kwargs):
        trainer = self.config_init[self.subcommand]["trainer"] if self.subcommand else self.config_init["trainer"]
        self.configured_strategy = trainer["strategy"]
        for key, value in {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto"}.items():
            trainer[key] = value
        return super().instantiate_trainer(**kwargs)


def architecture(config: dict) -> str:
    model = config["model"]
    if model.get("backbone_config"):
        return model["backbone_config"]["model_type"]
    return "bart" if "bart" in model["backbone"] else "roberta"


def instantiate(config_path: Path, tmp_path: Path) -> CpuCLI:
    config = yaml.safe_load(config_path.read_text())
    kind = architecture(config)
    args = ["--config", str(config_path), "--model.backbone=null", f"--model.backbone_config={TINY[kind]}",
            f"--model.tokenizer={TOKENIZER}", f"--data.tasks={DEMO[kind]}", "--data.max_eval_examples=8",
            f"--data.cache_dir={tmp_path}/cache", "--data.num_workers=0", "--trainer.max_steps=3",
            "--trainer.val_check_interval=3", "--trainer.limit_val_batches=2", "--trainer.log_every_n_steps=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
    if config["model"].get("max_generation_examples"):
        args += ["--model.max_generation_examples=4", "--model.max_new_tokens=4"]
    if config["model"].get("init_from"):  # a fine-tuning config's pre-finetuned start: not built here
        args.append("--model.init_from=null")
    return CpuCLI(MuppetModule, MultiTaskDataModule, parser_kwargs={"parser_mode": "omegaconf"},
                  trainer_defaults=TRAINER_DEFAULTS, seed_everything_default=0, run=False, args=args)


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_parses_offline_and_its_tasks_exist(config_path, capsys):
    """train.py's own entry point in this process (test_cli.py runs it as a child process, in the slow tier)."""
    with pytest.raises(SystemExit) as exit:
        main(["fit", "--config", str(config_path), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert exit.value.code == 0 and printed["model"]["optimizer"] and printed["trainer"]["logger"]
    assert Catalogue.load().select(printed["data"]["tasks"])


@pytest.mark.slow
@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_instantiates_and_trains_on_cpu(config_path, tmp_path):
    config = yaml.safe_load(config_path.read_text())
    cli = instantiate(config_path, tmp_path)
    trainer, module = cli.trainer, cli.model
    assert all(any(isinstance(c, kind) for c in trainer.callbacks)
               for kind in (LatestCheckpoint, LearningRateMonitor))
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert trainer.reload_dataloaders_every_n_epochs == 1
    assert trainer.gradient_clip_val == config["trainer"].get("gradient_clip_val")
    assert trainer.precision == config["trainer"].get("precision", "32-true")
    assert module.hparams.r3f_lambda == config["model"].get("r3f_lambda", 0.0)
    cli.before_fit()
    trainer.fit(module, datamodule=cli.datamodule)
    assert trainer.callback_metrics["val/score"] >= 0
    cli.after_fit()  # the end of fit as `train.py fit` runs it: export, and the config's evaluation and predictions
    assert trainer.global_step == 3
    assert all(torch.isfinite(p).all() for p in module.parameters())
    run = Path(trainer.log_dir)
    assert (run / "export" / "muppet_heads.pt").exists()
    if (config.get("evaluate") or {}).get("weights"):
        report = json.loads((run / "final_metrics.json").read_text())
        assert report["weights"] == config["evaluate"]["weights"] and report["validation"]["score"] >= 0
    if (config.get("predictions") or {}).get("after_fit"):
        assert list((run / "predictions").glob("*.jsonl"))


def test_the_fsdp_config_wraps_bart_layers_with_original_parameters(tmp_path):
    cli = instantiate(Path("configs/muppet_bart.yaml"), tmp_path)
    strategy = cli.configured_strategy
    assert isinstance(strategy, FSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy) and strategy.kwargs.get("use_orig_params", True)
    wrapped = {type(m).__name__ for m in cli.model.modules() if type(m) in policy._module_classes}
    assert wrapped == {"BartEncoderLayer", "BartDecoderLayer"}


def test_weight_decay_is_chosen_by_name_so_flat_fsdp_shards_still_decay(tiny_bart, tiny_roberta, demo_cache):
    from tests.conftest import demo_datamodule
    data = demo_datamodule(["demo_sentiment", "demo_choice"], demo_cache)
    for backbone in (tiny_roberta, tiny_bart):
        module = MuppetModule(backbone=backbone, task_specs=data.task_specs)
        for name, p in module.named_parameters():  # FSDP's use_orig_params shards are 1-D: names must decide
            assert decays(f"_fsdp_wrapped_module.{name}") == (p.ndim >= 2), name
