"""The sweep's CSV (one row per run, rewritten atomically after each run) and the metric a run wrote: read from its
TensorBoard scalars (`val/<task>/<metric>`, `val/score`), not from its console output."""

from __future__ import annotations

import csv
import os
from pathlib import Path

FIELDS = ["study", "run_id", "stage", "arm", "x", "target", "fraction", "seed", "upstream_seed", "metric", "value",
          "step", "wall_s", "status", "log_dir", "finished", "same_as"]


class Results:
    """Rows by run id; a run is done when its row has status `ok`. Failed or skipped runs keep a row (with the
    reason in `status`) until a later sweep runs them again and replaces it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, str]] = {}
        if path.exists():
            with path.open(newline="") as f:
                self.rows = {row["run_id"]: row for row in csv.DictReader(f)}

    def done(self, run_id: str, metric: str | None = None) -> bool:
        """Finished ok (and, given a metric, recorded with that metric)."""
        row = self.rows.get(run_id, {})
        return row.get("status") == "ok" and (metric is None or row.get("metric") == metric)

    def record(self, row: dict) -> None:
        self.rows[row["run_id"]] = {k: "" if row.get(k) is None else str(row[k]) for k in FIELDS}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".csv.partial")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(self.rows.values())
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)  # a kill during the write leaves the previous CSV


def parse(row: dict[str, str]) -> dict:
    """A CSV row with numbers as numbers (empty cells as None)."""
    out: dict = dict(row)
    for key, kind in (("x", float), ("fraction", float), ("seed", int), ("upstream_seed", int), ("value", float),
                      ("step", int), ("wall_s", float)):
        out[key] = kind(row[key]) if row.get(key) not in (None, "") else None
    return out


def log_dir_of(run_dir: Path) -> Path | None:
    """The Lightning log folder inside a run's folder (the one holding its TensorBoard events)."""
    events = sorted(run_dir.rglob("events.out.tfevents.*"))
    return events[-1].parent if events else None


def scalars(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return events


def read_curve(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every logged point of a scalar, in logging order; empty if never logged."""
    events = scalars(log_dir)
    if tag not in events.Tags().get("scalars", []):
        return []
    return [(int(e.step), float(e.value)) for e in events.Scalars(tag)]


def latest_step(log_dir: Path) -> int | None:
    """The highest step of any scalar a run has logged so far (TensorBoard's step); None before its first log."""
    events = scalars(log_dir)
    steps = [int(e.step) for tag in events.Tags().get("scalars", []) for e in events.Scalars(tag)]
    return max(steps, default=None)


def read_metric(log_dir: Path, tag: str, mode: str = "final") -> tuple[float, int] | None:
    """(value, step) of a logged scalar: its last value (`final`) or its maximum (`best`); None if never logged."""
    points = read_curve(log_dir, tag)
    if not points:
        return None
    step, value = max(points, key=lambda p: p[1]) if mode == "best" else points[-1]
    return value, step


CURVE_FIELDS = ["run_id", "arm", "target", "fraction", "seed", "upstream_seed", "metric", "step", "value"]
UPSTREAM_FIELDS = ["run_id", "arm", "seed", "task", "metric", "value"]


def collect(rows: list[dict], stage: str, path: Path, fields: list[str], read) -> list[dict]:
    """The points `read(row, log_dir)` gives for each finished run of `stage`, from its TensorBoard folder, or, where
    that folder is gone (a CSV copied elsewhere, e.g. committed beside a report), the run's points kept in the CSV at
    `path` (or those of the run it repeats); the CSV is then rewritten with all of them, so what is drawn from it can
    be redrawn from it alone."""
    kept: dict[str, list[dict]] = {}
    if path.exists():
        with path.open(newline="") as f:
            for point in csv.DictReader(f):
                kept.setdefault(point["run_id"], []).append(point)
    out = []
    for row in rows:
        if row["stage"] != stage or row["status"] != "ok":
            continue
        log_dir = Path(row["log_dir"]) if row.get("log_dir") else None
        out += ((read(row, log_dir) if log_dir and log_dir.is_dir() else []) or kept.get(row["run_id"], [])
                or [{**point, "run_id": row["run_id"], "arm": row["arm"]}  # a repeat (`same_as`): its original's
                    for point in kept.get(row.get("same_as"), [])])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows({k: "" if point.get(k) is None else point[k] for k in fields} for point in out)
    return out


def collect_curves(rows: list[dict], path: Path) -> list[dict]:
    """The validation curve (the target's primary metric at every validation) of each fine-tuning run that finished
    (`collect`: kept in the curves CSV at `path`)."""
    def read(row: dict, log_dir: Path) -> list[dict]:
        return [{**{k: row.get(k) for k in CURVE_FIELDS[:-2]}, "step": step, "value": value}
                for step, value in read_curve(log_dir, f"val/{row['target']}/{row['metric']}")]
    return [{**c, "fraction": float(c["fraction"]), "seed": int(c["seed"]), "step": int(c["step"]),
             "value": float(c["value"])} for c in collect(rows, "finetune", path, CURVE_FIELDS, read)]


def collect_upstream(rows: list[dict], path: Path) -> list[dict]:
    """Each finished pre-finetuning run's last validation of every task of its mix (`val/<task>/<metric>`;
    `collect`: kept in the CSV at `path`)."""
    def read(row: dict, log_dir: Path) -> list[dict]:
        events = scalars(log_dir)
        return [{"run_id": row["run_id"], "arm": row["arm"], "seed": row["seed"], "task": task, "metric": metric,
                 "value": float(events.Scalars(tag)[-1].value)}
                for tag in events.Tags().get("scalars", []) if tag.count("/") == 2
                for kind, task, metric in [tag.split("/")] if kind == "val"]
    return [{**u, "seed": int(u["seed"]), "value": float(u["value"])}
            for u in collect(rows, "upstream", path, UPSTREAM_FIELDS, read)]
