"""bench/run.py: its row functions run on tiny sizes, and the optimizations it measures give the plain path's results
(the sampler's split of batches, MultiTaskDataset's batched row lookup)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import Dataset

from bench import pipeline, run, steps
from bench.e2e import TokenMeter
from datamodules.collate import MultiTaskDataset, PaddingBatch
from datamodules.sampler import MultiTaskBatchSampler
from tests.conftest import TOKENIZER, demo_datamodule


# ---- the optimizations give the plain path's results -------------------------------------------------------------
def reference_split_until(sampler, batches, multiple):
    """The plain algorithm: recompute every batch's cost before each split."""
    while len(batches) % multiple or len(batches) < multiple:
        costs = [len(b) * int(sampler.row_len[b].max()) if len(b) > 1 else -1 for b in batches]
        largest = int(np.argmax(costs))
        if costs[largest] < 0:
            raise ValueError("cannot fill")
        half = len(batches[largest]) // 2
        batches[largest:largest + 1] = [batches[largest][:half], batches[largest][half:]]
    return batches


@pytest.mark.parametrize("seed", range(6))
def test_split_until_gives_the_plain_algorithms_batches(seed):
    rng = np.random.default_rng(seed)
    lengths = [rng.integers(3, 200, size=n) for n in rng.integers(1, 500, size=4)]
    sampler = MultiTaskBatchSampler(lengths, max_tokens=512)
    flat = np.arange(sum(map(len, lengths)))
    cuts = np.sort(rng.choice(np.arange(1, len(flat)), size=min(20, len(flat) - 1), replace=False))
    batches = np.split(flat[rng.permutation(len(flat))], cuts)
    for multiple in (1, 7, 64, 3 * len(batches)):
        try:
            expected = reference_split_until(sampler, list(batches), multiple)
        except ValueError:
            with pytest.raises(ValueError, match="too few training examples"):
                sampler._split_until(list(batches), multiple)
            continue
        got = sampler._split_until(list(batches), multiple)
        assert len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_batched_row_lookup_matches_one_lookup_per_index():
    sizes = [5, 0, 7, 1, 9]  # an empty task in between
    datasets = [Dataset.from_dict({"input_ids": [[t, i] for i in range(n)], "label": [t] * n}) for t, n in
                enumerate(sizes)]
    data = MultiTaskDataset(datasets, task_ids=[10, 11, 12, 13, 14])
    offsets = np.cumsum([0, *sizes])
    rng = np.random.default_rng(0)
    for indices in ([], [0], [21], rng.integers(0, len(data), size=40).tolist()):
        expected = []
        for i in indices:
            task = int(np.searchsorted(offsets, i, side="right") - 1)
            local = i - int(offsets[task])
            expected.append({"task_id": 10 + task, "index": local, **datasets[task][local]})
        assert data.__getitems__(indices) == expected
        assert all(data[i] == e for i, e in zip(indices, expected))
    assert all(row["is_padding"] for row in data.__getitems__(PaddingBatch([3, 4])))
    with pytest.raises(IndexError):
        data.__getitems__([len(data)])


# ---- the row functions run on tiny sizes ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(demo_cache):
    return demo_datamodule(["demo_sentiment", "demo_choice", "demo_span"], demo_cache, max_tokens=256)


