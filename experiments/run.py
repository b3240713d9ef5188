"""Run a study: every configuration as its own `train.py fit` subprocess (a crash loses one run), pre-finetuning runs
first (each exported; fine-tuning runs start from the export with `--model.init_from`), one CSV row per run, then
a Markdown report, plots and TensorBoard under the sweep folder. Rerunning the same command resumes: a run whose row
says `ok` is not run again (Ctrl-C stops the current run; it is redone next time). Every 10 minutes it logs
where each running run is (step, and time left at its rate so far). A study too long for one sitting runs in the
parts its YAML names (`--part NAME`, or any runs with `--only PATTERN`); `--dry-run` says what each part has left.

    python -m experiments.run --config experiments/does_it_help.yaml --data-root DATA --jobs 2
    python -m experiments.run --config experiments/does_it_help.yaml --data-root DATA --jobs 2 --part upstream_spread
    python -m experiments.run --config experiments/does_it_help.yaml --report-only   # tables and plots again
    tensorboard --logdir logs/experiments
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

from datamodules.catalogue import Catalogue
from datamodules.multitask import DATA_ROOT_ENV
from experiments import report
from experiments.plan import Run, Study, data_args, plan
from experiments.processes import Process
from experiments.results import Results, latest_step, log_dir_of, parse, read_metric


def target_metrics(study: Study) -> dict[str, str]:
    """target -> the metric its runs are judged by (`Study.judged_by`); every target must be in the catalogue."""
    tasks = Catalogue.load().tasks
    unknown = sorted(set(study.targets) - set(tasks))
    if unknown:
        raise ValueError(f"target(s) {unknown} are not in the catalogue")
    return study.judged_by(tasks)


def metric_of(run: Run, metrics: dict[str, str]) -> str:
    """The metric a run's row records: `score` (val/score) for pre-finetuning, the target's metric for fine-tuning."""
    return "score" if run.stage == "upstream" else metrics[run.target]


class Job(Process):
    """One `train.py fit` in its own process group (`Process`), its output in <run_dir>/train.log; `row()` once it
    ended."""

    def __init__(self, run: Run, args: list[str], run_dir: Path, tag: str, mode: str, threads: int | None) -> None:
        self.run, self.run_dir, self.tag, self.mode = run, run_dir, tag, mode
        command = [sys.executable, "train.py", "fit", *args, f"--trainer.logger.init_args.save_dir={run_dir}"]
        super().__init__(command, run_dir, "train.log", threads)

    def row(self, log=print) -> dict:
        run, code, wall = self.run, self.wait(), self.seconds()
        log_dir = log_dir_of(self.run_dir)
        metric = read_metric(log_dir, self.tag, self.mode) if log_dir else None
        status = "ok" if code == 0 and metric else f"failed (exit {code})" if code else f"no {self.tag} logged"
        if status != "ok":
            tail = self.log.read_text().splitlines()[-15:]
            log(f"  {run.run_id}: {status}; the end of {self.log}:\n    " + "\n    ".join(tail))
        if run.stage == "upstream" and status == "ok" and not (log_dir / "export").is_dir():
            status = "no export written"
        return {"run_id": run.run_id, "stage": run.stage, "arm": run.arm, "x": run.x, "target": run.target,
                "fraction": run.fraction, "seed": run.seed, "upstream_seed": run.upstream_seed,
                "metric": self.tag.split("/")[-1],
                "value": metric and metric[0], "step": metric and metric[1], "wall_s": round(wall, 1),
                "status": status, "log_dir": str(log_dir or self.run_dir),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def eta(results: Results, todo: list[Run], jobs: int = 1) -> str:
    """Time left from the mean wall time of the finished runs of each stage, `jobs` at a time; runs of a stage
    with no finished run yet are counted apart."""
    walls: dict[str, list[float]] = {}
    for row in results.rows.values():
        if row["status"] == "ok" and not row.get("same_as"):  # a repeat took no time of its own
            walls.setdefault(row["stage"], []).append(float(row["wall_s"]))
    todo = [r for r in todo if not r.same_as]  # recorded from the run it repeats, in no time
    timed = [r for r in todo if r.stage in walls]
    seconds = sum(sum(walls[r.stage]) / len(walls[r.stage]) for r in timed)
    untimed = [r for r in todo if r.stage not in walls]
    if not timed:
        return "unknown" if untimed else "0.0 min"
    stages = "/".join(sorted({r.stage for r in untimed}))
    return f"{seconds / jobs / 60:.1f} min" + (f" + {len(untimed)} {stages} run(s) not yet timed" if untimed else "")


def max_steps_of(args: list[str]) -> int | None:
    """The run's `--trainer.max_steps` (the last one given wins, as in LightningCLI); None if its args set none."""
    values = [a.split("=", 1)[1] for a in args if a.startswith("--trainer.max_steps=")]
    return int(values[-1]) if values else None


