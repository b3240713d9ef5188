"""Padding vs mixing per *update*: real-token fraction, tasks per micro-batch and tasks per optimizer update for each
batching scheme (`data.batching`) at several (ranks x gradient accumulation) shapes.

An update is R ranks x A accumulation steps of micro-batches. The sampler's plan is global (rank r takes positions
r, r + R, ...), so the micro-batches of update k are plan positions [k*A*R, (k+1)*A*R). Real-token fraction is
sum(tokens) / sum(rows x longest row) over the epoch's batches (what the encoder computes on, padding included).

Run (from the repo root):
  PYTHONPATH=. .venv/bin/python bench/mixing.py [--suites demo real] [--data-root DIR]
      [--max-tokens 4096] [--shapes 1x1 8x1 8x4 64x1] [--cache-dir DIR]
The `real` suite (bench/padding.py's REAL_TASKS) reads local copies under a data root; without one it is skipped.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench.padding import REAL_TASKS, REPO, add_data_root, minilm_tokenizer, missing_data_root
from datamodules.multitask import MultiTaskDataModule
from datamodules.sampler import MultiTaskBatchSampler

SCHEMES = [("mixed", {"batching": "mixed"}), ("mixed, pool 256", {"batching": "mixed", "group_pool_size": 256}),
           ("task_per_batch", {"batching": "task_per_batch"}), ("task_per_update", {"batching": "task_per_update"})]


def real_tokens(data: MultiTaskDataModule) -> np.ndarray:
    """Real tokens of every training example: a multiple-choice example's choices each count their own length (its
    `length` column counts choices x longest choice, the cost it has in a batch)."""
    lengths, rows = data._length_columns()
    parts = []
    for dataset, length, count in zip(data.train_set.datasets, lengths, rows):
        if count.max() > 1:
            ids = dataset.select_columns(["input_ids"])[:]["input_ids"]
            parts.append(np.array([sum(map(len, choices)) for choices in ids], dtype=np.int64))
        else:
            parts.append(length)
    return np.concatenate(parts)


def measure(data: MultiTaskDataModule, scheme: dict, ranks: int, accumulate: int, max_tokens: int) -> dict:
    lengths, rows = data._length_columns()
    flat_len = data._real_tokens
    sampler = MultiTaskBatchSampler(lengths, rows, max_tokens=max_tokens, batching=scheme["batching"],
                                    pool_size=scheme.get("group_pool_size", 4096), num_replicas=ranks,
                                    accumulate=accumulate, seed=0)
    plan = sampler._global_batches()
    flat_rows = np.concatenate(rows)
    real = sum(int(flat_len[b].sum()) for b in plan)
    computed = sum(int(flat_rows[b].sum()) * int(sampler.row_len[b].max()) for b in plan)
    per_batch = [len(np.unique(sampler.task_of_index[b])) for b in plan]
    size = ranks * accumulate
    per_update = [len(np.unique(np.concatenate([sampler.task_of_index[b] for b in plan[k:k + size]])))
                  for k in range(0, len(plan) - size + 1, size)]
    return {"batches": len(plan), "real": real / computed, "tasks_batch": float(np.mean(per_batch)),
            "tasks_update": float(np.mean(per_update)), "updates": len(per_update)}


def suite_rows(name: str, data: MultiTaskDataModule, args: argparse.Namespace) -> list[str]:
    data.prepare_data()
    data.setup("fit")
    data._real_tokens = real_tokens(data)
    lines = []
    for shape in args.shapes:
        ranks, accumulate = map(int, shape.split("x"))
        for label, scheme in SCHEMES:
            r = measure(data, scheme, ranks, accumulate, args.max_tokens)
            lines.append(f"| {name} ({len(data.specs)} tasks) | {ranks} x {accumulate} | {label} | {r['updates']} | "
                         f"**{r['real']:.3f}** | {r['tasks_batch']:.2f} | **{r['tasks_update']:.2f}** |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", nargs="+", choices=["demo", "real"], default=["demo", "real"])
    add_data_root(parser)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--shapes", nargs="+", default=["1x1", "8x1", "8x4", "64x1"],
                        help="ranks x accumulation steps per update")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mixing-") as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        lines = []
        if "demo" in args.suites:
            lines += suite_rows("demo", MultiTaskDataModule(tasks=["quickstart_bart"], tokenizer=str(
                REPO / "assets" / "tokenizer"), max_length=256, cache_dir=cache), args)
        if "real" in args.suites and (why := missing_data_root(args.data_root)) is not None:
            print(f"suite real: SKIPPED, {why}")
        elif "real" in args.suites:
            tokenizer, note = minilm_tokenizer()
            print(f"suite real: {len(REAL_TASKS)} tasks from {args.data_root}, tokenizer={note}")
            lines += suite_rows("real", MultiTaskDataModule(tasks=REAL_TASKS, tokenizer=tokenizer,
                                                            data_root=str(args.data_root), max_length=256,
                                                            cache_dir=cache), args)
        print(f"\nmax_tokens={args.max_tokens}, max_length=256, proportional sampling, seed 0, one epoch\n")
        print("| suite | ranks x accumulation | batching | updates | real tokens | tasks / micro-batch | "
              "tasks / update |\n|---|---|---|---:|---:|---:|---:|")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