@pytest.fixture
def one_thread():
    """As bench/run.py runs by default (--threads 1): tiny steps on a loaded 2-core machine take seconds, not
    milliseconds, with two intra-op threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_model_rows_run(demo, tiny_roberta, one_thread):
    batches = steps.take_batches(demo, 4)
    overhead = steps.step_overhead(tiny_roberta, demo, batches, warmup=1)
    assert overhead["pairs"] == 3 and overhead["ratio"] > 0 and overhead["plain_s"] > 0
    forward = steps.one_forward_vs_per_task(tiny_roberta, demo, batches[:2], reps=1)
    assert forward["speedup"] > 0 and forward["forwards_per_batch"] >= 1
    fused = steps.fused_adamw(tiny_roberta, reps=2, steps=1)
    assert fused["fused_s"] > 0 and fused["default_s"] > 0


def test_per_task_sub_batches_hold_each_task_once(demo):
    batch = steps.take_batches(demo, 1)[0]
    tasks = batch["task_ids"].unique().tolist()
    parts = [steps.sub_batch(batch, (batch["task_ids"] == t).nonzero().squeeze(1)) for t in tasks]
    assert sum(len(p["task_ids"]) for p in parts) == len(batch["task_ids"])
    assert all(p["attention_mask"][:, -1].any() for p in parts)  # padding trimmed to the longest row


def test_data_rows_run(demo, tmp_path):
    rate = pipeline.loader_rate(demo, batches=3, workers=0, reps=1)
    assert rate["batches_per_s"] > 0
    plan = pipeline.plan_child("5000", "8", "1024")
    assert plan["batches_per_rank"] > 0 and plan["plan_s"] >= 0
    loaders = pipeline.eval_loaders(5, [1, 4])
    assert [e["ranks"] for e in loaders] == [1, 4] and loaders[0]["batches_rank0"] >= loaders[1]["batches_rank0"]
    catalogue = pipeline.write_tasks(tmp_path / "data", tasks=2, rows=30)
    for stage in ("prepare", "train"):
        result = pipeline.memory_child(str(catalogue), str(tmp_path / "cache"), TOKENIZER, stage, "2")
        assert result["peak_rss_mb"] >= result["rss_after_imports_mb"] > 0
    assert result["rows"] == 60


def test_token_meter_and_table(demo, tmp_path, monkeypatch):
    meter, batch = TokenMeter(), steps.take_batches(demo, 1)[0]
    meter.on_train_batch_start(None, None, batch, 0)
    meter.on_train_batch_end(None, None, None, batch, 0)
    monkeypatch.setenv("BENCH_METER_OUT", str(tmp_path / "meter.json"))
    meter.on_fit_end(None, None)
    (step,) = json.loads((tmp_path / "meter.json").read_text())
    assert step["real"] == int(batch["attention_mask"].sum()) <= step["padded"]
    rows = [run.row("1", "what", "1 s", "2 s", "0.5x", "<= 1.05x", True, ratio=0.5)]
    assert run.table(rows).splitlines()[2] == "| 1 | what | 1 s | 2 s | 0.5x | <= 1.05x | yes |"
    args = run.parse_args(["--quick"])
    assert args.memory_rows == [500, 2000] and args.plan_examples == 1_000_000


def test_pooling_table_gives_each_choice_mean_spread_paired_difference_and_best():
    """bench/pooling.py's table on synthetic runs: per target the arms' mean ± std over seeds, each arm against
    `first` paired by seed, and the best arm."""
    from bench.pooling import table
    from experiments.plan import Study

    values = {"first": [0.70, 0.72, 0.74], "mean": [0.75, 0.78, 0.80], "pooler": [0.71, 0.71, 0.75]}
    rows = [{"stage": "finetune", "status": "ok", "target": "t", "fraction": 1.0, "arm": arm, "seed": seed,
             "value": v, "metric": "accuracy"} for arm, vs in values.items() for seed, v in enumerate(vs)]
    study = Study(name="pooling", targets=["t"], seeds=[0, 1, 2], arms={a: {} for a in values}, baseline="first")
    lines = table(study, rows)
    assert lines[0] == "| target | metric | seeds | first | mean | pooler | mean - first | pooler - first | best |"
    assert lines[2] == ("| t | accuracy | 3 | 0.720 ± 0.020 | 0.777 ± 0.025 | 0.723 ± 0.023 | +0.057 (3/3) * "
                        "| +0.003 (2/3) | mean |")
    assert "best per target: first 0, mean 1, pooler 0" in lines
