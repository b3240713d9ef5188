"""One optimizer update through a real Trainer: heads of tasks absent from the whole update keep their weights and
AdamW state (single process and 2-process DDP, without find_unused_parameters); a non-finite loss stops the run
naming the step and the task (or is skipped and counted); clipping under FSDP goes through FSDP's own norm."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_modules.muppet import MuppetModule
from lightning_modules.update import NonFiniteLossError
from tests.conftest import ROOT, demo_datamodule
from tests.recording import check_ddp_gradients
from tests.test_cli import OFFLINE
from tests.test_resume import TASKS, command, small_catalogue  # noqa: F401 (fixture)
from tests.test_training import constant_lr

TASK_NAMES = ["demo_sentiment", "demo_topic_pair", "demo_rating", "demo_choice"]


def trainer_for(max_steps: int, callbacks: list, **kwargs) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, callbacks=callbacks,
                     use_distributed_sampler=False, default_root_dir=None,
                     enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks),
                     **kwargs)


class Snapshot(L.Callback):
    """Module weights and optimizer state after each optimizer step."""

    def __init__(self) -> None:
        self.after: list[tuple[dict, dict]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        optimizer = trainer.optimizers[0]
        state = {name: copy.deepcopy(optimizer.state.get(p, {})) for name, p in pl_module.named_parameters()}
        self.after.append(({k: v.clone() for k, v in pl_module.state_dict().items()}, state))


def test_heads_of_tasks_absent_from_the_update_keep_weights_and_adamw_state(tiny_roberta, demo_cache):
    data = demo_datamodule(TASK_NAMES, demo_cache, batch_size=32, group_by_length=False)
    collate, rows = data._collator(), data.train_set.__getitems__(list(range(0, 8000, 250)))
    everything = collate(rows)  # all four tasks
    only_first = collate([r for r in rows if r["task_id"] == 0])
    torch.manual_seed(0)
    module = MuppetModule(backbone=tiny_roberta, task_specs=data.task_specs, scheduler=constant_lr)
    snapshot = Snapshot()
    trainer_for(2, [snapshot]).fit(module, DataLoader([everything, only_first], batch_size=None))
    (first, first_state), (second, second_state) = snapshot.after
    assert module.last_update_tasks == [0]
    for name in first:
        if name.startswith("heads.") and "demo_sentiment" not in name:  # absent from update 2: untouched
            assert torch.equal(first[name], second[name]), name
            for key, value in first_state.get(name, {}).items():
                assert torch.equal(value, second_state[name][key]), (name, key)
    moved = [n for n in first if n.startswith(("backbone.", "heads.task_demo_sentiment")) and first[n].is_floating_point()
             and not torch.equal(first[n], second[n])]
    assert any(n.startswith("heads.") for n in moved) and any(n.startswith("backbone.") for n in moved)


@pytest.mark.slow
def test_absent_heads_keep_their_state_under_two_process_ddp(small_catalogue, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    args = command(small_catalogue, out, 12, "--trainer.devices=2", "--trainer.strategy=ddp",
                   "--data.batching=task_per_batch", "--trainer.callbacks+=tests.recording.HeadLog",
                   "--trainer.callbacks+=tests.recording.GradientLog", "--model.shared_heads=[]")
    env = {**OFFLINE, "MUPPET_HEAD_LOG": str(tmp_path / "heads"), "MUPPET_GRADIENT_LOG": str(tmp_path / "grads")}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert check_ddp_gradients(str(tmp_path / "grads")) == 12  # no unused-parameter search, no gradient missing
    for rank in (0, 1):
        log = [json.loads(line) for line in Path(f"{tmp_path}/heads.rank{rank}").read_text().splitlines()]
        absent_seen = 0
        for before, after in zip(log, log[1:]):
            for key, value in after["heads"].items():
                if key in after["used_heads"]:
                    assert value != before["heads"][key], (after["step"], key)
                else:
                    absent_seen += 1
                    assert value == before["heads"][key], (after["step"], key)
        assert absent_seen > 0  # one task per micro-batch on 2 ranks: most updates miss at least one of 3 tasks


class PoisonAt(L.Callback):
    """Makes the regression task's labels NaN in one batch."""

    def __init__(self, batch_idx: int, task: int) -> None:
        self.batch_idx, self.task = batch_idx, task

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.batch_idx:
            batch["labels"][batch["task_ids"] == self.task] = float("nan")


