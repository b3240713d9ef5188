"""Run a study: every configuration as its own `train.py fit` subprocess (a crash loses one run), pre-finetuning runs
first (each exported; fine-tuning runs start from the export with `--model.init_from`), one CSV row per run, then
a Markdown report, plots and TensorBoard under the sweep folder. Rerunning the same command resumes: a run whose row
says `ok` is not run again (Ctrl-C stops the current run; it is redone next time).

    python -m experiments.run --config experiments/does_it_help.yaml --data-root /work/shared/data
    python -m experiments.run --config experiments/does_it_help.yaml --report-only   # tables and plots again
    tensorboard --logdir logs/experiments
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from experiments import report
from experiments.plan import Run, Study, catalogue_args, plan
from experiments.results import Results, log_dir_of, parse, read_metric

ROOT = Path(__file__).resolve().parent.parent  # train.py's folder: every run starts there
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def primary_metrics(catalogue: list[str], targets: list[str]) -> dict[str, str]:
    from datamodules.catalogue import Catalogue
    tasks = Catalogue.load(catalogue).tasks
    return {t: tasks[t].metrics[0] for t in targets}


def execute(run: Run, args: list[str], run_dir: Path, tag: str, mode: str, log=print) -> dict:
    """One `train.py fit` in its own process group, its output in <run_dir>/train.log; the row to record."""
    shutil.rmtree(run_dir, ignore_errors=True)  # a run that was interrupted starts clean
    run_dir.mkdir(parents=True)
    command = [sys.executable, "train.py", "fit", *args, f"--trainer.logger.init_args.save_dir={run_dir}"]
    (run_dir / "command.txt").write_text(shlex.join(command) + "\n")
    start = time.time()
    with (run_dir / "train.log").open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**ENV, **os.environ})
        try:
            code = proc.wait()
        except BaseException:  # Ctrl-C or SIGTERM: stop the whole run, record nothing
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    wall = time.time() - start
    log_dir = log_dir_of(run_dir)
    metric = read_metric(log_dir, tag, mode) if log_dir else None
    status = "ok" if code == 0 and metric else f"failed (exit {code})" if code else f"no {tag} logged"
    if status != "ok":
        tail = (run_dir / "train.log").read_text().splitlines()[-15:]
        log(f"  {run.run_id}: {status}; the end of {run_dir / 'train.log'}:\n    " + "\n    ".join(tail))
    if run.stage == "upstream" and status == "ok" and not (log_dir / "export").is_dir():
        status = "no export written"
    return {"run_id": run.run_id, "stage": run.stage, "arm": run.arm, "x": run.x, "target": run.target,
            "fraction": run.fraction, "seed": run.seed, "metric": tag.split("/")[-1], "value": metric and metric[0],
            "step": metric and metric[1], "wall_s": round(wall, 1), "status": status,
            "log_dir": str(log_dir or run_dir), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def eta(results: Results, todo: list[Run]) -> str:
    """Time left from the mean wall time of the finished runs of each stage."""
    walls: dict[str, list[float]] = {}
    for row in results.rows.values():
        if row["status"] == "ok":
            walls.setdefault(row["stage"], []).append(float(row["wall_s"]))
    every = [w for ws in walls.values() for w in ws]
    if not every:
        return "unknown"
    seconds = sum(sum(walls.get(r.stage, every)) / len(walls.get(r.stage, every)) for r in todo)
    return f"{seconds / 60:.1f} min"


def sweep(study: Study, max_runs: int | None = None, dry_run: bool = False, log=print) -> Path:
    folder = Path(study.output) / study.name
    folder.mkdir(parents=True, exist_ok=True)
    extra, catalogue = catalogue_args(study, folder)
    runs = plan(study, extra)
    if dry_run:
        for run in runs:
            log(f"{run.run_id}: python train.py fit {shlex.join(run.args)}")
        return folder
    metrics = primary_metrics(catalogue, study.targets)
    results = Results(folder / "results.csv")
    exports = {r.arm: Path(results.rows[r.run_id]["log_dir"]) / "export" for r in runs
               if r.stage == "upstream" and results.done(r.run_id)}
    exports = {name: path for name, path in exports.items() if path.is_dir()}  # a deleted export is redone
    todo = [r for r in runs if not results.done(r.run_id) or (r.stage == "upstream" and r.arm not in exports)]
    log(f"{study.name}: {len(runs)} runs, {len(runs) - len(todo)} done earlier, {len(todo)} to do "
        f"(estimated {eta(results, todo)}); results in {folder}")
    executed = 0
    for i, run in enumerate(todo):
        if max_runs is not None and executed >= max_runs:
            log(f"stopping after {executed} run(s) (--max-runs); rerun the command to continue")
            break
        args = list(run.args)
        if run.upstream:
            if run.upstream not in exports:
                results.record({"study": study.name, **vars(run), "status": f"skipped (upstream {run.upstream} "
                                f"not done)", "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
                continue
            args.append(f"--model.init_from={exports[run.upstream]}")
        log(f"[{i + 1}/{len(todo)}] {run.run_id} ...")
        tag = "val/score" if run.stage == "upstream" else f"val/{run.target}/{metrics[run.target]}"
        row = execute(run, args, folder / "runs" / run.run_id, tag, study.metric, log)
        executed += 1
        if run.stage == "upstream" and row["status"] == "ok":
            exports[run.arm] = Path(row["log_dir"]) / "export"
        elif run.stage == "finetune" and not study.keep_checkpoints:
            shutil.rmtree(Path(row["log_dir"]) / "export", ignore_errors=True)
        results.record({"study": study.name, **row})
        value = "-" if row["value"] is None else f"{row['value']:.4f}"
        log(f"[{i + 1}/{len(todo)}] {run.run_id}: {row['status']}, {tag} {value}, {row['wall_s']:.0f} s; "
            f"{len(todo) - i - 1} to do, about {eta(results, todo[i + 1:])} left")
    return folder


def write_report(study: Study, folder: Path, command: str) -> Path:
    rows = [parse(r) for r in Results(folder / "results.csv").rows.values()]
    return report.write(study, rows, folder, command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the study's YAML (experiments/*.yaml)")
    parser.add_argument("--data-root", help="folder of the shared_* datasets (laid out like /work/shared/data)")
    parser.add_argument("--output", help="parent folder of the sweep (default: the study's `output`)")
    parser.add_argument("--max-runs", type=int, help="stop after this many runs (rerun to continue)")
    parser.add_argument("--dry-run", action="store_true", help="print every run's train.py command and stop")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report and plots from the CSV")
    args = parser.parse_args(argv)
    study = Study.load(args.config, data_root=args.data_root, output=args.output)
    command = "python -m experiments.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    folder = Path(study.output) / study.name
    if not args.report_only:
        start = time.time()
        try:
            folder = sweep(study, args.max_runs, args.dry_run)
        except KeyboardInterrupt:
            print("interrupted: the current run is redone when the same command is run again", file=sys.stderr)
            write_report(study, folder, command)
            return 130
        if args.dry_run:
            return 0
        print(f"sweep wall time {(time.time() - start) / 60:.1f} min")
    print(f"report: {write_report(study, folder, command)}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the current run as Ctrl-C does
    sys.exit(main())
