"""Heads at 50 and 500 classification tasks on a RoBERTa-large-sized backbone, per `model.head_sharing` option, each
against the per-task baseline in the same run (docs/heads.md):

- parameters of the heads against the backbone's, and their AdamW state (2 x fp32 per parameter), counted on the
  full config (hidden 1024, 24 layers, vocabulary 50265) built on the meta device;
- step time of MuppetModule's own training step through a Trainer (forward, heads, scaled losses, the zero-weight
  term over every head, backward, idle heads dropped from the update, AdamW) on mixed batches of 8 rows x 64 tokens,
  random init, CPU; the backbone has `--layers` layers (default 1: the heads' cost does not depend on depth, a
  24-layer step on 2 shared cores takes about a minute). Options run in the order A B C, C B A per repetition so load from
  other processes moves them alike; the time is the median over every timed step.

    PYTHONPATH=. python bench/head_sharing.py [--tasks 50 500] [--layers 1] [--steps 2] [--reps 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import RobertaConfig, RobertaModel

from datamodules.catalogue import spec_from_dict
from heads.base import HeadContext
from heads.registry import build_heads
from lightning_modules.muppet import MuppetModule

OPTIONS = ("per_task", "label_set", "projection")
LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
             max_position_embeddings=514, vocab_size=50265)
TOKENIZER = "assets/tokenizer"
NLI = {"entailment": 0, "neutral": 1, "contradiction": 2}


def task_entries(count: int) -> list[dict]:
    """A tasksource-like mix: 40% 3-way NLI (same named labels), 50% binary, 10% 5-way (unnamed classes)."""
    entries = []
    for i in range(count):
        kind = i % 10
        entry = {"name": f"task{i:03d}", "family": "classification", "source": {"path": "json"},
                 "inputs": ["premise", "hypothesis"], "label": "label", "metrics": ["accuracy"]}
        if kind < 4:
            entry.update(num_labels=3, label_map=NLI)
        else:
            entry.update(num_labels=2 if kind < 9 else 5)
        entries.append(entry)
    return entries


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # shared parameters once


def sizes(entries: list[dict]) -> tuple[int, dict[str, tuple[int, int]]]:
    """(backbone parameters, {option: (heads, head parameters)}) on the full large config, on the meta device."""
    specs = [spec_from_dict(e) for e in entries]
    with torch.device("meta"):
        backbone = count(RobertaModel(RobertaConfig(**LARGE)))
        context = HeadContext(LARGE["hidden_size"], LARGE["vocab_size"], False)
        heads = {option: build_heads(specs, context, None, option)[0] for option in OPTIONS}
    return backbone, {option: (len(h), count(h)) for option, h in heads.items()}


def batches(entries: list[dict], steps: int, rows: int, length: int, vocab: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        task_ids = torch.randint(len(entries), (rows,), generator=generator).sort().values
        labels = torch.tensor([int(torch.randint(entries[t]["num_labels"], (1,), generator=generator))
                               for t in task_ids.tolist()])
        input_ids = torch.randint(5, vocab, (rows, length), generator=generator)
        input_ids[:, 0] = 0
        out.append({"input_ids": input_ids, "attention_mask": torch.ones(rows, length, dtype=torch.long),
                    "task_ids": task_ids, "example_ids": torch.arange(rows), "labels": labels})
    return out


class StepTimes(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)


def step_times(entries: list[dict], option: str, data: list[dict], layers: int) -> list[float]:
    """Seconds per training step after the first (warm-up) one."""
    torch.manual_seed(0)
    config = {"model_type": "roberta", **LARGE, "num_hidden_layers": layers}
    module = MuppetModule(backbone=None, backbone_config=config, tokenizer=TOKENIZER, task_specs=entries,
                          head_sharing=option, scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1))
    times = StepTimes()
    trainer = L.Trainer(max_steps=len(data), accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                        callbacks=[times], use_distributed_sampler=False, gradient_clip_val=1.0)
    trainer.fit(module, DataLoader(data, batch_size=None))
    return times.times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--layers", type=int, default=1, help="backbone layers of the step-time model")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per option and repetition")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"RoBERTa-large-sized config {LARGE}, random init, CPU ({args.threads} threads); step time: "
          f"{args.layers}-layer backbone, batches of 8 rows x 64 tokens, median of {args.steps * args.reps} steps; "
          f"tasks: 40% 3-way NLI (named labels), 50% binary, 10% 5-way\n")
    print("| tasks | head option | heads | head params | heads / backbone | AdamW state of heads | step time (s) | "
          "vs per_task |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.tasks:
        entries = task_entries(n)
        backbone, counts = sizes(entries)
        data = batches(entries, args.steps + 1, 8, 64, 1000, seed=n)
        times: dict[str, list[float]] = {o: [] for o in OPTIONS}
        for rep in range(args.reps):
            for option in OPTIONS if rep % 2 == 0 else OPTIONS[::-1]:
                times[option] += step_times(entries, option, data, args.layers)
        base = statistics.median(times["per_task"])
        for option in OPTIONS:
            heads, params = counts[option]
            median = statistics.median(times[option])
            print(f"| {n} | {option} | {heads} | {params / 1e6:.1f}M | {params / backbone:.2f} | "
                  f"{params * 8 / 2**30:.2f} GiB | {median:.2f} | {median / base:.2f}x |", flush=True)
    print(f"\nbackbone: {backbone / 1e6:.1f}M parameters, AdamW state {backbone * 8 / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
