"""Mixed batches without their padding: `model.length_chunks` against one padded call (docs/does_it_help.md, "The
plain loop and the CLI").

A batch that mixes tasks (not grouped by length) pads every row to its longest one. This times forward + backward of
the backbone (MiniLM-L6-sized BERT from its config: hidden 384, 6 layers, random init, CPU) on batches of `--rows`
rows whose lengths are drawn like a mixed multi-task batch (`--short` of the rows 8-40 tokens, the rest 60-128), in
three ways, interleaved per batch so that load from other processes moves them alike:

  grouped      the same rows sorted by length across batches, one padded call each (the padding floor; a batch then
               holds few tasks)
  mixed        shuffled rows, one padded call (the baseline: what `data.group_by_length=false` costs)
  mixed+chunks shuffled rows, `length_chunks` rows per call, each padded to its own longest row

    PYTHONPATH=. python bench/length_chunks.py [--rows 64] [--chunk 16] [--batches 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import BertConfig, BertModel

from lightning_modules.backbone import Backbone


def batch_of(lengths: torch.Tensor, width: int) -> dict:
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    return {"input_ids": torch.randint(5, 1000, mask.shape) * mask, "attention_mask": mask,
            "token_type_ids": torch.zeros_like(mask)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--short", type=float, default=0.6, help="share of short rows (8-40 tokens)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                        vocab_size=30522)
    model = BertModel(config)
    ways = {"grouped": Backbone(model, "mean"), "mixed": Backbone(model, "mean"),
            "mixed+chunks": Backbone(model, "mean", length_chunks=args.chunk)}
    n = args.rows * args.batches
    short = torch.rand(n) < args.short
    lengths = torch.where(short, torch.randint(8, 41, (n,)), torch.randint(60, 129, (n,)))
    grouped = lengths.sort().values
    batches = {"grouped": [grouped[i:i + args.rows] for i in range(0, n, args.rows)],
               "mixed": [lengths[i:i + args.rows] for i in range(0, n, args.rows)]}
    batches["mixed+chunks"] = batches["mixed"]
    times: dict[str, list[float]] = {w: [] for w in ways}
    real = {w: sum(int(b.sum()) for b in batches[w]) / sum(len(b) * int(b.max()) for b in batches[w]) for w in ways}
    real["mixed+chunks"] = sum(int(c.sum()) for b in batches["mixed"] for c in b.sort().values.split(args.chunk)) / \
        sum(len(c) * int(c.max()) for b in batches["mixed"] for c in b.sort().values.split(args.chunk))
    for i in range(args.batches):
        for way in (list(ways) if i % 2 == 0 else list(ways)[::-1]):
            rows = batches[way][i]
            batch = batch_of(rows, int(rows.max()))
            start = time.perf_counter()
            ways[way](batch).pooled.square().mean().backward()
            times[way].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    base = sum(times["mixed"]) / args.batches
    print(f"{args.batches} batches of {args.rows} rows ({args.short:.0%} short), forward + backward, "
          f"{args.threads} thread(s); mean seconds per batch (all batches: grouped batches differ in length)")
    print("| way | real tokens | s / batch | vs mixed |\n|---|---|---|---|")
    for way in ways:
        t = sum(times[way]) / args.batches
        print(f"| {way} | {real[way]:.2f} | {t:.2f} | {t / base:.2f}x |")


if __name__ == "__main__":
    main()
