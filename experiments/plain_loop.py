"""A plain PyTorch pre-finetuning loop and fine-tuner: the reference the CLI is compared with in docs/does_it_help.md
("The plain loop and the CLI"). No Lightning and none of the project's sampler, collator, heads, loss or optimizer
code: only the tokenized rows come from the project's data module (so both read the same text with the same
tokenizer) and the encoder's forward with mean pooling from its `Backbone` (rows in length-sorted chunks: the same
outputs as one padded call, less padding).

Its recipe: the pooled mix of every task's capped examples shuffled once per epoch and cut into batches of 32 in
that order (no length grouping), mean pooling, a linear head per classification task and one linear scorer shared by
every multiple-choice task, each example's cross-entropy divided by log n (classes or choices) and averaged over the
batch, AdamW (torch defaults, weight decay 0.01 except biases and LayerNorm), linear warmup and decay, clipping 1.0.

    python -m experiments.plain_loop upstream --backbone DIR --data-root DATA --tasks sst2,trec,... --out OUT
    python -m experiments.plain_loop finetune --backbone OUT/backbone --data-root DATA --task mrpc --out FT

`upstream` writes OUT/backbone (save_pretrained: `AutoModel.from_pretrained` or `--model.init_from` read it) and
OUT/result.json (each task's validation accuracy); `finetune` trains a fresh head on one task and writes
FT/curve.csv (validation accuracy every `--eval-every` updates) and FT/result.json (final and best).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

from datamodules.multitask import MultiTaskDataModule
from lightning_modules.backbone import Backbone

FAMILIES = ("classification", "multiple_choice")  # what this loop trains; others are refused by name


def parse_caps(text: str | None) -> dict[str, int]:
    """`task=n,task=n` -> {task: n}."""
    return {k: int(v) for k, v in (item.split("=") for item in text.split(","))} if text else {}


class Tasks:
    """The tokenized train and validation rows of the selected tasks, read through the project's data module."""

    def __init__(self, names: list[str], backbone: str, data_root: str, max_length: int, max_eval: int,
                 train_fraction: float | None = None, seed: int = 0) -> None:
        dm = MultiTaskDataModule(tasks=names, tokenizer=backbone, data_root=data_root, max_length=max_length,
                                 max_eval_examples=max_eval, train_fraction=train_fraction, seed=seed)
        dm.prepare_data()
        dm.setup("fit")
        self.specs = dm.specs
        for spec in self.specs:
            if spec.family not in FAMILIES:
                raise SystemExit(f"plain_loop: task '{spec.name}' is {spec.family}; this loop trains {FAMILIES}")
        self.train = dm.train_set.datasets
        self.validation = dm.eval_sets["validation"]
        self.pad_id = dm.tokenizer.pad_token_id

    def is_choice(self, task: int) -> bool:
        return self.specs[task].family == "multiple_choice"


def collate(rows: list[tuple[int, dict]], tasks: Tasks) -> dict:
    """[(task, example)] -> padded rows (an MC example gives one row per choice) and where each example's rows are."""
    ids, types, spans, labels, task_ids = [], [], [], [], []
    for task, ex in rows:
        choice = tasks.is_choice(task)
        seqs, segs = (ex["input_ids"], ex["token_type_ids"]) if choice else ([ex["input_ids"]], [ex["token_type_ids"]])
        spans.append((len(ids), len(ids) + len(seqs)))
        ids += seqs
        types += segs
        labels.append(int(ex["label"]))
        task_ids.append(task)
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tasks.pad_id, dtype=torch.long)
    token_types = torch.zeros((len(ids), width), dtype=torch.long)
    for i, (seq, seg) in enumerate(zip(ids, types)):
        input_ids[i, :len(seq)] = torch.tensor(seq)
        token_types[i, :len(seg)] = torch.tensor(seg)
    return {"input_ids": input_ids, "token_type_ids": token_types, "attention_mask": input_ids.ne(tasks.pad_id).long(),
            "spans": spans, "labels": labels, "tasks": task_ids}


