"""Training behaviour through Lightning: accumulation keeps the mean exact; 2-process CPU DDP with mixed batches;
exact resume of the data order."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_modules.muppet import MuppetModule
from tests.conftest import demo_datamodule

TASKS = ["demo_sentiment", "demo_choice", "demo_span", "demo_rating"]


def constant_lr(optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def sgd(params):
    return torch.optim.SGD(params, lr=0.5)


def one_update(backbone: str, specs, batches: list[dict], accumulate: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = MuppetModule(backbone=backbone, task_specs=specs, dropout=0.0, optimizer=sgd, scheduler=constant_lr)
    trainer = L.Trainer(max_steps=1, accumulate_grad_batches=accumulate, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(module, DataLoader(batches, batch_size=None))
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_accumulated_micro_batches_equal_one_big_batch(tiny_roberta, demo_cache):
    data = demo_datamodule(TASKS, demo_cache, batch_size=30, group_by_length=False)
    rows = data.train_set.__getitems__(list(range(0, 8000, 200)))  # 40 examples of all four tasks
    collate = data._collator()
    small, large = collate(rows[:9]), collate(rows[9:])  # uneven micro-batches: 9 and 31 examples
    accumulated = one_update(tiny_roberta, data.task_specs, [small, large], accumulate=2)
    whole = one_update(tiny_roberta, data.task_specs, [collate(rows)], accumulate=1)
    torch.manual_seed(0)
    initial = MuppetModule(backbone=tiny_roberta, task_specs=data.task_specs, dropout=0.0).state_dict()
    for name, value in whole.items():
        torch.testing.assert_close(accumulated[name], value, atol=2e-6, rtol=1e-4)
    moved = [n for n, v in whole.items() if v.is_floating_point() and not torch.allclose(v, initial[n])]
    assert any(n.startswith("backbone.") for n in moved) and any(n.startswith("heads.") for n in moved)


class RecordBatches(L.Callback):
    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(batch["input_ids"].sum(1).tolist())


def test_resume_from_a_mid_epoch_checkpoint_continues_with_the_next_batch(tiny_roberta, demo_cache, tmp_path):
    def run(max_steps: int, ckpt_path: str | None = None) -> list[list[int]]:
        data = demo_datamodule(TASKS, demo_cache, batch_size=16, seed=5)
        module = MuppetModule(backbone=tiny_roberta, task_specs=data.task_specs)
        recorder = RecordBatches()
        saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1,
                                                    filename="{step}")
        trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, limit_val_batches=0,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder, saver],
                            use_distributed_sampler=False)
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        return recorder.seen

    uninterrupted = run(max_steps=9)
    resumed = run(max_steps=9, ckpt_path=str(tmp_path / "step=4.ckpt"))
    assert len(resumed) == 5 and resumed == uninterrupted[4:]
