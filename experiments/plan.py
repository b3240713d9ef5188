"""A study's YAML -> the train.py runs it needs: pre-finetuning runs (`upstream`, each exported for the next stage)
and fine-tuning runs, one per arm x target x fraction x seed. Paths are relative to the repository root (the
runner's working directory); example studies are the other YAML files in this folder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PLOTS = ("fraction", "tasks", "bars")
ARM_KEYS = {"init_from", "args", "x", "targets", "fractions", "pair_seeds"}


@dataclass
class Study:
    name: str  # the sweep's folder under `output`, and the `study` column of the CSV
    output: str = "logs/experiments"  # sweeps are written to <output>/<name>/
    description: str = ""  # one line for the report
    train_args: list[str] = field(default_factory=list)  # train.py arguments of every run (e.g. --config X.yaml)
    backbone: str | None = None  # --model.backbone of every run (a folder or hub id)
    backbone_package: str | None = None  # a Python package whose get_model_path() gives the backbone folder
    # folder of local copies of the tasks (`--data.data_root` of every run; docs/catalogue.md, "Local copies");
    # none: the hub sources. Usually given on the command line (--data-root), not in the study's YAML
    data_root: str | None = None
    upstream: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {tasks: [...], args: [...]}
    upstream_args: list[str] = field(default_factory=list)  # train.py arguments of every pre-finetuning run
    upstream_seed: int = 0  # seed_everything of the pre-finetuning runs (one run each, as in the paper)
    # several: each upstream mix runs once per seed, and every fine-tuning run of an arm that starts from it runs once
    # per (upstream seed, fine-tuning seed): the report then gives the spread of each apart
    upstream_seeds: list[int] | None = None
    nested_tasks: dict[str, Any] | None = None  # {pool: [...], sizes: [k, ...], pair_seeds}: upstream + arm `tasks<k>`
    finetune_args: list[str] = field(default_factory=list)  # train.py arguments of every fine-tuning run
    targets: list[str] = field(default_factory=list)  # fine-tuning tasks (held out of every upstream mix)
    fractions: list[float] = field(default_factory=lambda: [1.0])  # data.train_fraction of the targets
    seeds: list[int] = field(default_factory=lambda: [0])  # seed_everything (and the subset draw) per run
    # name -> {init_from: upstream name or folder, args: [...], x: number, targets / fractions: subsets of the study's,
    #          pair_seeds: true = the i-th fine-tuning seed runs from the i-th upstream seed only, not from each}
    arms: dict[str, dict[str, Any]] = field(default_factory=lambda: {"baseline": {}})
    baseline: str | None = "baseline"  # the arm every other arm is compared with (same seed: paired)
    # arm -> the arm it varies (an ablation against the default it changes one thing of, e.g. homogeneous: all): the
    # report pairs them by fine-tuning and upstream seed, so the difference is the varied thing's alone
    compare: dict[str, str] = field(default_factory=dict)
    metric: str = "final"  # `final`: the last validation of the target's metric; `best`: its maximum
    # target -> the metric its runs are judged by, one of its catalogue `metrics` (default: the first, its primary);
    # a row recorded with another metric is run again
    target_metrics: dict[str, str] = field(default_factory=dict)
    plot: str | None = None  # fraction | tasks | bars; default from the study's shape
    # false: fine-tuning runs keep no checkpoint (their export and final.ckpt are deleted), pre-finetuning runs keep
    # their best checkpoint (the export's weights) but no last.ckpt (an interrupted run starts again from scratch)
    keep_checkpoints: bool = False
    # name -> run id patterns (as --only takes them), in the order to run them: a study too long for one sitting, in
    # parts that each answer something (`--part NAME` runs one; the runner resumes, so parts can also be split)
    parts: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> Study:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
        study = cls(**{**raw, **{k: v for k, v in overrides.items() if v is not None}})
        study.expand_nested_tasks()
        study.check(str(path))
        return study

    def expand_nested_tasks(self) -> None:
        """Task-count scaling: upstream `tasks<k>` pre-finetunes on the first k tasks of `pool` (each mix a superset
        of the smaller ones), and arm `tasks<k>` fine-tunes from it, at x = k (the baseline at x = 0)."""
        if not self.nested_tasks:
            return
        pool, sizes = list(self.nested_tasks["pool"]), sorted(self.nested_tasks["sizes"])
        if sizes[-1] > len(pool):
            raise ValueError(f"nested_tasks: size {sizes[-1]} is larger than the pool ({len(pool)} tasks)")
        for k in sizes:
            self.upstream[f"tasks{k}"] = {"tasks": pool[:k]}
            self.arms[f"tasks{k}"] = {"init_from": f"tasks{k}", "x": k,
                                      **({"pair_seeds": True} if self.nested_tasks.get("pair_seeds") else {})}
        if self.baseline in self.arms:
            self.arms[self.baseline] = {"x": 0, **self.arms[self.baseline]}

    def check(self, where: str) -> None:
        if self.data_root is not None and not Path(self.data_root).is_dir():
            raise ValueError(f"{where}: data root '{self.data_root}' is not a folder (it holds local copies of the "
                             f"tasks, e.g. <root>/mrpc/train.jsonl)")
        if self.metric not in ("final", "best"):
            raise ValueError(f"{where}: metric must be 'final' or 'best', got {self.metric!r}")
        if self.plot is not None and self.plot not in PLOTS:
            raise ValueError(f"{where}: plot must be one of {PLOTS}, got {self.plot!r}")
        if not self.targets or not self.arms:
            raise ValueError(f"{where}: a study needs targets and arms")
        stray = sorted(set(self.target_metrics) - set(self.targets))
        if stray:
            raise ValueError(f"{where}: target_metrics names {stray}, which are not among the targets {self.targets}")
        for name, arm in self.arms.items():
            unknown = sorted(set(arm) - ARM_KEYS)
            if unknown:
                raise ValueError(f"{where}: arm '{name}': unknown key(s) {unknown}; known: {sorted(ARM_KEYS)}")
            if not set(arm.get("targets", self.targets)) <= set(self.targets):
                raise ValueError(f"{where}: arm '{name}': its targets {arm['targets']} are not all study targets")
            if not set(arm.get("fractions", self.fractions)) <= set(self.fractions):
                raise ValueError(f"{where}: arm '{name}': its fractions {arm['fractions']} are not all study fractions")
        for name, up in self.upstream.items():
            if not up.get("tasks"):
                raise ValueError(f"{where}: upstream '{name}' needs tasks")
            held_in = sorted(set(up["tasks"]) & set(self.targets))
            if held_in:
                raise ValueError(f"{where}: upstream '{name}' trains on target(s) {held_in}: targets must be held out")
        if not all(0 < f <= 1 for f in self.fractions):
            raise ValueError(f"{where}: fractions must be in (0, 1], got {self.fractions}")
        for arm, reference in self.compare.items():
            missing = [a for a in (arm, reference) if a not in self.arms]
            if missing or arm == reference:
                raise ValueError(f"{where}: compare '{arm}: {reference}': " + (
                    f"{missing} not among the arms {list(self.arms)}" if missing else "an arm against itself"))
        for name, patterns in self.parts.items():
            if not patterns or not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise ValueError(f"{where}: part '{name}' needs a list of run id patterns, got {patterns!r}")
        if self.baseline is not None and self.baseline not in self.arms:
            raise ValueError(f"{where}: baseline arm '{self.baseline}' is not among the arms {list(self.arms)}")

    def judged_by(self, tasks: dict[str, Any] | None = None) -> dict[str, str]:
        """target -> the metric its runs are judged by: `target_metrics`, else the target's primary metric (the first
        of its catalogue `metrics`); a target the catalogue lacks has only what `target_metrics` names. tasks: the
        catalogue's task specs by name, when the caller has loaded them already."""
        if tasks is None:
            from datamodules.catalogue import Catalogue
            tasks = Catalogue.load().tasks
        for target, metric in self.target_metrics.items():
            if target in tasks and metric not in tasks[target].metrics:
                raise ValueError(f"target_metrics: '{metric}' is not a metric of target '{target}' (its catalogue "
                                 f"metrics: {tasks[target].metrics})")
        return {t: self.target_metrics.get(t) or tasks[t].metrics[0] for t in self.targets
                if t in self.target_metrics or t in tasks}

    @property
    def plot_kind(self) -> str:
        if self.plot:
            return self.plot
        if self.nested_tasks:
            return "tasks"
        return "fraction" if len(self.fractions) > 1 else "bars"


