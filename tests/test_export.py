"""Export without the Hub: a checkpoint holds the backbone's config and the tokenizer's files, and
`python -m lightning_modules.export_cli` rebuilds the model from the checkpoint alone, after the backbone's folder is
gone, offline."""

from __future__ import annotations

import shutil
import subprocess
import sys

import lightning as L
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from lightning_modules.checkpoint_files import CONFIG_KEY, TOKENIZER_KEY
from lightning_modules.export import HEADS_FILE, recorded_lengths
from lightning_modules.rebuild import module_from_checkpoint
from lightning_modules.muppet import MuppetModule
from tests.conftest import ROOT, demo_datamodule, save_tiny
from tests.test_cli import OFFLINE

TASKS = ["demo_sentiment", "demo_choice", "demo_span"]


def trained_checkpoint(kind: str, tmp_path, demo_cache) -> tuple[str, str, dict]:
    """(checkpoint, the backbone folder it was trained from, a validation batch) after two training steps."""
    folder = save_tiny(kind, tmp_path / f"tiny-{kind}")
    data = demo_datamodule(TASKS, demo_cache, batch_size=8, max_eval_examples=4)
    module = MuppetModule(backbone=folder, task_specs=data.task_specs, dropout=0.0)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        use_distributed_sampler=False, reload_dataloaders_every_n_epochs=1)
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    return str(tmp_path / "run.ckpt"), folder, next(iter(data.val_dataloader()[0]))


@pytest.mark.slow  # a child process (python -m lightning_modules.export_cli)
def test_export_from_a_checkpoint_needs_neither_the_hub_nor_the_backbone_folder(tmp_path, demo_cache):
    checkpoint, folder, batch = trained_checkpoint("roberta", tmp_path, demo_cache)
    shutil.rmtree(folder)
    result = subprocess.run([sys.executable, "-m", "lightning_modules.export_cli", "--checkpoint", checkpoint,
                             "--output", str(tmp_path / "export")], cwd=ROOT, env=OFFLINE, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded, info = AutoModel.from_pretrained(tmp_path / "export", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    for name, value in loaded.state_dict().items():  # the trained weights, not a fresh initialisation
        torch.testing.assert_close(value, state[f"backbone.model.{name}"], rtol=0, atol=0, msg=name)
    heads = torch.load(tmp_path / "export" / HEADS_FILE)
    assert heads and all(torch.equal(v, state[f"heads.{k}"]) for k, v in heads.items())
    assert recorded_lengths(tmp_path / "export") == {"max_length": 256, "max_target_length": 64, "doc_stride": 64}
    # the same outputs as a model built from the checkpoint's weights, through the exported tokenizer's ids
    reference = module_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        got = loaded.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        expected = reference.backbone.model(input_ids=batch["input_ids"],
                                            attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(got, expected)
    text = "the movie was overall delightful ."
    exported = AutoTokenizer.from_pretrained(tmp_path / "export")
    assert exported(text)["input_ids"] == reference.tokenizer(text)["input_ids"]


def test_an_encoder_decoder_checkpoint_rebuilds_from_its_stored_config(tmp_path, demo_cache):
    checkpoint, folder, _ = trained_checkpoint("bart", tmp_path, demo_cache)
    shutil.rmtree(folder)
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)  # the parts load without pickled code
    assert stored[CONFIG_KEY]["model_type"] == "bart" and "tokenizer.json" in stored[TOKENIZER_KEY]
    module = module_from_checkpoint(checkpoint)
    assert type(module.backbone.model).__name__ == "BartForConditionalGeneration"
    assert module.backbone.pooling == "eos" and module.hparams.backbone is None
    for name, value in module.state_dict().items():
        if name in stored["state_dict"]:
            assert torch.equal(value, stored["state_dict"][name]), name
