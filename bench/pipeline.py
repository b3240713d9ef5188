"""Data-side rows of bench/run.py: loader throughput (row 5), tokenization and its cache (row 6), memory in the number
of rows (row 7), the epoch plan at scale and evaluation loader construction (row 8).

Memory and plan rows run in child processes (`python bench/pipeline.py <mode> ...`, one JSON line on stdout), so each
peak RSS (VmHWM) belongs to one measurement alone.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
WORDS = ("movie film plot actor scene story music ending cast script camera sound dialogue pacing score twist "
         "good bad great dull fine slow bright dark long short warm cold odd").split()


def peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM; `ru_maxrss` would carry over the parent's peak through fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status in MiB: RssAnon (the process's own heap: arrays, Python objects) or RssFile
    (pages of mapped files, e.g. memory-mapped Arrow, that the process touched: shared, reclaimable page cache)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(mode: str, *args: str, env: dict | None = None, timeout: int | None = None) -> dict[str, Any]:
    """Run `python bench/pipeline.py mode args...` and return the JSON it prints last."""
    done = subprocess.run([sys.executable, str(Path(__file__)), mode, *args], cwd=REPO,
                          env={**os.environ, **OFFLINE, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"bench/pipeline.py {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- row 5: loader batches/s ---------------------------------------------------------------------------------------
def loader_rate(data, batches: int, workers: int, reps: int) -> dict[str, Any]:
    """Batches/s of the data module's train loader (sampler + MultiTaskDataset + collator) with `workers` worker
    processes: the first batch (worker start-up) timed apart from the steady rate of the next `batches`."""
    data.hparams.num_workers = workers
    rates, startups = [], []
    for _ in range(reps):
        start = time.perf_counter()
        loader = iter(data.train_dataloader())
        next(loader)
        first = time.perf_counter()
        n = 0
        for _ in loader:
            n += 1
            if n == batches:
                break
        rates.append(n / (time.perf_counter() - first))
        startups.append(first - start)
        del loader
    data.hparams.num_workers = 0
    return {"batches_per_s": statistics.median(rates), "first_batch_s": statistics.median(startups),
            "num_workers": workers, "batches": batches}


# ---- row 6: tokenization and cache -----------------------------------------------------------------------------------
def preprocess_child(spec: str) -> dict[str, Any]:
    """Two runs of prepare_data + setup('fit') into the cache named in `spec` (JSON of MultiTaskDataModule kwargs):
    the first tokenizes, the second should be served from the cache."""
    from datamodules.multitask import MultiTaskDataModule
    kwargs = json.loads(spec)
    times, examples = [], 0
    for run in range(2):
        start = time.perf_counter()
        data = MultiTaskDataModule(**kwargs)
        data.prepare_data()
        data.setup("fit")
        times.append(time.perf_counter() - start)
        if run == 0:
            examples = len(data.train_set) + sum(len(d) for d in data.eval_sets["validation"] if d is not None)
    return {"first_s": times[0], "second_s": times[1], "rows": examples, "tasks": len(data.specs)}


# ---- row 7: memory in the number of rows ----------------------------------------------------------------------------
def write_tasks(folder: Path, tasks: int, rows: int, seed: int = 0) -> Path:
    """`tasks` sentence-classification tasks of `rows` short random texts (16-47 words) each (JSONL), and their
    catalogue."""
    import yaml
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    words = np.array(WORDS)
    entries = {}
    for t in range(tasks):
        files = {}
        for split, count in (("train", rows), ("validation", 50)):
            lengths = rng.integers(16, 48, size=count)  # words: ~40 tokens, ~300 B of tokenized Arrow per row
            picks = words[rng.integers(0, len(words), size=int(lengths.sum()))].tolist()
            ends = np.cumsum(lengths).tolist()
            labels = rng.integers(0, 2, size=count).tolist()
            path = folder / f"t{t}-{split}.jsonl"
            with path.open("w") as out:
                begin = 0
                for end, label in zip(ends, labels):
                    out.write(json.dumps({"text": " ".join(picks[begin:end]), "label": label}) + "\n")
                    begin = end
            files[split] = str(path)
        entries[f"mem_t{t}"] = {"family": "classification", "source": {"path": "json", "data_files": files},
                                "inputs": ["text"], "label": "label", "num_labels": 2, "metrics": ["accuracy"]}
    catalogue = folder / "tasks.yaml"
    catalogue.write_text(yaml.safe_dump(entries))
    return catalogue


def memory_child(catalogue: str, cache: str, tokenizer: str, stage: str, batches: str) -> dict[str, Any]:
    """stage `prepare`: tokenize into the cache; stage `train`: setup('fit'), the epoch plan and `batches` training
    batches. Peak RSS, and RSS after the imports (what a process holds before it touches the data)."""
    import yaml

    from datamodules.multitask import MultiTaskDataModule
    names = list(yaml.safe_load(Path(catalogue).read_text()))
    base = rss_mb()
    start = time.perf_counter()
    data = MultiTaskDataModule(tasks=names, tokenizer=tokenizer, catalogue=[catalogue], cache_dir=cache,
                               max_tokens=4096, max_length=64)
    anon = [status_mb("RssAnon")]
    if stage == "prepare":
        data.prepare_data()
        rows = None
    else:
        data.setup("fit")
        rows = len(data.train_set)
        anon.append(status_mb("RssAnon"))
        loader = iter(data.train_dataloader())  # the epoch plan
        anon.append(status_mb("RssAnon"))
        for i, _ in enumerate(loader):
            if i + 1 >= int(batches):
                break
    anon.append(status_mb("RssAnon"))
    return {"stage": stage, "seconds": time.perf_counter() - start, "rss_after_imports_mb": base,
            "anon_after_imports_mb": anon[0], "peak_rss_mb": peak_rss_mb(), "anon_mb": max(anon),
            "file_mb": status_mb("RssFile"), "rows": rows}


def memory_growth(root: Path, tasks: int, rows_list: list[int], tokenizer: str, batches: int = 100
                  ) -> dict[str, Any]:
    """Peak RSS and anonymous memory (sampled after setup, after the plan, after the batches) of tokenizing
    (prepare_data) and of training (setup + plan + batches) at each rows-per-task, each in a fresh process."""
    points = []
    for rows in rows_list:
        folder = root / f"mem-{rows}"
        start = time.perf_counter()
        catalogue = write_tasks(folder / "data", tasks, rows)
        generated = time.perf_counter() - start
        prepare = child("memory", str(catalogue), str(folder / "cache"), tokenizer, "prepare", "0",
                        env={"HF_DATASETS_CACHE": str(folder / "hf")})
        train = child("memory", str(catalogue), str(folder / "cache"), tokenizer, "train", str(batches),
                      env={"HF_DATASETS_CACHE": str(folder / "hf")})
        arrow = sum(f.stat().st_size for f in (folder / "cache").glob("*/train-*.arrow"))
        points.append({"rows_per_task": rows, "total_rows": tasks * rows, "generate_s": generated,
                       "arrow_bytes_per_row": arrow / (tasks * rows), "prepare": prepare, "train": train})
        subprocess.run(["rm", "-rf", str(folder)], check=False)
    first, last = points[0], points[-1]
    extra_rows = (last["total_rows"] - first["total_rows"]) / 1e6
    growth = {f"{stage}_{kind}": (last[stage][f"{kind}_mb"] - first[stage][f"{kind}_mb"]) / max(extra_rows, 1e-9)
              for stage in ("prepare", "train") for kind in ("peak_rss", "anon")}
    return {"tasks": tasks, "points": points, "mb_per_million_rows": growth}


# ---- row 8: the epoch plan and evaluation loaders at scale ------------------------------------------------------
def synthetic_tasks(total: int, tasks: int = 46, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(tokens, rows) per example of `tasks` tasks of heavy-tailed sizes summing to about `total`; every fourth
    task multiple choice with 4 choices. Lengths uniform in 8..256 tokens per row."""
    rng = np.random.default_rng(seed)
    weights = rng.pareto(1.0, tasks) + 1
    sizes = np.maximum(100, weights / weights.sum() * total).astype(np.int64)
    rows = [np.full(n, 4 if t % 4 == 0 else 1, dtype=np.int64) for t, n in enumerate(sizes)]
    lengths = [rng.integers(8, 257, size=n) * r for n, r in zip(sizes, rows)]
    return lengths, rows