@dataclass(frozen=True)
class Run:
    run_id: str  # stable: keys the CSV row and the run's folder
    stage: str  # upstream | finetune
    arm: str  # the arm (finetune) or the upstream name
    target: str  # the fine-tuning task; for upstream runs the number of tasks in its mix
    fraction: float | None  # data.train_fraction of the target (finetune)
    seed: int
    args: tuple[str, ...]  # train.py arguments, without the init_from of an upstream export (added when it exists)
    upstream: str | None = None  # fine-tune from this upstream run's export
    x: float | None = None  # the arm's value on a numeric axis (number of pre-finetuning tasks)
    upstream_seed: int | None = None  # the seed of the upstream run it starts from (fine-tuning from an upstream)
    same_as: str | None = None  # an earlier run with the same train.py arguments and upstream: not run twice


def fmt_fraction(fraction: float) -> str:
    return f"{fraction:g}"


def plan(study: Study, extra_args: list[str]) -> list[Run]:
    """Every run of the study: upstream runs first, then fine-tuning runs seed by seed (so an interrupted sweep has
    complete pairs of arms), each seed fraction by fraction, target by target, arm by arm. extra_args: train.py
    arguments of every run (`data_args`)."""
    backbone = backbone_path(study)
    common = [*study.train_args, *([f"--model.backbone={backbone}"] if backbone else []), *extra_args]
    keep = study.keep_checkpoints
    runs = []
    up_seeds = study.upstream_seeds or [study.upstream_seed]
    for name, up in study.upstream.items():
        tasks = ",".join(up["tasks"])
        count = f"{len(up['tasks'])} task{'s' if len(up['tasks']) > 1 else ''}"
        for up_seed in up_seeds:
            args = [*common, f"--seed_everything={up_seed}", *study.upstream_args, f"--data.tasks=[{tasks}]",
                    *([] if keep else ["--latest.save_top_k=0"]), *up.get("args", [])]
            runs.append(Run(upstream_id(study, name, up_seed), "upstream", name, count, None, up_seed, tuple(args)))
    # no checkpoint to export from: the export takes the final weights (saved once as final.ckpt, deleted by the runner)
    no_checkpoints = [] if keep else ["--checkpoint.save_top_k=0", "--checkpoint.save_last=false",
                                      "--latest.save_top_k=0", "--export.use_best=false"]
    for seed in study.seeds:
        for fraction in study.fractions:
            for target in study.targets:
                for arm_name, arm in study.arms.items():
                    if target not in arm.get("targets", study.targets) or fraction not in arm.get("fractions",
                                                                                                  study.fractions):
                        continue
                    init = arm.get("init_from")
                    upstream = init if init in study.upstream else None
                    args = [*common, f"--seed_everything={seed}", *study.finetune_args, f"--data.tasks=[{target}]",
                            *([f"--data.train_fraction={fraction}"] if fraction < 1 else []), *no_checkpoints,
                            *([f"--model.init_from={init}"] if init and not upstream else []), *arm.get("args", [])]
                    run_id = f"ft-{arm_name}-{target}-f{fmt_fraction(fraction)}-s{seed}"
                    if not upstream:
                        runs.append(Run(run_id, "finetune", arm_name, target, fraction, seed, tuple(args), None,
                                        arm.get("x")))
                        continue
                    paired = [up_seeds[study.seeds.index(seed) % len(up_seeds)]] if arm.get("pair_seeds") else None
                    for up_seed in paired or up_seeds:
                        suffix = f"-u{up_seed}" if study.upstream_seeds else ""
                        runs.append(Run(run_id + suffix, "finetune", arm_name, target, fraction, seed, tuple(args),
                                        upstream_id(study, upstream, up_seed), arm.get("x"), up_seed))
    return mark_repeats(runs)