def poisoned_run(backbone: str, data, tmp_path: Path, skip: bool) -> tuple[MuppetModule, Snapshot, L.Trainer]:
    collate = data._collator()
    rows = data.train_set.__getitems__(list(range(0, 8000, 250)))
    batches = [collate(rows) for _ in range(4)]
    torch.manual_seed(0)
    module = MuppetModule(backbone=backbone, task_specs=data.task_specs, scheduler=constant_lr, skip_nonfinite=skip)
    snapshot = Snapshot()
    saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1,
                                                filename="{step}")
    trainer = trainer_for(4, [PoisonAt(2, TASK_NAMES.index("demo_rating")), snapshot, saver])
    if skip:
        trainer.fit(module, DataLoader(batches, batch_size=None))
    else:
        with pytest.raises(NonFiniteLossError, match=r"step 2 .*non-finite loss in \['demo_rating'\]"):
            trainer.fit(module, DataLoader(batches, batch_size=None))
    return module, snapshot, trainer


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_roberta, demo_cache, tmp_path):
    data = demo_datamodule(TASK_NAMES, demo_cache, batch_size=32, group_by_length=False)
    module, snapshot, _ = poisoned_run(tiny_roberta, data, tmp_path, skip=False)
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["step=1.ckpt", "step=2.ckpt"]
    kept = torch.load(tmp_path / "step=2.ckpt", weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in kept.values() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_skip_nonfinite_skips_the_update_and_counts_it(tiny_roberta, demo_cache, tmp_path):
    data = demo_datamodule(TASK_NAMES, demo_cache, batch_size=32, group_by_length=False)
    module, snapshot, trainer = poisoned_run(tiny_roberta, data, tmp_path, skip=True)
    assert trainer.global_step == 4 and int(module.skipped_updates) == 1
    (before, _), (after, _) = snapshot.after[1], snapshot.after[2]
    for name, value in before.items():  # the poisoned update changed no weight
        if value.is_floating_point():
            assert torch.equal(value, after[name]), name
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_norm_clipping_under_fsdp_uses_the_root_modules_clip_grad_norm(tiny_roberta, demo_cache):
    """The dispatch only (FSDP itself needs GPUs): Lightning's FSDP precision plugin raises on norm clipping, so the
    module must call the wrapped root's `clip_grad_norm_`, which reduces the norm over all shards."""
    from lightning.pytorch.strategies import FSDPStrategy
    data = demo_datamodule(["demo_sentiment"], demo_cache)
    module = MuppetModule(backbone=tiny_roberta, task_specs=data.task_specs)
    calls = []

    class Root(torch.nn.Module):
        def clip_grad_norm_(self, max_norm):
            calls.append(max_norm)

    strategy = FSDPStrategy()
    strategy.model = Root()
    module._trainer = type("T", (), {"strategy": strategy})()
    module.configure_gradient_clipping(torch.optim.SGD(module.parameters(), lr=0.1), 1.0, "norm")
    assert calls == [1.0]


@pytest.mark.slow
def test_a_non_finite_loss_ends_train_py_with_one_line(tmp_path):
    """Through train.py: a learning rate of 1e30 blows the weights up in the first update, and the next step's
    non-finite loss stops the run with one line naming the step and the task (non-finite labels never get this far:
    data validation names them, tests/test_validation.py)."""
    data = tmp_path / "ratings.jsonl"
    rows = [{"review": f"review number {i}", "stars": i % 5} for i in range(40)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    catalogue = tmp_path / "tasks.yaml"
    catalogue.write_text(f"nan_rating:\n  family: classification\n  source: {{path: json, data_files: "
                         f"{{train: {data}, validation: {data}}}}}\n  inputs: [review]\n  label: stars\n"
                         f"  num_labels: 1\n")
    result = subprocess.run([sys.executable, "train.py", "fit", "--config", "configs/quickstart.yaml",
                             f"--data.catalogue=[{catalogue}]", "--data.tasks=[nan_rating]", "--data.max_tokens=null",
                             "--data.batch_size=20", "--trainer.max_steps=4", "--model.warmup=0",
                             "--model.optimizer.init_args.lr=1e30", f"--data.cache_dir={tmp_path}/cache",
                             f"--trainer.logger.init_args.save_dir={tmp_path}/logs"],
                            cwd=ROOT, env=OFFLINE, capture_output=True, text=True, timeout=300)
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert re.match(r"error: non-finite loss at step [1-3] \(epoch 0\)", last) and "nan_rating" in last, last


def test_last_checkpoint_follows_every_validation_even_without_improvement(tmp_path):
    """Lightning 2.6 rewrites last.ckpt only with a new top-k checkpoint; a resume must not go back to the last
    improvement."""
    from lightning.pytorch.demos.boring_classes import BoringModel

    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_modules.checkpoint_io import LatestCheckpoint

    class FlatScore(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("val/score", 0.5)  # never improves after the first validation
            return super().validation_step(batch, batch_idx)

    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", filename="best")
    steps = []

    class Steps(L.Callback):  # what last.ckpt holds when the next validation starts (checkpoints save after it)
        def on_validation_start(self, trainer, pl_module):
            if (tmp_path / "last.ckpt").exists():
                steps.append(torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"])
    trainer = L.Trainer(max_steps=12, val_check_interval=4, limit_val_batches=1, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[best, LatestCheckpoint(dirpath=tmp_path), Steps()])
    trainer.fit(FlatScore())
    assert torch.load(tmp_path / "best.ckpt", weights_only=False)["global_step"] == 4
    steps.append(torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"])
    assert steps == [4, 8, 12] and sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