def plan_child(total: str, ranks: str, max_tokens: str) -> dict[str, Any]:
    from datamodules.sampler import MultiTaskBatchSampler
    lengths, rows = synthetic_tasks(int(total))
    base = rss_mb()
    start = time.perf_counter()
    sampler = MultiTaskBatchSampler(lengths, rows, max_tokens=int(max_tokens), num_replicas=int(ranks), rank=0)
    built = time.perf_counter()
    batches = len(sampler)  # the global plan, then this rank's share
    planned = time.perf_counter()
    first = next(iter(sampler))
    return {"ranks": int(ranks), "examples": int(sum(map(len, lengths))), "init_s": built - start,
            "plan_s": planned - built, "batches_per_rank": batches, "first_batch_len": len(first),
            "extra_rss_mb": peak_rss_mb() - base}


def plan_scale(total: int, ranks_list: list[int], max_tokens: int) -> list[dict[str, Any]]:
    return [child("plan", str(total), str(r), str(max_tokens)) for r in ranks_list]


def eval_loaders(tasks: int, ranks_list: list[int], batch_size: int = 32, seed: int = 0) -> list[dict[str, Any]]:
    """Construction time of the validation loaders of a `tasks`-task mixture (one EvalBatchSampler and DataLoader per
    task, as MultiTaskDataModule._eval_loaders builds them) on rank 0 of each world size. Synthetic sizes: heavy
    tailed, 100..40k rows; every seventh task span QA with 1-3 windows per example (`groups`)."""
    from torch.utils.data import DataLoader

    from datamodules.eval_sampler import EvalBatchSampler
    rng = np.random.default_rng(seed)
    sizes = np.clip((rng.pareto(1.0, tasks) + 1) * 2000, 100, 40_000).astype(int)
    groups = [np.repeat(np.arange(n), rng.integers(1, 4, size=n)).tolist() if t % 7 == 6 else None
              for t, n in enumerate(sizes)]
    results = []
    for ranks in ranks_list:
        start = time.perf_counter()
        loaders = [DataLoader(range(len(g) if g else n), batch_sampler=EvalBatchSampler(
            len(g) if g else n, batch_size, g, ranks, 0)) for n, g in zip(sizes, groups)]
        results.append({"ranks": ranks, "seconds": time.perf_counter() - start, "tasks": tasks,
                        "rows": int(sum(len(g) if g else n for n, g in zip(sizes, groups))),
                        "batches_rank0": sum(len(loader) for loader in loaders)})
    return results


if __name__ == "__main__":
    modes = {"preprocess": preprocess_child, "memory": memory_child, "plan": plan_child}
    print(json.dumps(modes[sys.argv[1]](*sys.argv[2:])))