def progress(run: Run, run_dir: Path, elapsed: float) -> str:
    """Where a running run is, from what it has logged so far: `up-all-u0 step 240 of 1000, about 40 min left` (time
    left by the rate so far, its start-up included, so on the high side)."""
    log_dir = log_dir_of(run_dir)
    step = latest_step(log_dir) if log_dir else None
    if not step:
        return f"{run.run_id} starting ({elapsed / 60:.0f} min)"
    total = max_steps_of(run.args)
    if not total:
        return f"{run.run_id} step {step}"
    left = elapsed * max(total - step, 0) / step
    return f"{run.run_id} step {step} of {total}, about {left / 60:.0f} min left"


def next_runnable(pending: list[Run], active: list[Run], exports: dict[str, Path]) -> Run | None:
    """The first pending run that need not wait: no upstream, or its upstream's export exists, or its upstream will
    not run any more (it failed: the run is then recorded as skipped); a run that repeats another (`same_as`) once
    that one has ended. None while every pending run waits."""
    coming = {r.run_id for r in [*pending, *active] if r.stage == "upstream"}
    unfinished = {r.run_id for r in [*pending, *active]}

    def ready(run: Run) -> bool:
        if run.same_as:
            return run.same_as not in unfinished
        return not run.upstream or run.upstream in exports or run.upstream not in coming
    return next((r for r in pending if ready(r)), None)


def select(runs: list[Run], patterns: list[str] | None) -> list[Run]:
    """The runs whose id matches one of the shell patterns (`ft-all-*-s0-u0`), with the upstream runs they start
    from: one part of a study too long for one sitting. None: every run. A pattern that matches nothing is an error
    (a typo would otherwise run nothing, or everything)."""
    if not patterns:
        return runs
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(r.run_id, p) for r in runs)]
    if unmatched:
        raise ValueError(f"--only: no run id matches {unmatched} (--dry-run lists the ids, e.g. {runs[-1].run_id})")
    chosen = {r.run_id for r in runs if any(fnmatch.fnmatchcase(r.run_id, p) for p in patterns)}
    chosen |= {r.same_as for r in runs if r.run_id in chosen and r.same_as}
    chosen |= {r.upstream for r in runs if r.run_id in chosen and r.upstream}
    return [r for r in runs if r.run_id in chosen]


def export_dir(row: dict) -> Path:
    """Where a pre-finetuning run's CSV row says its export is (it may have been deleted since)."""
    return Path(row["log_dir"]) / "export"


def exports_of(runs: list[Run], results: Results) -> dict[str, Path]:
    """The export folder of each finished upstream run among `runs` whose export is still on disk."""
    folders = {r.run_id: export_dir(results.rows[r.run_id]) for r in runs
               if r.stage == "upstream" and results.done(r.run_id)}
    return {name: path for name, path in folders.items() if path.is_dir()}


def to_do(runs: list[Run], results: Results, metrics: dict[str, str], exports: dict[str, Path]) -> list[Run]:
    """The runs still to run: those not finished with the metric the study reads (`metric_of`), and a finished
    upstream run whose export is gone only if a fine-tuning run still to run starts from it."""
    left = {r.run_id for r in runs if not results.done(r.run_id, metric_of(r, metrics))}
    left |= {r.run_id for r in runs if r.same_as and (r.same_as in left or stale_repeat(r, results))}
    needed = {r.upstream for r in runs if r.run_id in left and r.upstream and not r.same_as}
    return [r for r in runs if r.run_id in left or (r.run_id in needed and r.run_id not in exports)]


def stale_repeat(run: Run, results: Results) -> bool:
    """A repeat (`Run.same_as`) recorded with another result than its original has now (the original ran again
    after the repeat was recorded): it is recorded again."""
    mine, original = results.rows.get(run.run_id, {}), results.rows.get(run.same_as, {})
    return any(mine.get(k) != original.get(k) for k in ("metric", "value", "step", "log_dir"))


