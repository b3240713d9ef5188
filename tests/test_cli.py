"""train.py through its real entry point: every shipped config parses offline; a short fit writes logs, the
resolved config, a checkpoint and an export, and its loss falls; bad options and task names fail at once; 2-process
CPU DDP with mixed batches runs without find_unused_parameters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datamodules.catalogue import Catalogue
from lightning_modules.export import recorded_lengths
from tests.conftest import ROOT
from tests.recording import check_ddp_gradients

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONWARNINGS": "ignore"}
TINY_MODEL = ["--model.backbone_config.hidden_size=32", "--model.backbone_config.intermediate_size=64",
              "--model.backbone_config.num_attention_heads=2"]


def train(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=OFFLINE, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_parses_offline_and_its_tasks_exist(config):
    result = train("fit", "--config", str(config), "--print_config")
    assert result.returncode == 0, result.stderr[-2000:]
    printed = yaml.safe_load(result.stdout)
    assert printed["model"]["optimizer"] and printed["trainer"]["logger"]
    assert Catalogue.load().select(printed["data"]["tasks"])


def test_paper_configs_use_the_papers_optimizer_and_scale():
    for name in ("muppet_roberta.yaml", "muppet_bart.yaml"):
        config = yaml.safe_load((ROOT / "configs" / name).read_text())
        adam = config["model"]["optimizer"]["init_args"]
        assert adam["betas"] == [0.9, 0.98] and adam["eps"] == 1e-6 and config["model"]["loss_scaling"] == "log"
        assert config["trainer"]["precision"] == "bf16-mixed"
    bart = Catalogue.load().select(yaml.safe_load((ROOT / "configs" / "muppet_bart.yaml").read_text())["data"]["tasks"])
    assert len(bart) == 46 and any(s.family == "summarization" for s in bart)


@pytest.mark.slow
def test_cli_overrides_reach_the_config():
    result = train("fit", "--config", "configs/quickstart.yaml", "--trainer.max_steps=50", "--data.batch_size=16",
                   "--model.optimizer.lr=1e-5", "--print_config")
    printed = yaml.safe_load(result.stdout)
    assert printed["trainer"]["max_steps"] == 50 and printed["data"]["batch_size"] == 16
    assert printed["model"]["optimizer"]["init_args"]["lr"] == 1e-5


@pytest.mark.slow
def test_wrong_option_fails_naming_it():
    result = train("fit", "--config", "configs/quickstart.yaml", "--data.batch_sise=16")
    assert result.returncode != 0 and "batch_sise" in result.stderr


@pytest.mark.slow
def test_unknown_task_fails_before_anything_is_written(tmp_path):
    result = train("fit", "--config", "configs/quickstart.yaml", "--data.tasks=[demo_sentiment,not_a_task]",
                   f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert result.returncode != 0 and "unknown task or mixture 'not_a_task'" in result.stderr
    assert not any(tmp_path.iterdir())


def scalars(log_dir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


@pytest.mark.slow
def test_quickstart_fit_writes_logs_config_checkpoint_export_and_learns(tmp_path):
    result = train("fit", "--config", "configs/quickstart.yaml", "--trainer.max_steps=120",
                   "--trainer.val_check_interval=60", "--trainer.log_every_n_steps=5", f"--data.cache_dir={tmp_path}/c",
                   f"--trainer.logger.init_args.save_dir={tmp_path}", *TINY_MODEL)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "muppet" / "version_0"
    assert (run / "config.yaml").exists() and list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt").exists() and list((run / "checkpoints").glob("step*-score*.ckpt"))
    assert (run / "export" / "model.safetensors").exists() and (run / "export" / "muppet_heads.pt").exists()
    assert recorded_lengths(run / "export")["max_length"] == 128  # quickstart's data.max_length, for inference
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["max_steps"] == 120 and saved["data"]["tasks"] == ["quickstart"]
    losses = scalars(run, "train/loss")
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    for tag in ("val/score", "val/demo_choice/accuracy", "val/demo_span/exact_match", "train/demo_span/raw_loss",
                "mixture/demo_choice/realized", "mixture/demo_choice/target", "train/tokens_per_s"):
        assert scalars(run, tag), tag
    assert "val at step 120" in result.stderr + result.stdout


@pytest.mark.slow
def test_two_process_cpu_ddp_with_mixed_batches_needs_no_unused_parameter_search(tmp_path, monkeypatch):
    monkeypatch.setitem(OFFLINE, "MUPPET_GRADIENT_LOG", str(tmp_path / "grads"))
    result = train("fit", "--config", "configs/quickstart.yaml", "--trainer.devices=2", "--trainer.strategy=ddp",
                   "--trainer.callbacks+=tests.recording.GradientLog",
                   "--trainer.max_steps=8", "--trainer.val_check_interval=8", "--data.max_tokens=null",
                   "--data.batch_size=6", f"--data.cache_dir={tmp_path}/c", "--data.max_eval_examples=20",
                   f"--trainer.logger.init_args.save_dir={tmp_path}", *TINY_MODEL, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert check_ddp_gradients(str(tmp_path / "grads")) == 8  # no unused-parameter search, no gradient missing
    assert (tmp_path / "muppet" / "version_0" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_omegaconf_interpolation_resolves(tmp_path):
    config = tmp_path / "interpolated.yaml"
    config.write_text("data:\n  max_length: 96\n  max_target_length: ${data.max_length}\n")
    result = train("fit", "--config", "configs/quickstart.yaml", "--config", str(config), "--print_config")
    assert result.returncode == 0, result.stderr[-2000:]
    printed = yaml.safe_load(result.stdout)["data"]
    assert printed["max_length"] == 96 and printed["max_target_length"] == 96


@pytest.mark.slow
def test_fit_from_a_pretrained_folder_with_the_tokenizer_given_once(tiny_roberta, tmp_path):
    result = train("fit", "--config", "configs/quickstart.yaml", f"--model.backbone={tiny_roberta}",
                   "--model.backbone_config=null", "--model.tokenizer=null", "--trainer.max_steps=4",
                   "--trainer.val_check_interval=4", "--data.max_eval_examples=10", "--data.tasks=[demo_choice]",
                   f"--data.cache_dir={tmp_path}/c", f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    hparams = yaml.safe_load((tmp_path / "muppet" / "version_0" / "hparams.yaml").read_text())
    assert hparams["backbone"] == tiny_roberta and hparams["tokenizer"] is None
