"""Row 4 of bench/run.py: `train.py fit` end to end, optimizations on (token budget + length grouping) vs off (fixed
random batches of as many examples), real tokens per second of training steps.

Each run is the real command in a child process with one extra callback, `bench.e2e.TokenMeter`, which writes per
step the wall time (batch start to batch end) and the real and padded tokens of the batch to $BENCH_METER_OUT.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L

from bench.pipeline import OFFLINE, REPO


class TokenMeter(L.Callback):
    """Per training step: seconds, real tokens (attention mask), padded tokens (rows x width), examples."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        mask = batch["attention_mask"]
        self.steps.append({"s": time.perf_counter() - self._start, "real": int(mask.sum()), "padded": mask.numel(),
                           "examples": int(batch["example_ids"].max()) + 1})

    def on_fit_end(self, trainer, pl_module) -> None:
        Path(os.environ["BENCH_METER_OUT"]).write_text(json.dumps(self.steps))


def fit(workdir: Path, name: str, steps: int, args: list[str]) -> dict[str, Any]:
    """One `train.py fit` run of `steps` steps, validation off; the meter's steps after the first 3 (warm-up)."""
    out = workdir / f"{name}.json"
    command = [sys.executable, "train.py", "fit", *args, f"--trainer.max_steps={steps}",
               "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false", "--checkpoint.monitor=null",
               "--export.use_best=false", f"--export.dirpath={workdir / 'export'}",
               f"--trainer.logger.init_args.save_dir={workdir / 'logs'}", "--trainer.callbacks+=bench.e2e.TokenMeter"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env={**os.environ, **OFFLINE, "BENCH_METER_OUT": str(out)},
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"train.py fit failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    meter = json.loads(out.read_text())[3:]
    seconds = sum(s["s"] for s in meter)
    return {"wall_s": time.perf_counter() - start, "steps_timed": len(meter),
            "real_tokens_per_s": sum(s["real"] for s in meter) / seconds,
            "padded_tokens_per_s": sum(s["padded"] for s in meter) / seconds,
            "examples_per_s": sum(s["examples"] for s in meter) / seconds,
            "examples_per_batch": statistics.mean(s["examples"] for s in meter),
            "real_fraction": sum(s["real"] for s in meter) / sum(s["padded"] for s in meter)}


def on_vs_off(workdir: Path, base_args: list[str], steps: int, reps: int, batch_size: int | None = None
              ) -> dict[str, Any]:
    """Interleaved runs (on, off, off, on, ...): on = the config's token budget with length grouping; off = fixed
    batches of `batch_size` examples (default: the mean examples per batch of the first `on` run), no grouping."""
    on, off = [], []
    for rep in range(reps):
        for label in (("on", "off") if rep % 2 == 0 else ("off", "on")):
            if label == "on":
                on.append(fit(workdir, f"on{rep}", steps, base_args))
                batch_size = batch_size or max(1, round(on[0]["examples_per_batch"]))
            else:
                batch_size = batch_size or 32
                off.append(fit(workdir, f"off{rep}", steps, [*base_args, "--data.max_tokens=null",
                                                                f"--data.batch_size={batch_size}",
                                                                "--data.group_by_length=false"]))
    speedups = [a["real_tokens_per_s"] / b["real_tokens_per_s"] for a, b in zip(on, off)]
    return {"speedup": statistics.median(speedups), "on": on, "off": off, "off_batch_size": batch_size,
            "on_real_tokens_per_s": statistics.median(r["real_tokens_per_s"] for r in on),
            "off_real_tokens_per_s": statistics.median(r["real_tokens_per_s"] for r in off)}