def parts_done(study: Study, runs: list[Run], results: Results, metrics: dict[str, str], jobs: int = 1) -> list[str]:
    """One line per part of the study (`parts`): its runs (with the upstream runs they start from), how many of
    them have finished (with the metric `metrics` asks for) and the time left (`eta`, `jobs` at a time), then the
    runs that no part selects."""
    lines, covered = [], set()
    for name, patterns in study.parts.items():
        chosen = select(runs, patterns)
        covered |= {r.run_id for r in chosen}
        todo = to_do(chosen, results, metrics, exports_of(chosen, results))
        lines.append(f"part {name}: {len(chosen)} runs, {len(chosen) - len(todo)} done, about "
                     f"{eta(results, todo, jobs)} left at --jobs {jobs} ({' '.join(patterns)})")
    rest = [r for r in runs if r.run_id not in covered]
    if study.parts and rest:
        lines.append(f"in no part: {len(rest)} runs, e.g. {rest[0].run_id}")
    return lines


def sweep(study: Study, max_runs: int | None = None, dry_run: bool = False, jobs: int = 1, log=print,
          only: list[str] | None = None, status_every: float = 600) -> Path:
    """Run what is not done yet (of the runs `only` selects: `select`), up to `jobs` runs at a time (each with
    cores / jobs threads); a fine-tuning run starts once its upstream export exists, and is recorded as skipped if
    its upstream failed. Every `status_every` seconds it logs where each running run is (`progress`)."""
    folder = (Path(study.output) / study.name).resolve()  # the runs start in the repository root, not here
    runs = select(plan(study, data_args(study)), only)
    metrics = target_metrics(study)
    folder.mkdir(parents=True, exist_ok=True)
    if dry_run:
        for run in runs:
            log(f"{run.run_id}: python train.py fit {shlex.join(run.args)}")
        for line in parts_done(study, plan(study, data_args(study)), Results(folder / "results.csv"), metrics, jobs):
            log(line)
        return folder
    results = Results(folder / "results.csv")
    exports = exports_of(runs, results)
    todo = to_do(runs, results, metrics, exports)
    for run in todo:
        if run.stage == "upstream" and results.done(run.run_id):  # its export was deleted, and is needed
            log(f"{run.run_id}: finished earlier, but its export {export_dir(results.rows[run.run_id])} is gone: "
                f"pre-finetuned again (same seed) and its row replaced; keep the run folders of pre-finetuning runs "
                f"between sittings")
        elif run.same_as and results.done(run.run_id):
            log(f"{run.run_id}: recorded earlier from {run.same_as}, which has run again since (or runs now): "
                f"recorded again from it")
        elif results.done(run.run_id):
            log(f"{run.run_id}: finished earlier, judged by {results.rows[run.run_id]['metric']}; the study now reads "
                f"{metric_of(run, metrics)}: run again and its row replaced")
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    log(f"{study.name}: {len(runs)} runs{' selected by --only' if only else ''}, {len(runs) - len(todo)} done "
        f"earlier, {len(todo)} to do "
        f"(estimated {eta(results, todo, jobs)}); results in {folder}")
    pending, active, started, finished = list(todo), [], 0, 0
    last_status = time.time()
    try:
        while pending or active:
            while len(active) < jobs and pending and (max_runs is None or started < max_runs):
                run = next_runnable(pending, [j.run for j in active], exports)
                if run is None:
                    break
                pending.remove(run)
                if run.same_as:
                    finished += 1
                    log(f"[{finished}/{len(todo)} done] {run.run_id}: " + record_repeat(run, results, study, metrics))
                    continue
                args = list(run.args)
                if run.upstream and run.upstream not in exports:
                    results.record({"study": study.name, **vars(run), "status": f"skipped (upstream {run.upstream} "
                                    f"failed)", "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
                    finished += 1
                    continue
                if run.upstream:
                    args.append(f"--model.init_from={exports[run.upstream]}")
                tag = "val/score" if run.stage == "upstream" else f"val/{run.target}/{metric_of(run, metrics)}"
                active.append(Job(run, args, folder / "runs" / run.run_id, tag, study.metric, threads))
                started += 1
                log(f"[{len(todo) - len(pending)}/{len(todo)}] {run.run_id} started")
            if not active:
                if pending:
                    log(f"stopping after {started} run(s) (--max-runs); rerun the command to continue")
                break
            ended = [j for j in active if j.done()]
            if time.time() - last_status >= status_every and active:
                last_status = time.time()
                log(time.strftime("%H:%M ") + "running: " + "; ".join(
                    progress(j.run, j.run_dir, last_status - j.start) for j in active))
            if not ended:
                time.sleep(0.5)
                continue
            for job in ended:
                active.remove(job)
                row = job.row(log)
                finished += 1
                if job.run.stage == "upstream" and row["status"] == "ok":
                    exports[job.run.run_id] = export_dir(row)
                elif job.run.stage == "finetune" and not study.keep_checkpoints:  # the export and final.ckpt
                    for kept in ("export", "checkpoints"):
                        shutil.rmtree(Path(row["log_dir"]) / kept, ignore_errors=True)
                results.record({"study": study.name, **row})
                value = "-" if row["value"] is None else f"{row['value']:.4f}"
                left = pending + [j.run for j in active]
                log(f"[{finished}/{len(todo)} done] {job.run.run_id}: {row['status']}, {job.tag} {value}, "
                    f"{row['wall_s']:.0f} s; {len(left)} to do, about {eta(results, left, jobs)} left")
    except BaseException:
        for job in active:
            job.stop()
        raise
    return folder


def record_repeat(run: Run, results: Results, study: Study, metrics: dict[str, str]) -> str:
    """Record a run that repeats another (`Run.same_as`) with that run's result (its value, step and log folder, no
    wall time of its own), or as skipped if that run did not finish; returns what happened, for the log."""
    if not results.done(run.same_as, metric_of(run, metrics)):
        status = f"skipped (the same run as {run.same_as}, which did not finish)"
        results.record({"study": study.name, **vars(run), "status": status,
                        "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        return status
    original = results.rows[run.same_as]
    results.record({**original, **{k: v for k, v in vars(run).items() if k in ("run_id", "arm", "x", "same_as")},
                    "wall_s": 0, "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    return f"the same run as {run.same_as}: its result recorded, {float(original['value']):.4f}"


def write_report(study: Study, folder: Path, command: str) -> Path:
    rows = [parse(r) for r in Results(folder / "results.csv").rows.values()]
    return report.write(study, rows, folder, command, planned=[r.run_id for r in plan(study, data_args(study))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the study's YAML (experiments/*.yaml)")
    parser.add_argument("--data-root", default=os.environ.get(DATA_ROOT_ENV) or None,
                        help="folder of local copies of the tasks, read instead of the hub (passed to every run as "
                        f"--data.data_root; default: the environment variable {DATA_ROOT_ENV})")
    parser.add_argument("--output", help="parent folder of the sweep (default: the study's `output`)")
    parser.add_argument("--max-runs", type=int, help="stop after starting this many runs (rerun to continue)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, each with cores / jobs threads "
                        "(small models on CPU: 2 single-thread runs beat one 2-thread run)")
    parser.add_argument("--only", nargs="+", metavar="PATTERN",
                        help="run only the runs whose id matches one of these shell patterns (and the pre-finetuning "
                        "runs they start from): a study in parts, e.g. --only 'ft-baseline-*-s0' 'ft-all-*-s0-u0'")
    parser.add_argument("--part", nargs="+", metavar="NAME",
                        help="run the study's part(s) of these names (its `parts`: run id patterns, as --only)")
    parser.add_argument("--dry-run", action="store_true", help="print every run's train.py command and stop")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report and plots from the CSV")
    args = parser.parse_args(argv)
    try:
        study = Study.load(args.config, data_root=args.data_root, output=args.output)
    except ValueError as error:
        parser.error(str(error))
    given = argv if argv is not None else sys.argv[1:]
    command = "python -m experiments.run " + shlex.join([a for a in given if a != "--report-only"])
    folder = Path(study.output) / study.name
    unknown = sorted(set(args.part or []) - set(study.parts))
    if unknown:
        parser.error(f"--part: {unknown} not among the parts of {args.config}: {list(study.parts) or 'none'}")
    only = [p for name in args.part or [] for p in study.parts[name]] + (args.only or []) or None
    runs = plan(study, data_args(study))
    try:
        for name, patterns in study.parts.items():  # every part, so that --dry-run can count them
            try:
                select(runs, patterns)
            except ValueError as error:
                raise ValueError(f"{args.config}: part '{name}': {str(error).removeprefix('--only: ')}") from None
        select(runs, only)
        try:
            target_metrics(study)
        except ValueError as error:
            raise ValueError(f"{args.config}: {error}") from None
    except ValueError as error:
        parser.error(str(error))
    if not args.report_only:
        start = time.time()
        try:
            folder = sweep(study, args.max_runs, args.dry_run, args.jobs, only=only)
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
