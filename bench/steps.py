"""Model-side rows of bench/run.py: MuppetModule's training step against a plain AutoModel + linear head on the same
batches (row 1), one forward for a mixed batch against one forward per task (row 2), fused AdamW (row 1b).

Every comparison is interleaved inside one process (A, B, B, A, ...), each repetition a few steps after one warm-up
step; a ratio is the median over repetitions of (time of A) / (time of B), so load from other processes on the
machine moves both sides alike.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModel

from lightning_modules.muppet import MuppetModule

ADAMW = dict(lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
CLIP = 1.0  # gradient_clip_val of both sides (the shipped configs clip at 1.0)


def take_batches(data, count: int) -> list[dict]:
    """The first `count` training batches of the data module's epoch-0 plan."""
    batches = []
    for batch in data.train_dataloader():
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


def interleaved(a: Callable[[], float], b: Callable[[], float], reps: int) -> tuple[list[float], list[float]]:
    """Run a and b alternately (a b, b a, ...) `reps` times each; their returned times."""
    times_a, times_b = [], []
    for rep in range(reps):
        for fn, out in ((a, times_a), (b, times_b)) if rep % 2 == 0 else ((b, times_b), (a, times_a)):
            out.append(fn())
    return times_a, times_b


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


class Interleave(L.Callback):
    """Times each training step as the Trainer runs it (batch start to batch end: forward, heads, scaled losses,
    backward, gradient normalisation, clipping, AdamW) and runs the baseline's step on the same batch right before
    (even steps) or right after it (odd steps), so each pair of times sees the same load on the machine."""

    def __init__(self, baseline: Callable[[dict], float]) -> None:
        self.baseline = baseline
        self.ours: list[float] = []
        self.base: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx % 2 == 0:
            self.base.append(self.baseline(batch))
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ours.append(time.perf_counter() - self._start)
        if batch_idx % 2 == 1:
            self.base.append(self.baseline(batch))


def muppet_module(backbone: str, data, fused: bool | None = None) -> MuppetModule:
    def optimizer(params):
        return torch.optim.AdamW(params, **ADAMW, fused=fused)
    module = MuppetModule(backbone=backbone, task_specs=data.task_specs, optimizer=optimizer)
    module.use_data(data.handoff())
    return module


class PlainModel(nn.Module):
    """The baseline: AutoModel, first-token pooling, one linear head, cross-entropy; AdamW with the same settings."""

    def __init__(self, backbone: str, classes: int) -> None:
        super().__init__()
        self.model = AutoModel.from_pretrained(backbone).train()
        self.head = nn.Linear(self.model.config.hidden_size, classes)
        self.classes = classes
        self.optimizer = torch.optim.AdamW(self.parameters(), **ADAMW)

    def loss(self, batch: dict) -> torch.Tensor:
        extra = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            **extra).last_hidden_state  # (R, T, H)
        logits = self.head(hidden[:, 0])  # (R, C)
        labels = batch.get("labels", torch.zeros(len(logits)))  # (R,): absent when no row of the batch has a label
        return nn.functional.cross_entropy(logits, labels.long().clamp(0, self.classes - 1))

    def step(self, batch: dict) -> float:
        """Seconds of forward, backward, clipping and AdamW on `batch`."""
        start = time.perf_counter()
        self.loss(batch).backward()
        nn.utils.clip_grad_norm_(self.parameters(), CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return time.perf_counter() - start


def step_overhead(backbone: str, data, batches: list[dict], warmup: int = 2) -> dict[str, Any]:
    """Row 1: MuppetModule through `trainer.fit` vs the plain model on the same batches, step by step interleaved;
    the first `warmup` pairs (optimizer state allocation, first-touch) are left out."""
    torch.manual_seed(0)
    module = muppet_module(backbone, data)
    plain = PlainModel(backbone, classes=8)
    timer = Interleave(plain.step)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=len(batches), logger=False, callbacks=[timer],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=CLIP, limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=20)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None, collate_fn=lambda b: b))
    ours, base = timer.ours[warmup:], timer.base[warmup:]
    return {"ratio": median_ratio(ours, base), "ours_s": statistics.median(ours), "plain_s": statistics.median(base),
            "sum_ratio": sum(ours) / sum(base), "ours_steps_s": ours, "plain_steps_s": base, "pairs": len(ours),
            "real_tokens_per_batch": sum(int(b["attention_mask"].sum()) for b in batches) / len(batches),
            "rows_per_batch": sum(len(b["task_ids"]) for b in batches) / len(batches),
            "tasks_per_batch": sum(len(b["task_ids"].unique()) for b in batches) / len(batches)}


def fused_adamw(backbone: str, reps: int, steps: int = 5) -> dict[str, Any]:
    """Row 1b: AdamW(fused=True) vs the default (foreach) optimizer step on the backbone's parameters."""
    model = AutoModel.from_pretrained(backbone)
    params = [p for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3

    def run(fused: bool) -> Callable[[], float]:
        optimizer = torch.optim.AdamW(params, **ADAMW, fused=fused)
        optimizer.step()  # state allocation

        def timed() -> float:
            start = time.perf_counter()
            for _ in range(steps):
                optimizer.step()
            return (time.perf_counter() - start) / steps
        return timed
    fused, default = interleaved(run(True), run(False), reps)
    return {"ratio": median_ratio(fused, default), "fused_s": statistics.median(fused),
            "default_s": statistics.median(default), "parameters": sum(p.numel() for p in params)}


def sub_batch(batch: dict, rows: torch.Tensor) -> dict:
    """The rows of one task, padding trimmed to their longest row."""
    width = int(batch["attention_mask"][rows].sum(1).max())
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and len(value) == len(batch["task_ids"]):
            value = value[rows]
            if key in ("input_ids", "attention_mask", "token_type_ids"):
                value = value[:, :width]
        out[key] = value
    return out


def one_forward_vs_per_task(backbone: str, data, batches: list[dict], reps: int) -> dict[str, Any]:
    """Row 2: forward + heads + scaled losses + backward of each mixed batch in one backbone call, against one
    call per task of the batch (each on its own rows, padding trimmed): same module, same losses, timed batch by
    batch in alternating order, `reps` passes over the batches."""
    torch.manual_seed(0)
    module = muppet_module(backbone, data)
    split = [[sub_batch(b, (b["task_ids"] == t).nonzero().squeeze(1)) for t in b["task_ids"].unique().tolist()]
             for b in batches]

    def timed(group: list[dict]) -> float:
        start = time.perf_counter()
        for batch in group:
            _, logits = module(batch)
            sum(scaled.sum() for scaled, _ in module.task_losses(batch, logits).values()).backward()
        module.zero_grad()
        return time.perf_counter() - start
    timed(batches[:1])  # warm-up
    one, loop = [], []
    for rep in range(reps):
        for i, (batch, group) in enumerate(zip(batches, split)):
            pair = ((one, [batch]), (loop, group)) if (i + rep) % 2 == 0 else ((loop, group), (one, [batch]))
            for out, work in pair:
                out.append(timed(work))
    return {"speedup": median_ratio(loop, one), "one_forward_s": statistics.median(one),
            "per_task_s": statistics.median(loop), "sum_speedup": sum(loop) / sum(one),
            "forwards_per_batch": sum(map(len, split)) / len(split), "pairs": len(one)}