def mark_repeats(runs: list[Run]) -> list[Run]:
    """A fine-tuning run with the same train.py arguments and the same upstream run as an earlier one (two arms that
    start from one upstream mix on one target, e.g. the task-count curve's 1-task mix and the best intermediate task
    when that task is the first of the mix) would repeat it: it names that run in `same_as`, and the runner records
    that run's result under both ids instead of running it again."""
    first: dict[tuple, str] = {}
    out = []
    for run in runs:
        key = (run.args, run.upstream)
        if run.stage == "finetune" and key in first:
            run = dataclasses.replace(run, same_as=first[key])
        elif run.stage == "finetune":
            first[key] = run.run_id
        out.append(run)
    return out


def upstream_id(study: Study, name: str, seed: int) -> str:
    """`up-<name>`, with `-u<seed>` when the study runs several upstream seeds."""
    return f"up-{name}-u{seed}" if study.upstream_seeds else f"up-{name}"


def backbone_path(study: Study) -> str | None:
    if study.backbone_package:
        import importlib
        return str(importlib.import_module(study.backbone_package).get_model_path())
    return study.backbone


def data_args(study: Study) -> list[str]:
    """train.py arguments of every run for where the data is read: `--data.data_root` (absolute: the runs start in
    the repository root) when the study has a data root."""
    return [f"--data.data_root={Path(study.data_root).resolve()}"] if study.data_root else []
