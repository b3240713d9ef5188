"""What a sweep's CSV says: per (target, fraction, arm) the mean and spread over seeds, each arm against the baseline
with seeds paired, plots with error bars (PNG and TensorBoard), and a Markdown report."""

from __future__ import annotations

import math
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from experiments.plan import Study, fmt_fraction
from experiments.results import collect_curves, collect_upstream

Key = tuple[str, float, str]  # (target, fraction, arm)


def cells(rows: list[dict]) -> dict[Key, dict[int, dict[int | None, float]]]:
    """{(target, fraction, arm): {seed: {upstream seed: value}}} over the fine-tuning runs that finished."""
    out: dict[Key, dict[int, dict[int | None, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        if row["stage"] == "finetune" and row["status"] == "ok" and row["value"] is not None:
            out[row["target"], row["fraction"], row["arm"]][row["seed"]][row.get("upstream_seed")] = row["value"]
    return out


def groups(rows: list[dict]) -> dict[Key, dict[int, float]]:
    """{(target, fraction, arm): {seed: value}} over the fine-tuning runs that finished; with several upstream seeds
    a fine-tuning seed's value is its mean over them (so arms pair with the baseline by fine-tuning seed)."""
    return {k: {s: float(np.mean(list(by_up.values()))) for s, by_up in d.items()} for k, d in cells(rows).items()}


def runs_by_seeds(rows: list[dict]) -> dict[Key, dict[tuple[int, int | None], float]]:
    """{(target, fraction, arm): {(seed, upstream seed): value}}: every finished fine-tuning run apart, so that
    `compare` pairs two arms by fine-tuning seed (training subset) and upstream seed (pre-finetuning seed) both."""
    return {k: {(s, u): v for s, by_up in d.items() for u, v in by_up.items()} for k, d in cells(rows).items()}


def upstream_seed_counts(rows: list[dict]) -> dict[Key, int]:
    """{(target, fraction, arm): the most upstream seeds one of its fine-tuning seeds ran from} (1 where seeds are
    paired: fine-tuning seed i from upstream seed i)."""
    return {k: max(len(by_up) for by_up in d.values()) for k, d in cells(rows).items()}


def reported_steps(rows: list[dict]) -> dict[Key, list[int]]:
    """{(target, fraction, arm): [step]}: the update at which each finished fine-tuning run reached the value it
    reports (with `metric: best`, a step at the end of the run means it was still improving)."""
    out: dict[Key, list[int]] = defaultdict(list)
    for row in rows:
        if row["stage"] == "finetune" and row["status"] == "ok" and row.get("step") is not None:
            out[row["target"], row["fraction"], row["arm"]].append(row["step"])
    return out


def mean_step(steps: list[int] | None) -> str:
    return f"{np.mean(steps):.0f}" if steps else "-"


def seed_spreads(rows: list[dict]) -> dict[Key, dict]:
    """Per (target, fraction, arm) where one fine-tuning seed ran from several upstream seeds (the seeds are crossed,
    fully or in part): the spread that comes from pre-finetuning (the standard deviation over upstream seeds at one
    fine-tuning seed, averaged over the fine-tuning seeds that ran from two or more) and the one from fine-tuning (the
    standard deviation over fine-tuning seeds at one upstream seed, averaged likewise; NaN until some upstream seed
    has two). Arms with `pair_seeds` (fine-tuning seed i from upstream seed i only) are left out: there the two
    sources cannot be told apart."""
    out = {}
    for key, by_seed in cells(rows).items():
        ups = sorted({u for d in by_seed.values() for u in d if u is not None})
        per_finetune = [list(d.values()) for d in by_seed.values() if len(d) >= 2]
        if not per_finetune:
            continue
        per_up = [[d[u] for d in by_seed.values() if u in d] for u in ups]
        spread = [mean_std(v)[1] for v in per_up if len(v) >= 2]
        out[key] = {"upstream_seeds": len(ups), "finetune_seeds": len(by_seed),
                    "upstream_std": float(np.mean([mean_std(v)[1] for v in per_finetune])),
                    "finetune_std": float(np.mean(spread)) if spread else math.nan}
    return out


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN with fewer than two values)."""
    values = np.asarray(list(values), dtype=float)
    if not len(values):
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


def compare(base: dict, arm: dict) -> dict:
    """The arm against the baseline over the seeds both have (keys: a seed, or (seed, upstream seed)): paired
    differences (arm - baseline, same key), and whether their mean exceeds the seed spread (the larger of the two
    arms' standard deviations over seeds)."""
    seeds = sorted(set(base) & set(arm))
    diffs = [arm[s] - base[s] for s in seeds]
    (b_mean, b_std), (a_mean, a_std), (d_mean, d_std) = (mean_std(base[s] for s in seeds),
                                                         mean_std(arm[s] for s in seeds), mean_std(diffs))
    spread = max(b_std, a_std) if len(seeds) > 1 else math.nan
    return {"n": len(seeds), "base_mean": b_mean, "base_std": b_std, "arm_mean": a_mean, "arm_std": a_std,
            "diff_mean": d_mean, "diff_std": d_std, "wins": sum(d > 0 for d in diffs), "spread": spread,
            "exceeds": None if math.isnan(spread) else abs(d_mean) > spread}


def compared_cells(c: dict) -> str:
    """The Markdown cells of one `compare`: pairs, both arms' mean ± std, the difference, wins, the verdict."""
    verdict = {None: "n/a", True: "**yes**", False: "no"}[c["exceeds"]]
    return (f"{c['n']} | {fmt(c['base_mean'])} ± {fmt(c['base_std'])} | {fmt(c['arm_mean'])} ± {fmt(c['arm_std'])} | "
            f"{fmt(c['diff_mean'], True)} ± {fmt(c['diff_std'])} | {c['wins']}/{c['n']} | {verdict} |")


def fmt(value: float, signed: bool = False) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:+.3f}" if signed else f"{value:.3f}"


def ordered(study: Study, data: dict[Key, dict[int, float]]) -> list[Key]:
    arms, targets = list(study.arms), list(study.targets)
    return sorted(data, key=lambda k: (targets.index(k[0]) if k[0] in targets else len(targets), k[1],
                                       arms.index(k[2]) if k[2] in arms else len(arms)))


def upstream_table(points: list[dict]) -> list[str]:
    """Markdown rows: each mix task's primary metric (the catalogue's first; else the first logged) at the end of
    pre-finetuning, per upstream arm (columns): the mean over its seeds, ± the std with several; then per task
    family, the mean of its tasks' primary metrics, per seed in brackets."""
    from datamodules.catalogue import Catalogue
    tasks = Catalogue.load().tasks
    arms = list(dict.fromkeys(u["arm"] for u in points))
    names = list(dict.fromkeys(u["task"] for u in points))
    primary = {}
    for task in names:
        logged = [u["metric"] for u in points if u["task"] == task]
        primary[task] = tasks[task].metrics[0] if task in tasks and tasks[task].metrics[0] in logged else logged[0]
    lines = ["| task | metric | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for task in names:
        cells = []
        for arm in arms:
            values = [u["value"] for u in points if (u["arm"], u["task"], u["metric"]) == (arm, task, primary[task])]
            cells.append(mean_cell(values))
        lines.append(f"| {task} | {primary[task]} | " + " | ".join(cells) + " |")
    families: dict[str, list[str]] = {}
    for task in names:
        families.setdefault(tasks[task].family if task in tasks else "other", []).append(task)
    for family, members in families.items():
        cells = []
        for arm in arms:
            seeds = sorted({u["seed"] for u in points if u["arm"] == arm and u["task"] in members})
            per_seed = [float(np.mean([u["value"] for u in points if (u["arm"], u["seed"], u["metric"]) == (
                arm, seed, primary[u["task"]]) and u["task"] in members])) for seed in seeds]
            cells.append(mean_cell(per_seed) + (f" ({', '.join(fmt(v) for v in per_seed)})" if len(seeds) > 1
                                                 else ""))
        lines.append(f"| mean: {family} ({len(members)} task{'s' * (len(members) > 1)}) | primary | "
                     + " | ".join(cells) + " |")
    return lines


def mean_cell(values: list[float]) -> str:
    """`mean` of the values, `mean ± std` with several; empty with none."""
    mean, std = mean_std(values)
    return "" if not values else fmt(mean) + ("" if math.isnan(std) else f" ± {fmt(std)}")


def markdown(study: Study, rows: list[dict], figures: list[Path], command: str,
             planned: list[str] | None = None, upstream_tasks: list[dict] | None = None,
             stale: list[dict] | None = None, judged: dict[str, str] | None = None) -> str:
    """The report's text. stale: fine-tuning rows left out, recorded with another metric than `judged` (target ->
    the metric the study reads) gives their target."""
    data, metric = groups(rows), {r["target"]: r["metric"] for r in rows if r["stage"] == "finetune"}
    lines = [f"# {study.name}", "", study.description, "", f"Command: `{command}`", "",
             (f"Metric: each target's validation metric (the tables' `metric` column: its primary metric unless the "
              f"study names another), {study.metric} validation of the fine-tuning run; mean and standard deviation "
              f"(ddof 1) over seeds."), ""]
    for target in dict.fromkeys(r["target"] for r in stale or []):
        left_out = [r for r in stale if r["target"] == target]
        lines += [(f"**{target}** is judged by {judged[target]}: {len(left_out)} of its runs, recorded with "
                   f"{', '.join(sorted({r['metric'] for r in left_out}))}, are left out until the runner runs them "
                   f"again: {', '.join(r['run_id'] for r in left_out)}."), ""]
    failed = [r for r in rows if r["status"] != "ok"]
    repeats = [r for r in rows if r["status"] == "ok" and r.get("same_as")]
    lines += [f"Runs: {len(rows) - len(failed)} ok, {len(failed)} not ok"
              + (f" ({', '.join(r['run_id'] + ': ' + r['status'] for r in failed)})" if failed else "")
              + (f"; {len(repeats)} of the ok runs are another arm's run with the same command, recorded from it "
                 f"(`same_as`), not run twice" if repeats else "")
              + "; wall time of the runs, summed (with --jobs they overlap): "
              f"{sum(r['wall_s'] or 0 for r in rows) / 60:.1f} min.", ""]
    if planned is not None:
        finished = {r["run_id"] for r in rows if r["status"] == "ok"} & set(planned)
        if len(finished) < len(planned):
            lines += [(f"**Partial report**: {len(finished)} of the study's {len(planned)} runs have finished "
                       "(`--dry-run` lists them all; the command without `--only` runs the rest). Every number "
                       "below is from the finished runs only."), ""]
    upstream = [r for r in rows if r["stage"] == "upstream"]
    if upstream:
        lines += ["## Pre-finetuning runs", "", "| upstream | tasks | val/score | wall time |", "|---|---|---|---|"]
        lines += [f"| {r['arm']} | {r['target']} | {fmt(r['value'])} | {(r['wall_s'] or 0) / 60:.1f} min |"
                  for r in upstream] + [""]
    if upstream_tasks:
        lines += ["## Pre-finetuning: each task of the mix at its end", "",
                  ("Each task's primary validation metric after the last update (mean over upstream seeds ± std), and "
                   "per task family the mean of its tasks' (per upstream seed in brackets)."), "",
                  *upstream_table(upstream_tasks), ""]
    steps, upstream_seeds = reported_steps(rows), upstream_seed_counts(rows)
    lines += ["## Fine-tuning: every arm", "",
              ("Step: the mean TensorBoard step at which the runs reached the value they report (Lightning logs the "
               "validation after update k at step k - 1). Seeds: fine-tuning seeds; where they ran from several "
               "upstream seeds (x n upstream), each fine-tuning seed's value is its mean over them."), "",
              "| target | metric | fraction | arm | seeds | mean | std | per seed | step |",
              "|---|---|---|---|---|---|---|---|---|"]
    for target, fraction, arm in ordered(study, data):
        values = data[target, fraction, arm]
        mean, std = mean_std(values.values())
        per_seed = ", ".join(f"{values[s]:.3f}" for s in sorted(values))
        ups = upstream_seeds.get((target, fraction, arm), 0)
        seeds = f"{len(values)}" + (f" (x{ups} upstream)" if ups > 1 else "")
        lines.append(f"| {target} | {metric.get(target, '')} | {fmt_fraction(fraction)} | {arm} | {seeds} | "
                     f"{fmt(mean)} | {fmt(std)} | {per_seed} | {mean_step(steps.get((target, fraction, arm)))} |")
    if study.baseline is not None:
        lines += ["", f"## Against `{study.baseline}` (paired by seed)", "",
                  ("Difference = arm - baseline on the same seed (same training subset); it *exceeds the seed "
                   "spread* when its mean is larger in size than the larger standard deviation over seeds of the two "
                   "arms."), "",
                  ("| target | fraction | arm | pairs | baseline | arm | difference (mean ± std) | arm better | "
                   "exceeds seed spread |"), "|---|---|---|---|---|---|---|---|---|"]
        for target, fraction, arm in ordered(study, data):
            base = data.get((target, fraction, study.baseline))
            if arm == study.baseline or not base:
                continue
            c = compare(base, data[target, fraction, arm])
            lines.append(f"| {target} | {fmt_fraction(fraction)} | {arm} | {compared_cells(c)}")
    if study.compare:
        by_seeds = runs_by_seeds(rows)
        lines += ["", "## Each arm against the arm it varies (paired by fine-tuning and upstream seed)", "",
                  ("Difference = arm - reference on the same fine-tuning seed and the same upstream seed (the study's "
                   "`compare`); *exceeds the seed spread* as above."), "",
                  ("| target | fraction | arm | against | pairs | reference | arm | difference (mean ± std) | "
                   "arm better | exceeds seed spread |"), "|---|---|---|---|---|---|---|---|---|---|"]
        for target, fraction, arm in ordered(study, by_seeds):
            reference = study.compare.get(arm)
            if reference is None or (target, fraction, reference) not in by_seeds:
                continue
            c = compare(by_seeds[target, fraction, reference], by_seeds[target, fraction, arm])
            if c["n"]:
                lines.append(f"| {target} | {fmt_fraction(fraction)} | {arm} | {reference} | {compared_cells(c)}")
    spreads = seed_spreads(rows)
    if spreads:
        lines += ["", "## Where the spread comes from", "",
                  ("Arms whose fine-tuning seeds ran from several upstream (pre-finetuning) seeds. Upstream "
                   "spread: the standard deviation over upstream seeds at one fine-tuning seed (same training "
                   "subset, head and order), averaged over fine-tuning seeds; fine-tuning spread: the standard "
                   "deviation over fine-tuning seeds at one upstream seed, averaged over upstream seeds (- until an "
                   "upstream seed has two fine-tuning seeds)."), "",
                  ("| target | fraction | arm | upstream seeds | fine-tuning seeds | upstream spread | "
                   "fine-tuning spread |"),
                  "|---|---|---|---|---|---|---|"]
        for target, fraction, arm in ordered(study, spreads):
            c = spreads[target, fraction, arm]
            lines.append(f"| {target} | {fmt_fraction(fraction)} | {arm} | {c['upstream_seeds']} | "
                         f"{c['finetune_seeds']} | {fmt(c['upstream_std'])} | {fmt(c['finetune_std'])} |")
    lines += [""] + [f"![{f.stem}]({f.name})" for f in figures]
    return "\n".join(lines) + "\n"


def figure(study: Study, rows: list[dict]):
    """One panel per target: metric vs fraction (lines per arm), vs number of pre-finetuning tasks (lines per
    fraction, the baseline at 0), or bars per arm (groups per fraction); error bars = std over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data, kind = groups(rows), study.plot_kind
    metric = {r["target"]: r["metric"] for r in rows if r["stage"] == "finetune"}
    targets = [t for t in study.targets if any(k[0] == t for k in data)]
    fig, axes = plt.subplots(1, max(1, len(targets)), figsize=(4.8 * max(1, len(targets)), 3.8), squeeze=False)
    fractions = sorted({k[1] for k in data})
    for ax, target in zip(axes[0], targets):
        if kind == "fraction":
            for i, arm in enumerate(study.arms):
                dodge = 1 + 0.025 * (i - (len(study.arms) - 1) / 2)  # arms side by side on the log axis
                points = [(f * dodge, *mean_std(data[target, f, arm].values())) for f in fractions
                          if (target, f, arm) in data]
                if points:
                    x, y, e = zip(*points)
                    ax.errorbar(x, y, yerr=np.nan_to_num(e), marker="o", capsize=3, label=arm)
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
            ax.set_xlabel("fraction of the target's training data")
        elif kind == "tasks":
            for f in fractions:
                points = sorted((study.arms[a]["x"], *mean_std(data[target, f, a].values()), len(data[target, f, a]))
                                for a in study.arms if study.arms[a].get("x") is not None and (target, f, a) in data)
                if points:
                    x, y, e, n = zip(*points)
                    ax.errorbar(x, y, yerr=np.nan_to_num(e), marker="o", capsize=3, label=f"{f:.0%} of the data")
                    for xi, yi, ni in zip(x, y, n):  # points may average different numbers of seeds
                        ax.annotate(f"n={ni}", (xi, yi), textcoords="offset points", xytext=(0, -12), fontsize=6,
                                    ha="center")
            ax.set_xlabel("pre-finetuning tasks (0: none; n: seeds averaged)")
        else:
            arms = [a for a in study.arms if any((target, f, a) in data for f in fractions)]
            width = 0.8 / max(1, len(arms))
            for i, arm in enumerate(arms):
                xs = [j + (i - (len(arms) - 1) / 2) * width for j, f in enumerate(fractions) if (target, f, arm) in data]
                stats = [mean_std(data[target, f, arm].values()) for f in fractions if (target, f, arm) in data]
                ax.bar(xs, [m for m, _ in stats], width, yerr=[0 if math.isnan(s) else s for _, s in stats],
                       capsize=3, label=arm, alpha=0.8)
                for x, f in zip(xs, [f for f in fractions if (target, f, arm) in data]):
                    seeds = list(data[target, f, arm].values())
                    ax.scatter([x] * len(seeds), seeds, color="black", s=8, zorder=3)
            ax.set_xticks(range(len(fractions)), [f"{f:.0%} of the data" for f in fractions])
            values = [v for k, d in data.items() if k[0] == target for v in d.values()]
            low, high = min(values), max(values)
            ax.set_ylim(max(0.0, low - 0.15 * (high - low + 1e-3)), high + 0.15 * (high - low + 1e-3))
        ax.set_title(target)
        ax.set_ylabel(metric.get(target, "metric"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{study.name}: mean ± std over seeds ({study.metric} validation)", fontsize=10)
    fig.tight_layout()
    return fig


def curve_figure(study: Study, curves: list[dict]):
    """The fine-tuning curves: one panel per (fraction, target), the target's validation metric against updates; per
    arm each run thin and the mean over its runs thick (the runs of an arm validate at the same steps)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    targets = [t for t in study.targets if any(c["target"] == t for c in curves)]
    fractions = sorted({c["fraction"] for c in curves})
    arms = [a for a in study.arms if any(c["arm"] == a for c in curves)]
    fig, axes = plt.subplots(len(fractions), len(targets), figsize=(4.8 * len(targets), 3.6 * len(fractions)),
                             squeeze=False)
    for row_axes, fraction in zip(axes, fractions):
        for ax, target in zip(row_axes, targets):
            for i, arm in enumerate(arms):
                color = plt.get_cmap("tab10")(i % 10)
                runs: dict[str, list[tuple[int, float]]] = defaultdict(list)
                for c in curves:
                    if (c["target"], c["fraction"], c["arm"]) == (target, fraction, arm):
                        runs[c["run_id"]].append((c["step"], c["value"]))
                if not runs:
                    continue
                for points in runs.values():
                    ax.plot(*zip(*sorted(points)), color=color, alpha=0.25, linewidth=0.8)
                by_step: dict[int, list[float]] = defaultdict(list)
                for points in runs.values():
                    for step, value in points:
                        by_step[step].append(value)
                xs = sorted(by_step)
                ax.plot(xs, [np.mean(by_step[x]) for x in xs], color=color, linewidth=2,
                        label=f"{arm} ({len(runs)} run{'s' if len(runs) > 1 else ''})")
            ax.set_title(f"{target}, {fraction:.0%} of its training data", fontsize=9)
            ax.set_xlabel("fine-tuning updates")
            ax.set_ylabel(next((c["metric"] for c in curves if c["target"] == target), "validation metric"))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"{study.name}: validation during fine-tuning (thin: one run; thick: mean)", fontsize=10)
    fig.tight_layout()
    return fig


def write(study: Study, rows: list[dict], sweep: Path, command: str, planned: list[str] | None = None) -> Path:
    """report.md, <plot>.png, curves.png (with curves.csv, the validation curves it draws), upstream.csv (each
    pre-finetuning run's last validation of every task of its mix) and TensorBoard (figures, per-arm means, the
    report as text) under the sweep folder."""
    import matplotlib.pyplot as plt
    judged = study.judged_by()  # rows recorded with another metric than the study now reads are left out

    def is_stale(row: dict) -> bool:
        return row["stage"] == "finetune" and row["metric"] != judged.get(row["target"], row["metric"])
    stale, rows = [r for r in rows if is_stale(r)], [r for r in rows if not is_stale(r)]
    sweep.mkdir(parents=True, exist_ok=True)
    figures, tb_figures = [], {}
    if groups(rows):
        fig = figure(study, rows)
        path = sweep / f"{study.plot_kind}.png"
        fig.savefig(path, dpi=120)
        figures.append(path)
        tb_figures[study.plot_kind] = fig
    curves = collect_curves(rows, sweep / "curves.csv")
    if curves:
        fig = curve_figure(study, curves)
        path = sweep / "curves.png"
        fig.savefig(path, dpi=110)
        figures.append(path)
        tb_figures["curves"] = fig
    upstream_tasks = collect_upstream(rows, sweep / "upstream.csv")
    text = markdown(study, rows, figures, command, planned, upstream_tasks, stale, judged)
    (sweep / "report.md").write_text(text)
    board = sweep / "tensorboard"
    shutil.rmtree(board, ignore_errors=True)  # rewritten whole: a resumed sweep does not duplicate points
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(str(board)) as writer:
        for name, fig in tb_figures.items():
            writer.add_figure(f"{study.name}/{name}", fig)
        for (target, fraction, arm), values in groups(rows).items():
            mean, std = mean_std(values.values())
            x = study.arms.get(arm, {}).get("x")
            step = int(x) if study.plot_kind == "tasks" and x is not None else round(fraction * 100)
            writer.add_scalar(f"{study.name}/{target}/{arm}/mean", mean, step)
            if not math.isnan(std):
                writer.add_scalar(f"{study.name}/{target}/{arm}/std", std, step)
        writer.add_text(f"{study.name}/report", text)
    plt.close("all")
    return sweep / "report.md"