class Model(nn.Module):
    """Backbone + mean pooling + a linear head per classification task + one shared multiple-choice scorer."""

    def __init__(self, backbone: str, tasks: Tasks, head: str = "linear") -> None:
        """head: `linear` (this loop's), or `dense`: dropout, dense(H, H), tanh, dropout, linear (the CLI's heads)."""
        super().__init__()
        # the encoder and its mean pooling only, rows in length-sorted chunks (the same outputs as one padded call)
        self.backbone = Backbone(AutoModel.from_pretrained(backbone), "mean", length_chunks=32)
        hidden = self.backbone.hidden_size
        self.dropout = nn.Dropout(0.1)

        def layer(outputs: int) -> nn.Module:
            if head == "linear":
                return nn.Linear(hidden, outputs)
            return nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Dropout(0.1), nn.Linear(hidden, outputs))

        self.heads = nn.ModuleDict({str(i): layer(int(s.num_labels))
                                    for i, s in enumerate(tasks.specs) if not tasks.is_choice(i)})
        self.scorer = layer(1)
        self.tasks = tasks

    def forward(self, batch: dict) -> list[torch.Tensor]:
        """One logit vector per example (classes, or one score per choice)."""
        pooled = self.dropout(self.backbone(batch).pooled)
        logits = []
        for (start, end), task in zip(batch["spans"], batch["tasks"]):
            logits.append(self.scorer(pooled[start:end]).squeeze(-1) if self.tasks.is_choice(task)
                          else self.heads[str(task)](pooled[start]))
        return logits


def loss_of(logits: list[torch.Tensor], labels: list[int]) -> torch.Tensor:
    """Mean over the batch of each example's cross-entropy / log n."""
    return torch.stack([F.cross_entropy(x.unsqueeze(0), torch.tensor([y])) / math.log(max(2, len(x)))
                        for x, y in zip(logits, labels)]).mean()


def optimizer_for(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


@torch.no_grad()
def accuracy(model: Model, tasks: Tasks, batch_size: int = 64) -> dict[str, float]:
    model.eval()
    scores = {}
    for t, (spec, data) in enumerate(zip(tasks.specs, tasks.validation)):
        right = 0
        for start in range(0, len(data), batch_size):
            rows = [(t, data[i]) for i in range(start, min(start + batch_size, len(data)))]
            batch = collate(rows, tasks)
            right += sum(int(x.argmax()) == y for x, y in zip(model(batch), batch["labels"]))
        scores[spec.name] = right / len(data)
    model.train()
    return scores


def epoch_order(tasks: Tasks, caps: dict[str, int], default_cap: int | None, rng: np.random.Generator
                ) -> list[tuple[int, int]]:
    """Every task's capped examples (a seeded draw), pooled and shuffled."""
    pooled = []
    for t, (spec, data) in enumerate(zip(tasks.specs, tasks.train)):
        cap = caps.get(spec.name, default_cap) or len(data)
        pooled += [(t, int(i)) for i in rng.permutation(len(data))[:cap]]
    return [pooled[i] for i in rng.permutation(len(pooled))]


def train(model: Model, tasks: Tasks, order_of_epoch, updates: int, batch_size: int, lr: float, warmup: float,
          seed: int, on_eval=None, eval_every: int | None = None) -> float:
    """`updates` updates over batches of `batch_size` cut from each epoch's order; returns seconds."""
    opt = optimizer_for(model, lr, 0.01)
    schedule = get_linear_schedule_with_warmup(opt, int(warmup * updates), updates)
    rng, step, start = np.random.default_rng(seed), 0, time.time()
    model.train()
    while step < updates:
        order = order_of_epoch(rng)
        for b in range(0, len(order), batch_size):
            batch = collate([(t, tasks.train[t][i]) for t, i in order[b:b + batch_size]], tasks)
            loss = loss_of(model(batch), batch["labels"])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            schedule.step()
            step += 1
            if on_eval and eval_every and (step % eval_every == 0 or step == updates):
                on_eval(step, loss.item())
            if step == updates:
                break
    return time.time() - start


def upstream(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    tasks = Tasks(args.tasks.split(","), args.backbone, args.data_root, args.max_length, args.max_eval)
    model = Model(args.backbone, tasks, args.head)
    caps = parse_caps(args.caps)
    sizes = sum(min(len(d), caps.get(s.name, args.cap) or len(d)) for s, d in zip(tasks.specs, tasks.train))
    updates = args.updates or math.ceil(args.epochs * sizes / args.batch_size)
    seconds = train(model, tasks, lambda rng: epoch_order(tasks, caps, args.cap, rng), updates, args.batch_size,
                    args.lr, args.warmup, args.seed)
    scores = accuracy(model, tasks)
    out = Path(args.out)
    model.backbone.model.save_pretrained(out / "backbone")
    AutoTokenizer.from_pretrained(args.backbone).save_pretrained(out / "backbone")
    result = {"updates": updates, "examples_per_epoch": sizes, "seconds": round(seconds, 1), "validation": scores}
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


def finetune(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    tasks = Tasks([args.task], args.backbone, args.data_root, args.max_length, args.max_eval,
                  args.train_fraction, args.seed)
    model = Model(args.backbone, tasks)
    size = len(tasks.train[0])
    updates = math.ceil(args.epochs * size / args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve = []

    def on_eval(step: int, loss: float) -> None:
        curve.append({"step": step, "epoch": round(step * args.batch_size / size, 3), "train_loss": round(loss, 4),
                      "accuracy": accuracy(model, tasks)[args.task]})

    def order(rng):
        return [(0, int(i)) for i in rng.permutation(size)]

    seconds = train(model, tasks, order, updates, args.batch_size, args.lr, args.warmup, args.seed, on_eval,
                    args.eval_every or max(1, updates // 6))
    with (out / "curve.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(curve[0]))
        writer.writeheader()
        writer.writerows(curve)
    result = {"final": curve[-1]["accuracy"], "best": max(c["accuracy"] for c in curve), "updates": updates,
              "train_examples": size, "seconds": round(seconds, 1)}
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("upstream", "finetune"):
        p = sub.add_parser(name)
        p.add_argument("--backbone", required=True, help="folder or hub id of the encoder")
        p.add_argument("--data-root", required=True, help="folder of local copies (docs/catalogue.md)")
        p.add_argument("--out", required=True)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--max-length", type=int, default=128)
        p.add_argument("--max-eval", type=int, default=400, help="validation examples per task")
        p.add_argument("--warmup", type=float, default=0.06)
    up, ft = sub.choices["upstream"], sub.choices["finetune"]
    up.add_argument("--tasks", required=True, help="comma-separated catalogue names")
    up.add_argument("--cap", type=int, default=None, help="examples per task per epoch (default: all)")
    up.add_argument("--caps", default=None, help="per-task caps: task=n,task=n (over --cap)")
    up.add_argument("--batch-size", type=int, default=32)
    up.add_argument("--head", choices=["linear", "dense"], default="linear",
                    help="task heads: linear, or dense+tanh+linear as the CLI's (an ablation)")
    up.add_argument("--lr", type=float, default=5e-5)
    up.add_argument("--epochs", type=float, default=1.0)
    up.add_argument("--updates", type=int, default=None, help="default: epochs x capped examples / batch size")
    ft.add_argument("--task", required=True)
    ft.add_argument("--train-fraction", type=float, default=None)
    ft.add_argument("--batch-size", type=int, default=16)
    ft.add_argument("--lr", type=float, default=3e-5)
    ft.add_argument("--epochs", type=float, default=3.0)
    ft.add_argument("--eval-every", type=int, default=None, help="updates between validations (default: 6 a run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    {"upstream": upstream, "finetune": finetune}[args.command](args)


if __name__ == "__main__":
    main()
