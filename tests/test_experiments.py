"""The experiment runner (experiments/): every shipped study plans; the report's numbers on a synthetic CSV; plots
and TensorBoard written; an interrupted sweep resumes without redoing finished runs; a tiny real sweep end to end
(pre-finetune -> export -> fine-tune a few-shot subset from it) on the demo data."""

from __future__ import annotations

import csv
import dataclasses
import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from datamodules.catalogue import Catalogue
from experiments import run as runner
from experiments.plan import Run, Study, data_args, plan
from experiments.report import compare, markdown
from experiments.results import Results, parse
from tests.conftest import ROOT
from tests.test_cli import TINY_MODEL

STUDIES = sorted((ROOT / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("config", STUDIES, ids=lambda p: p.name)
def test_every_shipped_study_plans_with_held_out_targets(config, tmp_path):
    study = Study.load(config, output=str(tmp_path))
    runs = plan(study, data_args(study))
    tasks = Catalogue.load().tasks
    assert all(t in tasks for t in study.targets)
    assert all(t in tasks for u in study.upstream.values() for t in u["tasks"])
    assert len({r.run_id for r in runs}) == len(runs)
    assert set(runner.target_metrics(study)) == set(study.targets)  # each target's metric is one of its metrics
    finetune = [r for r in runs if r.stage == "finetune"]
    upstream_ids = {r.run_id for r in runs if r.stage == "upstream"}
    assert {r.seed for r in finetune} == set(study.seeds) and all(r.upstream in upstream_ids for r in finetune
                                                                  if r.upstream)
    if study.parts:  # every part selects runs (a typo is an error), and together they are the whole study
        parted = {r.run_id for patterns in study.parts.values() for r in runner.select(runs, patterns)}
        assert parted == {r.run_id for r in runs}


def test_nested_task_mixes_grow_as_supersets():
    study = Study(name="s", targets=["t"], nested_tasks={"pool": list("abcdef"), "sizes": [4, 1, 2]})
    study.expand_nested_tasks()
    mixes = [study.upstream[f"tasks{k}"]["tasks"] for k in (1, 2, 4)]
    assert mixes == [["a"], ["a", "b"], list("abcd")]
    assert study.arms["tasks4"] == {"init_from": "tasks4", "x": 4} and study.arms["baseline"]["x"] == 0
    with pytest.raises(ValueError, match="held out"):
        Study(name="s", targets=["a"], upstream={"u": {"tasks": ["a", "b"]}}).check("here")


def synthetic_rows() -> list[dict]:
    values = {"baseline": [0.70, 0.72, 0.74], "muppet": [0.75, 0.78, 0.80], "control": [0.71, 0.71, 0.75]}
    rows = [{"study": "s", "run_id": f"ft-{arm}-t-f{f}-s{seed}", "stage": "finetune", "arm": arm, "x": None,
             "target": "t", "fraction": f, "seed": seed, "metric": "accuracy", "value": v - (0.1 if f < 1 else 0),
             "step": 10, "wall_s": 60.0, "status": "ok", "log_dir": "", "finished": ""}
            for arm, vs in values.items() for seed, v in enumerate(vs) for f in (0.1, 1.0)]
    rows.append({**rows[0], "run_id": "ft-broken", "arm": "muppet", "seed": 9, "status": "failed (exit 1)",
                 "value": None})
    return rows


def test_report_numbers_on_a_synthetic_csv(tmp_path):
    results = Results(tmp_path / "results.csv")
    for row in synthetic_rows():
        results.record(row)
    rows = [parse(r) for r in Results(tmp_path / "results.csv").rows.values()]  # through the CSV and back
    c = compare({0: 0.70, 1: 0.72, 2: 0.74}, {0: 0.75, 1: 0.78, 2: 0.80})
    assert c["n"] == 3 and c["wins"] == 3 and c["exceeds"] is True
    assert c["diff_mean"] == pytest.approx(0.17 / 3) and c["base_std"] == pytest.approx(0.02)
    assert c["diff_std"] == pytest.approx(0.005773502, abs=1e-6) and c["arm_std"] == pytest.approx(0.025166, abs=1e-5)
    weak = compare({0: 0.70, 1: 0.72, 2: 0.74}, {0: 0.71, 1: 0.71, 2: 0.75})
    assert weak["wins"] == 2 and weak["exceeds"] is False and weak["diff_mean"] == pytest.approx(0.01 / 3)
    single = compare({0: 0.5}, {0: 0.6})
    assert single["exceeds"] is None and single["diff_mean"] == pytest.approx(0.1)
    study = Study(name="s", targets=["t"], fractions=[0.1, 1.0], seeds=[0, 1, 2],
                  arms={"baseline": {}, "muppet": {}, "control": {}})
    text = markdown(study, rows, [], "cmd")
    assert "| t | accuracy | 1 | muppet | 3 | 0.777 | 0.025 | 0.750, 0.780, 0.800 |" in text
    assert "| t | 1 | muppet | 3 | 0.720 ± 0.020 | 0.777 ± 0.025 | +0.057 ± 0.006 | 3/3 | **yes** |" in text
    assert "| t | 1 | control | 3 | 0.720 ± 0.020 | 0.723 ± 0.023 | +0.003 ± 0.012 | 2/3 | no |" in text
    assert "| t | 0.1 | muppet | 3 | 0.620 ± 0.020 | 0.677 ± 0.025 |" in text
    assert "18 ok, 1 not ok (ft-broken: failed (exit 1))" in text
    assert "Partial report" not in text  # no plan given
    planned = [r["run_id"] for r in rows] + ["ft-muppet-t-f1-s3"]
    partial = markdown(study, rows, [], "cmd", planned=planned)
    assert "**Partial report**: 18 of the study's 20 runs have finished" in partial
    assert "Partial report" not in markdown(study, rows, [], "cmd", planned=planned[:18])


@pytest.mark.parametrize("kind", ["fraction", "bars", "tasks"])
def test_plots_report_and_tensorboard_are_written(tmp_path, kind):
    rows = [parse({k: "" if v is None else str(v) for k, v in r.items()}) for r in synthetic_rows()]
    arms = {"baseline": {"x": 0}, "muppet": {"x": 12}, "control": {"x": 1}}
    study = Study(name="s", targets=["t"], fractions=[0.1, 1.0], arms=arms, plot=kind)
    report_path = runner.report.write(study, rows, tmp_path, "cmd")
    png = tmp_path / f"{kind}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"![{kind}]({kind}.png)" in report_path.read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert events.Tags()["images"] == [f"s/{kind}"] and "s/t/muppet/mean" in events.Tags()["scalars"]


def fake_study(tmp_path: Path) -> Study:
    return Study(name="fake", output=str(tmp_path), targets=["demo_sentiment", "demo_choice"], seeds=[0, 1],
                 upstream={"mix": {"tasks": ["demo_rating", "demo_span"]}},
                 arms={"baseline": {}, "muppet": {"init_from": "mix"}})


def fake_jobs(calls: list[str], crash_at: int | None = None, fail: frozenset = frozenset()):
    """Stands in for train.py subprocesses: records the starts, makes an export for upstream runs, can crash;
    a job ends at its second poll, so with several jobs runs overlap."""
    running: list[str] = []

    class FakeJob:
        overlap = 0

        def __init__(self, run: Run, args, run_dir: Path, tag: str, mode: str, threads: int | None) -> None:
            if crash_at is not None and len(calls) == crash_at:
                raise KeyboardInterrupt
            if run.upstream:  # started only once its upstream's export exists
                assert args[-1] == f"--model.init_from={run_dir.parent / run.upstream}/export"
            calls.append(run.run_id)
            running.append(run.run_id)
            FakeJob.overlap = max(FakeJob.overlap, len(running))
            self.run, self.run_dir, self.tag, self.polls, self.start = run, run_dir, tag, 0, time.time()
            (run_dir / "export").mkdir(parents=True, exist_ok=True)

        def done(self) -> bool:
            self.polls += 1
            return self.polls > 1

        def stop(self) -> None:
            running.remove(self.run.run_id)

        def row(self, log=print) -> dict:
            running.remove(self.run.run_id)
            run = self.run
            return {"run_id": run.run_id, "stage": run.stage, "arm": run.arm, "x": run.x, "target": run.target,
                    "fraction": run.fraction, "seed": run.seed, "metric": self.tag.split("/")[-1],
                    "value": 0.5 + run.seed, "step": 1, "wall_s": 1.0,
                    "status": "failed (exit 1)" if run.run_id in fail else "ok", "log_dir": str(self.run_dir),
                    "finished": "now"}
    return FakeJob


@pytest.fixture
def fake_sweep(tmp_path, monkeypatch) -> tuple[Study, list[str]]:
    """The fake study with fake jobs (`fake_jobs`): the study and the run ids its sweeps start, in order."""
    calls: list[str] = []
    monkeypatch.setattr(runner, "Job", fake_jobs(calls))
    return fake_study(tmp_path), calls


@pytest.mark.slow  # sweeps of runner processes
def test_an_interrupted_sweep_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    study = fake_study(tmp_path)
    every = [r.run_id for r in plan(study, [])]
    assert len(every) == 9 and every[0] == "up-mix"
    calls: list[str] = []
    monkeypatch.setattr(runner, "Job", fake_jobs(calls, crash_at=4))
    with pytest.raises(KeyboardInterrupt):  # killed during the 5th run
        runner.sweep(study, log=lambda *_: None)
    assert calls == every[:4]
    monkeypatch.setattr(runner, "Job", fake_jobs(calls))
    runner.sweep(study, max_runs=2, log=lambda *_: None)  # stop after 2 more
    assert calls == every[:6]
    lines = []
    runner.sweep(study, log=lines.append)
    assert calls == every and "9 runs, 6 done earlier, 3 to do" in lines[0]
    with (tmp_path / "fake" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run_id"] for r in rows) == sorted(every) and {r["status"] for r in rows} == {"ok"}
    runner.sweep(study, log=lambda *_: None)  # nothing left to do
    assert calls == every


def test_fine_tuning_curves_are_read_from_tensorboard_drawn_and_redrawn_from_their_csv_alone(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    rows = []
    for arm, seed, values in [("baseline", 0, [0.5, 0.7, 0.6]), ("muppet", 0, [0.6, 0.8, 0.8]),
                              ("muppet", 1, [0.7, 0.7, 0.9])]:
        log_dir = tmp_path / "runs" / f"{arm}{seed}"
        with SummaryWriter(str(log_dir)) as writer:
            for step, value in zip((50, 100, 150), values):
                writer.add_scalar("val/t/accuracy", value, step)
        rows.append({"run_id": f"ft-{arm}-t-f1-s{seed}", "stage": "finetune", "arm": arm, "x": None, "target": "t",
                     "fraction": 1.0, "seed": seed, "upstream_seed": None, "metric": "accuracy",
                     "value": max(values), "step": 50 * (1 + values.index(max(values))), "wall_s": 1.0,
                     "status": "ok", "log_dir": str(log_dir), "finished": ""})
    study = Study(name="s", targets=["t"], arms={"baseline": {}, "muppet": {}}, metric="best")
    text = runner.report.write(study, rows, tmp_path / "sweep", "cmd").read_text()
    assert "![curves](curves.png)" in text and (tmp_path / "sweep" / "curves.png").exists()
    assert "| t | accuracy | 1 | muppet | 2 | 0.850 | 0.071 | 0.800, 0.900 | 125 |" in text  # best at 100 and 150
    with (tmp_path / "sweep" / "curves.csv").open() as f:
        first = list(csv.DictReader(f))
    assert [(c["run_id"], c["step"]) for c in first[:3]] == [("ft-baseline-t-f1-s0", s) for s in ("50", "100", "150")]
    assert [float(c["value"]) for c in first[:3]] == pytest.approx([0.5, 0.7, 0.6])  # float32 in TensorBoard
    assert len(first) == 9 and {c["metric"] for c in first} == {"accuracy"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "sweep" / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["s/bars", "s/curves"]
    # the CSVs copied elsewhere (as committed beside a report), the runs' folders gone: the same curves
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "curves.csv").write_text((tmp_path / "sweep" / "curves.csv").read_text())
    gone = [{**r, "log_dir": str(tmp_path / "deleted" / r["run_id"])} for r in rows]
    runner.report.write(study, gone, copy, "cmd")
    with (copy / "curves.csv").open() as f:
        assert list(csv.DictReader(f)) == first
    assert (copy / "curves.png").exists()


def test_each_upstream_tasks_last_validation_is_tabled_per_arm_and_kept_in_a_csv(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    rows = []
    for arm, seed, values in [("all", 0, {"sst2/accuracy": 0.80, "conll2003/token_accuracy": 0.9, "trec/accuracy": 0.6,
                                          "conll2003/entity_f1": 0.50, "hellaswag/accuracy": 0.30}),
                              ("all", 1, {"sst2/accuracy": 0.84, "conll2003/token_accuracy": 0.9, "trec/accuracy": 0.64,
                                          "conll2003/entity_f1": 0.60, "hellaswag/accuracy": 0.32}),
                              ("qnli_only", 0, {"qnli/accuracy": 0.70})]:
        log_dir = tmp_path / "runs" / f"{arm}{seed}"
        with SummaryWriter(str(log_dir)) as writer:
            for tag, value in values.items():
                writer.add_scalar(f"val/{tag}", value - 0.2, 100)  # only the last validation counts
                writer.add_scalar(f"val/{tag}", value, 200)
            writer.add_scalar("val/score", 0.5, 200)
        rows.append({"run_id": f"up-{arm}-u{seed}", "stage": "upstream", "arm": arm, "x": None, "target": "2 tasks",
                     "fraction": None, "seed": seed, "upstream_seed": None, "metric": "score", "value": 0.5,
                     "step": 200, "wall_s": 1.0, "status": "ok", "log_dir": str(log_dir), "finished": ""})
    study = Study(name="s", targets=["mrpc"], arms={"baseline": {}})
    text = runner.report.write(study, rows, tmp_path / "sweep", "cmd").read_text()
    assert "| task | metric | all | qnli_only |" in text
    assert "| sst2 | accuracy | 0.820 ± 0.028 |  |" in text
    assert "| conll2003 | entity_f1 | 0.550 ± 0.071 |  |" in text  # the catalogue's primary metric
    assert "| hellaswag | accuracy | 0.310 ± 0.014 |  |" in text and "| qnli | accuracy |  | 0.700 |" in text
    # per family, the mean of its tasks' primary metrics per seed (sst2 and trec: 0.70 and 0.74), then over seeds
    assert "| mean: classification (3 tasks) | primary | 0.720 ± 0.028 (0.700, 0.740) | 0.700 |" in text
    assert "| mean: token_classification (1 task) | primary | 0.550 ± 0.071 (0.500, 0.600) |  |" in text
    # from the CSV alone, the runs' folders gone
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "upstream.csv").write_text((tmp_path / "sweep" / "upstream.csv").read_text())
    gone = [{**r, "log_dir": str(tmp_path / "deleted")} for r in rows]
    assert "| sst2 | accuracy | 0.820 ± 0.028 |  |" in runner.report.write(study, gone, copy, "cmd").read_text()


def test_only_selects_runs_by_pattern_with_the_upstream_runs_they_start_from(tmp_path):
    study = fake_study(tmp_path)
    runs = plan(study, [])
    ids = [r.run_id for r in runner.select(runs, ["ft-muppet-demo_choice-*"])]
    assert ids == ["up-mix", "ft-muppet-demo_choice-f1-s0", "ft-muppet-demo_choice-f1-s1"]
    ids = [r.run_id for r in runner.select(runs, ["ft-baseline-*-s1", "ft-muppet-demo_sentiment-f1-s0"])]
    assert ids == ["up-mix", "ft-muppet-demo_sentiment-f1-s0", "ft-baseline-demo_sentiment-f1-s1",
                   "ft-baseline-demo_choice-f1-s1"]
    assert runner.select(runs, None) == runs
    with pytest.raises(ValueError, match=r"no run id matches \['ft-typo\*'\]"):
        runner.select(runs, ["ft-baseline-*", "ft-typo*"])


def test_a_typo_in_only_is_a_command_line_error_before_anything_runs(tmp_path, capsys):
    config = tmp_path / "fake.yaml"
    study = fake_study(tmp_path)
    config.write_text(yaml.safe_dump({"name": study.name, "output": study.output, "targets": study.targets,
                                      "seeds": study.seeds, "upstream": study.upstream, "arms": study.arms}))
    with pytest.raises(SystemExit) as exit_info:
        runner.main(["--config", str(config), "--only", "ft-typo*"])
    assert exit_info.value.code == 2 and "--only: no run id matches ['ft-typo*']" in capsys.readouterr().err
    assert not (tmp_path / "fake").exists()


def test_a_named_part_runs_its_patterns_and_the_dry_run_says_what_each_part_has_left(tmp_path, monkeypatch, capsys):
    config = tmp_path / "fake.yaml"
    study = fake_study(tmp_path)
    parts = {"choice": ["ft-*-demo_choice-*"], "sentiment": ["ft-*-demo_sentiment-*"]}
    config.write_text(yaml.safe_dump({"name": study.name, "output": study.output, "targets": study.targets,
                                      "seeds": study.seeds, "upstream": study.upstream, "arms": study.arms,
                                      "parts": parts}))
    with pytest.raises(SystemExit) as exit_info:
        runner.main(["--config", str(config), "--part", "chioce"])
    assert exit_info.value.code == 2 and "--part: ['chioce'] not among the parts" in capsys.readouterr().err
    assert not (tmp_path / "fake").exists()
    calls: list[str] = []
    monkeypatch.setattr(runner, "Job", fake_jobs(calls))
    assert runner.main(["--config", str(config), "--part", "choice", "--jobs", "2"]) == 0
    assert sorted(calls) == ["ft-baseline-demo_choice-f1-s0", "ft-baseline-demo_choice-f1-s1",
                             "ft-muppet-demo_choice-f1-s0", "ft-muppet-demo_choice-f1-s1", "up-mix"]
    capsys.readouterr()
    runner.main(["--config", str(config), "--dry-run"])
    out = capsys.readouterr().out
    assert "part choice: 5 runs, 5 done, about 0.0 min left at --jobs 1 (ft-*-demo_choice-*)" in out
    assert "part sentiment: 5 runs, 1 done, about 0.1 min left at --jobs 1" in out  # 4 runs of 1 s each
    assert "in no part" not in out
    config.write_text(config.read_text().replace("ft-*-demo_sentiment-*", "ft-*-demo_sentimnet-*"))
    with pytest.raises(SystemExit) as exit_info:  # a typo in any part, even one not asked for, before anything runs
        runner.main(["--config", str(config), "--part", "choice"])
    assert exit_info.value.code == 2
    assert "part 'sentiment': no run id matches ['ft-*-demo_sentimnet-*']" in capsys.readouterr().err


def test_a_target_judged_by_another_metric_runs_again_and_a_wrong_metric_is_a_command_line_error(
        tmp_path, monkeypatch, capsys):
    config = tmp_path / "fake.yaml"
    study = fake_study(tmp_path)
    fields = {"name": study.name, "output": study.output, "targets": study.targets, "seeds": study.seeds,
              "upstream": study.upstream, "arms": study.arms}
    for wrong, message in (({"demo_sentiment": "rouge1"}, "'rouge1' is not a metric of target 'demo_sentiment'"),
                           ({"demo_sentimnet": "f1"}, "target_metrics names ['demo_sentimnet'], which are not")):
        config.write_text(yaml.safe_dump({**fields, "target_metrics": wrong}))
        with pytest.raises(SystemExit) as exit_info:
            runner.main(["--config", str(config)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "fake").exists()
    calls: list[str] = []
    monkeypatch.setattr(runner, "Job", fake_jobs(calls))
    config.write_text(yaml.safe_dump(fields))
    only = ["--only", "ft-baseline-demo_sentiment-*"]
    runner.main(["--config", str(config), *only])
    config.write_text(yaml.safe_dump({**fields, "target_metrics": {"demo_sentiment": "f1"}}))
    report = runner.write_report(Study.load(config), tmp_path / "fake", "cmd").read_text()
    assert ("**demo_sentiment** is judged by f1: 2 of its runs, recorded with accuracy, are left out until the runner "
            "runs them again") in report
    assert "| demo_sentiment |" not in report  # no table row mixes the two metrics
    runner.main(["--config", str(config), *only])  # judged by f1 now: both run again
    out = capsys.readouterr().out
    assert calls == ["ft-baseline-demo_sentiment-f1-s0", "ft-baseline-demo_sentiment-f1-s1"] * 2
    assert "ft-baseline-demo_sentiment-f1-s0: finished earlier, judged by accuracy; the study now reads f1" in out
    rows = Results(tmp_path / "fake" / "results.csv").rows
    assert {rows[r]["metric"] for r in calls} == {"f1"}
    runner.main(["--config", str(config), *only])  # done with f1: nothing to redo
    assert len(calls) == 4


@pytest.mark.slow  # sweeps of runner processes
def test_an_upstream_run_whose_export_is_gone_is_redone_when_a_run_needs_it_and_the_log_says_why(tmp_path, fake_sweep):
    study, calls = fake_sweep
    runner.sweep(study, jobs=2, only=["ft-muppet-demo_choice-f1-s0"], log=lambda *_: None)
    assert calls == ["up-mix", "ft-muppet-demo_choice-f1-s0"]
    (tmp_path / "fake" / "runs" / "up-mix" / "export").rmdir()  # e.g. a new checkout with the CSV copied over
    calls.clear()
    lines: list[str] = []
    runner.sweep(study, jobs=2, only=["ft-muppet-demo_choice-f1-s1"], log=lines.append)
    assert calls == ["up-mix", "ft-muppet-demo_choice-f1-s1"]
    assert any(line.startswith("up-mix: finished earlier, but its export") and "is gone" in line for line in lines)
    (tmp_path / "fake" / "runs" / "up-mix" / "export").rmdir()  # gone again, and only finished runs start from it
    calls.clear()
    lines.clear()
    runner.sweep(study, jobs=2, only=["ft-muppet-demo_choice-*"], log=lines.append)
    assert calls == [] and "3 runs selected by --only, 3 done earlier, 0 to do" in lines[0]
    assert not any("is gone" in line for line in lines)
    in_parts = dataclasses.replace(study, parts={"choice": ["ft-muppet-demo_choice-*"], "sentiment": ["*sentiment*"]})
    results = Results(tmp_path / "fake" / "results.csv")
    lines = runner.parts_done(in_parts, plan(study, []), results, runner.target_metrics(study))
    assert lines[0].startswith("part choice: 3 runs, 3 done, about 0.0 min left")
    assert lines[1].startswith("part sentiment: 5 runs, 0 done")  # up-mix counted: its sentiment runs need it again


@pytest.mark.slow  # sweeps of runner processes
def test_a_study_in_parts_runs_only_the_selected_runs_and_resumes_with_the_rest(tmp_path, fake_sweep):
    study, calls = fake_sweep
    runner.sweep(study, jobs=2, only=["ft-*-s0"], log=lambda *_: None)
    assert sorted(calls) == sorted(["up-mix", "ft-baseline-demo_sentiment-f1-s0", "ft-muppet-demo_sentiment-f1-s0",
                                    "ft-baseline-demo_choice-f1-s0", "ft-muppet-demo_choice-f1-s0"])
    report = runner.write_report(study, tmp_path / "fake", "cmd").read_text()
    assert "**Partial report**: 5 of the study's 9 runs have finished" in report
    calls.clear()
    lines: list[str] = []
    runner.sweep(study, log=lines.append)  # the rest; up-mix is not run again
    assert "9 runs, 5 done earlier, 4 to do" in lines[0] and "up-mix" not in calls and len(calls) == 4
    assert "Partial report" not in runner.write_report(study, tmp_path / "fake", "cmd").read_text()


@pytest.mark.slow  # sweeps of runner processes
def test_parallel_jobs_overlap_and_wait_for_their_upstream(tmp_path, monkeypatch):
    study = fake_study(tmp_path)
    calls: list[str] = []
    job = fake_jobs(calls)
    monkeypatch.setattr(runner, "Job", job)
    runner.sweep(study, jobs=2, log=lambda *_: None)
    assert sorted(calls) == sorted(r.run_id for r in plan(study, [])) and job.overlap == 2
    assert calls[:2] == ["up-mix", "ft-baseline-demo_sentiment-f1-s0"]  # the muppet arm waits for up-mix


@pytest.mark.slow  # sweeps of runner processes
def test_a_failed_upstream_skips_its_fine_tuning_runs_until_a_rerun_succeeds(tmp_path, monkeypatch):
    study = fake_study(tmp_path)
    calls: list[str] = []
    monkeypatch.setattr(runner, "Job", fake_jobs(calls, fail={"up-mix", "ft-baseline-demo_choice-f1-s1"}))
    runner.sweep(study, log=lambda *_: None)
    rows = Results(tmp_path / "fake" / "results.csv").rows
    assert all(rows[r]["status"].startswith("skipped") for r in rows if r.startswith("ft-muppet"))
    assert "ft-muppet-demo_sentiment-f1-s0" not in calls and len(calls) == 5
    calls.clear()
    monkeypatch.setattr(runner, "Job", fake_jobs(calls))
    runner.sweep(study, log=lambda *_: None)
    assert calls == ["up-mix", "ft-muppet-demo_sentiment-f1-s0", "ft-muppet-demo_choice-f1-s0",
                     "ft-muppet-demo_sentiment-f1-s1", "ft-baseline-demo_choice-f1-s1", "ft-muppet-demo_choice-f1-s1"]


@pytest.mark.slow
def test_tiny_sweep_end_to_end_pre_finetunes_exports_and_fine_tunes_a_subset_from_it(tmp_path):
    """Two real train.py runs, stopped after the first and resumed: pre-finetuning on two demo tasks (exported),
    then fine-tuning on 25% of a held-out demo task from that export; CSV, report, plot and TensorBoard."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "output": str(tmp_path / "out"), "metric": "best",
        "train_args": ["--config", "configs/quickstart.yaml", *TINY_MODEL, "--trainer.max_steps=6",
                       "--trainer.val_check_interval=3", "--trainer.num_sanity_val_steps=0", "--data.batch_size=16",
                       "--data.max_tokens=null", "--data.max_eval_examples=32", f"--data.cache_dir={tmp_path}/cache",
                       "--trainer.enable_progress_bar=false"],
        "upstream": {"mix": {"tasks": ["demo_sentiment", "demo_choice"]}},
        "targets": ["demo_topic_pair"], "fractions": [0.25], "seeds": [3], "baseline": None,
        "arms": {"muppet": {"init_from": "mix"}}}))
    assert runner.main(["--config", str(config), "--max-runs", "1"]) == 0
    sweep = tmp_path / "out" / "tiny"
    first = Results(sweep / "results.csv").rows
    assert list(first) == ["up-mix"] and first["up-mix"]["status"] == "ok", first
    assert runner.main(["--config", str(config)]) == 0
    rows = Results(sweep / "results.csv").rows
    assert rows["up-mix"] == first["up-mix"]  # not redone
    tune = rows["ft-muppet-demo_topic_pair-f0.25-s3"]
    assert tune["status"] == "ok" and tune["metric"] == "accuracy" and 0 <= float(tune["value"]) <= 1
    log_dir = Path(tune["log_dir"])
    saved = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert saved["data"]["train_fraction"] == 0.25 and saved["seed_everything"] == 3
    assert saved["model"]["init_from"] == str(Path(first["up-mix"]["log_dir"]) / "export")
    log = (sweep / "runs" / tune["run_id"] / "train.log").read_text()
    assert re.search(r"demo_topic_pair +classification +train +500 ", log), log[-3000:]  # 25% of 2,000 rows
    assert not (log_dir / "export").exists() and not list(log_dir.rglob("*.ckpt"))  # fine-tuning keeps nothing
    assert (Path(first["up-mix"]["log_dir"]) / "export" / "muppet_heads.pt").exists()
    assert (sweep / "bars.png").exists() and "ft-muppet" not in (sweep / "report.md").read_text()
    assert "| demo_topic_pair | accuracy | 0.25 | muppet | 1 |" in (sweep / "report.md").read_text()
    assert list((sweep / "tensorboard").glob("events.out.tfevents.*"))
    with (sweep / "curves.csv").open() as f:  # validated twice (after updates 3 and 6)
        curve = [(int(c["step"]), float(c["value"])) for c in csv.DictReader(f) if c["run_id"] == tune["run_id"]]
    assert len(curve) == 2 and curve[0][0] < curve[1][0]
    assert max(curve, key=lambda point: point[1]) == (int(tune["step"]), pytest.approx(float(tune["value"])))
    assert (sweep / "curves.png").exists() and "![curves](curves.png)" in (sweep / "report.md").read_text()


def test_upstream_seeds_cross_every_fine_tuning_seed_and_the_report_separates_the_two_spreads(tmp_path):
    study = Study(name="s", targets=["t"], seeds=[0, 1], upstream_seeds=[0, 1, 2],
                  upstream={"mix": {"tasks": ["a", "b"]}}, arms={"baseline": {}, "muppet": {"init_from": "mix"}})
    runs = plan(study, [])
    ups = [r for r in runs if r.stage == "upstream"]
    assert [r.run_id for r in ups] == ["up-mix-u0", "up-mix-u1", "up-mix-u2"]
    assert all(f"--seed_everything={r.seed}" in r.args for r in ups)
    muppet = [r for r in runs if r.arm == "muppet"]
    assert sorted((r.seed, r.upstream_seed, r.upstream) for r in muppet) == [
        (f, u, f"up-mix-u{u}") for f in (0, 1) for u in (0, 1, 2)]
    assert len({r.run_id for r in runs}) == len(runs) and len([r for r in runs if r.arm == "baseline"]) == 2
    # value = 0.7 + 0.1 x upstream seed + 0.01 x fine-tuning seed: the upstream spread is 0.1, the fine-tuning one
    # std(0.70, 0.71) = 0.00707; the arm pairs with the baseline by fine-tuning seed, averaged over upstream seeds
    results = Results(tmp_path / "results.csv")
    for r in runs:
        if r.stage == "finetune":
            value = 0.5 if r.arm == "baseline" else 0.7 + 0.1 * r.upstream_seed + 0.01 * r.seed
            results.record({"run_id": r.run_id, "stage": "finetune", "arm": r.arm, "target": "t", "fraction": 1.0,
                            "seed": r.seed, "upstream_seed": r.upstream_seed, "metric": "accuracy", "value": value,
                            "wall_s": 1.0, "status": "ok"})
    rows = [parse(r) for r in Results(tmp_path / "results.csv").rows.values()]
    text = markdown(study, rows, [], "cmd")
    assert "| t | 1 | muppet | 3 | 2 | 0.100 | 0.007 |" in text
    assert "| t | 1 | muppet | 2 | 0.500 ± 0.000 | 0.805 ± 0.007 | +0.305 ± 0.007 | 2/2 |" in text
    study.arms["muppet"]["pair_seeds"] = True  # fine-tuning seed i from upstream seed i only
    assert sorted((r.seed, r.upstream) for r in plan(study, []) if r.arm == "muppet") == [(0, "up-mix-u0"),
                                                                                          (1, "up-mix-u1")]


def test_a_study_run_in_parts_gives_the_upstream_spread_once_one_fine_tuning_seed_ran_from_several(tmp_path):
    """Fine-tuning seed 0 from upstream seeds 0, 1 and 2 (a study's first part): the upstream spread is the spread
    at that fine-tuning seed; the fine-tuning spread waits for a second fine-tuning seed; a paired arm is left out."""
    study = Study(name="s", targets=["t"], seeds=[0, 1], upstream_seeds=[0, 1, 2],
                  upstream={"mix": {"tasks": ["a", "b"]}, "other": {"tasks": ["a"]}},
                  arms={"baseline": {}, "muppet": {"init_from": "mix"},
                        "paired": {"init_from": "other", "pair_seeds": True}})
    values = {0: 0.70, 1: 0.76, 2: 0.79}
    rows = [{"run_id": f"ft-muppet-s0-u{u}", "stage": "finetune", "arm": "muppet", "target": "t", "fraction": 1.0,
             "seed": 0, "upstream_seed": u, "metric": "accuracy", "value": v, "wall_s": 1.0, "status": "ok"}
            for u, v in values.items()]
    rows += [{"run_id": f"ft-paired-s{i}-u{i}", "stage": "finetune", "arm": "paired", "target": "t",
              "fraction": 1.0, "seed": i, "upstream_seed": i, "metric": "accuracy", "value": 0.6 + 0.1 * i,
              "wall_s": 1.0, "status": "ok"} for i in (0, 1)]
    text = markdown(study, rows, [], "cmd")
    spread = float(np.std(list(values.values()), ddof=1))
    assert f"| t | 1 | muppet | 3 | 1 | {spread:.3f} | - |" in text
    assert "| t | 1 | paired |" not in text.split("## Where the spread comes from")[1]
    assert "| t | accuracy | 1 | muppet | 1 (x3 upstream) | 0.750 | - | 0.750 |" in text
    assert "| t | accuracy | 1 | paired | 2 | 0.650 |" in text  # one upstream seed per fine-tuning seed


def test_progress_of_a_running_run_is_read_from_what_it_has_logged_so_far(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    run = Run(run_id="up-mix", stage="upstream", arm="mix", target="2", fraction=None, seed=0,
              args=("--trainer.max_steps=100", "--trainer.max_steps=1000"))
    run_dir = tmp_path / "up-mix"
    run_dir.mkdir()
    assert runner.progress(run, run_dir, 120) == "up-mix starting (2 min)"  # nothing logged yet
    writer = SummaryWriter(run_dir / "muppet" / "version_0")
    for step in (9, 19, 249):
        writer.add_scalar("train/loss", 1.0, step)
    writer.close()
    # 250 of 1,000 steps (the last --trainer.max_steps given wins) in 10 min: 30 min left at that rate
    assert runner.progress(run, run_dir, 600) == "up-mix step 249 of 1000, about 30 min left"
    assert runner.progress(dataclasses.replace(run, args=()), run_dir, 600) == "up-mix step 249"


def test_a_sweep_logs_where_each_running_run_is(tmp_path, monkeypatch):
    study = fake_study(tmp_path)
    monkeypatch.setattr(runner, "Job", fake_jobs([]))
    lines: list[str] = []
    runner.sweep(study, only=["up-mix"], status_every=0, log=lines.append)
    assert any(re.fullmatch(r"\d\d:\d\d running: up-mix starting \(0 min\)", line) for line in lines), lines


def test_an_ablation_is_paired_with_the_arm_it_varies_by_fine_tuning_and_upstream_seed(tmp_path):
    study = Study(name="s", targets=["t"], seeds=[0, 1], upstream_seeds=[0, 1, 2],
                  upstream={"mix": {"tasks": ["a", "b"]}, "mix_h": {"tasks": ["a", "b"]}},
                  arms={"baseline": {}, "all": {"init_from": "mix"},
                        "homogeneous": {"init_from": "mix_h", "pair_seeds": True}},
                  compare={"homogeneous": "all"})
    results = Results(tmp_path / "results.csv")
    for r in plan(study, []):
        if r.stage == "finetune":  # the ablation costs 0.02 on every (seed, upstream seed) it shares with `all`
            value = 0.5 if r.arm == "baseline" else 0.7 + 0.1 * r.upstream_seed + 0.01 * r.seed
            results.record({"run_id": r.run_id, "stage": "finetune", "arm": r.arm, "target": "t", "fraction": 1.0,
                            "seed": r.seed, "upstream_seed": r.upstream_seed, "metric": "accuracy",
                            "value": value - (0.02 if r.arm == "homogeneous" else 0), "wall_s": 1.0, "status": "ok"})
    text = markdown(study, [parse(r) for r in results.rows.values()], [], "cmd")
    # pairs (seed 0, upstream 0) and (1, 1): `all` 0.70 and 0.81, the ablation 0.68 and 0.79 (averaging `all` over
    # its upstream seeds instead would give -0.12)
    assert "| t | 1 | homogeneous | all | 2 | 0.755 ± 0.078 | 0.735 ± 0.078 | -0.020 ± 0.000 | 0/2 | no |" in text
    # the spreads apart only where the seeds are crossed: `all`, not the paired ablation
    assert "| t | 1 | all | 3 | 2 | 0.100 | 0.007 |" in text and "| t | 1 | homogeneous | 2 | 2 |" not in text
    with pytest.raises(ValueError, match=r"compare 'homogeneous: everything': \['everything'\] not among the arms"):
        Study(**{**dataclasses.asdict(study), "compare": {"homogeneous": "everything"}}).check("x.yaml")


def test_an_arm_that_repeats_another_arms_run_is_recorded_from_it_not_run_twice(tmp_path, monkeypatch):
    """Two arms starting from one upstream mix on one target (the task-count curve's 1-task mix and the best
    intermediate task, when that task is the first of the mix) plan the same train.py command: the later one names
    the earlier in `same_as`, never starts a process, and gets the earlier's result under its own id (no wall time
    of its own); selecting only the repeat runs the original first. Its curve is the original's."""
    study = Study(name="fake", output=str(tmp_path), targets=["demo_sentiment"], seeds=[0, 1],
                  upstream={"mix": {"tasks": ["demo_rating"]}},
                  arms={"baseline": {}, "muppet": {"init_from": "mix"}, "again": {"init_from": "mix", "x": 1}})
    runs = {r.run_id: r for r in plan(study, [])}
    assert runs["ft-again-demo_sentiment-f1-s0"].same_as == "ft-muppet-demo_sentiment-f1-s0"
    assert all(r.same_as is None for r in runs.values() if not r.run_id.startswith("ft-again"))
    assert [r.run_id for r in runner.select(list(runs.values()), ["ft-again-*-s1"])] == [
        "up-mix", "ft-muppet-demo_sentiment-f1-s1", "ft-again-demo_sentiment-f1-s1"]
    calls: list[str] = []
    monkeypatch.setattr(runner, "Job", fake_jobs(calls))
    lines: list[str] = []
    runner.sweep(study, jobs=2, log=lines.append, only=["ft-again-*-s1"])
    assert calls == ["up-mix", "ft-muppet-demo_sentiment-f1-s1"]  # the repeat waited for the original
    assert any("ft-again-demo_sentiment-f1-s1: the same run as ft-muppet-demo_sentiment-f1-s1" in line
               for line in lines)
    rows = Results(tmp_path / "fake" / "results.csv").rows
    again, muppet = rows["ft-again-demo_sentiment-f1-s1"], rows["ft-muppet-demo_sentiment-f1-s1"]
    assert (again["status"], again["value"], again["log_dir"], again["wall_s"]) == (
        "ok", muppet["value"], muppet["log_dir"], "0")
    assert (again["arm"], again["x"], again["same_as"]) == ("again", "1", "ft-muppet-demo_sentiment-f1-s1")
    calls.clear()
    runner.sweep(study, log=lambda *_: None)  # the rest: seed 0's repeat too, and again nothing runs twice
    assert "ft-again-demo_sentiment-f1-s0" not in calls and calls == [
        "ft-baseline-demo_sentiment-f1-s0", "ft-muppet-demo_sentiment-f1-s0", "ft-baseline-demo_sentiment-f1-s1"]
    assert Results(tmp_path / "fake" / "results.csv").done("ft-again-demo_sentiment-f1-s0")
    text = runner.write_report(study, tmp_path / "fake", "cmd").read_text()
    assert "2 of the ok runs are another arm's run with the same command" in text
    assert "| demo_sentiment | accuracy | 1 | again | 2 |" in text


@pytest.mark.slow  # sweeps of runner processes
def test_a_repeat_whose_original_failed_is_skipped_and_runs_with_it_next_time(tmp_path, monkeypatch):
    study = Study(name="fake", output=str(tmp_path), targets=["demo_sentiment"], seeds=[0],
                  upstream={"mix": {"tasks": ["demo_rating"]}},
                  arms={"muppet": {"init_from": "mix"}, "again": {"init_from": "mix"}})
    calls: list[str] = []
    monkeypatch.setattr(runner, "Job", fake_jobs(calls, fail={"ft-muppet-demo_sentiment-f1-s0"}))
    runner.sweep(study, log=lambda *_: None)
    rows = Results(tmp_path / "fake" / "results.csv").rows
    assert rows["ft-again-demo_sentiment-f1-s0"]["status"] == (
        "skipped (the same run as ft-muppet-demo_sentiment-f1-s0, which did not finish)")
    monkeypatch.setattr(runner, "Job", fake_jobs(calls))
    runner.sweep(study, log=lambda *_: None)
    assert calls == ["up-mix", "ft-muppet-demo_sentiment-f1-s0", "ft-muppet-demo_sentiment-f1-s0"]
    assert Results(tmp_path / "fake" / "results.csv").done("ft-again-demo_sentiment-f1-s0")


def test_a_repeat_is_recorded_again_when_its_original_runs_again(tmp_path, monkeypatch):
    """A repeat keeps its original's result only while the original keeps it: an original run again in a later
    sitting (here with `--only` on it alone) or to be run again now (its row gone) has the repeat recorded again."""
    study = Study(name="fake", output=str(tmp_path), targets=["demo_sentiment"], seeds=[0],
                  upstream={"mix": {"tasks": ["demo_rating"]}},
                  arms={"muppet": {"init_from": "mix"}, "again": {"init_from": "mix"}})
    calls: list[str] = []
    monkeypatch.setattr(runner, "Job", fake_jobs(calls))
    runner.sweep(study, log=lambda *_: None)
    path = tmp_path / "fake" / "results.csv"
    original, repeat = "ft-muppet-demo_sentiment-f1-s0", "ft-again-demo_sentiment-f1-s0"
    results = Results(path)
    results.record({**results.rows[original], "value": "0.9", "log_dir": str(tmp_path / "elsewhere")})
    lines: list[str] = []
    runner.sweep(study, log=lines.append)
    assert calls == ["up-mix", original]  # nothing ran again: the repeat took the original's new result
    assert (Results(path).rows[repeat]["value"], Results(path).rows[repeat]["log_dir"]) == (
        "0.9", str(tmp_path / "elsewhere"))
    assert any(f"{repeat}: recorded earlier from {original}, which has run again" in line for line in lines)
    results = Results(path)
    del results.rows[original]
    results.record(results.rows[repeat])  # rewrites the CSV without the original's row
    runner.sweep(study, log=lambda *_: None)
    assert calls == ["up-mix", original, original]
    rows = Results(path).rows
    assert rows[repeat]["value"] == rows[original]["value"] == "0.5"  # the original's new result, not 0.9


def test_a_repeat_gets_its_originals_curve_from_the_committed_curves_csv(tmp_path):
    """A committed copy has no TensorBoard folders: a repeat's curve is drawn from the kept points of the run it
    repeats, under its own id and arm, and kept in the CSV from then on."""
    from experiments.results import collect_curves
    path = tmp_path / "curves.csv"
    path.write_text("run_id,arm,target,fraction,seed,upstream_seed,metric,step,value\n"
                    "ft-a-t-f1-s0,a,t,1.0,0,0,accuracy,49,0.7\nft-a-t-f1-s0,a,t,1.0,0,0,accuracy,99,0.8\n")
    row = {"stage": "finetune", "status": "ok", "log_dir": str(tmp_path / "gone"), "target": "t", "metric": "accuracy"}
    rows = [{**row, "run_id": "ft-a-t-f1-s0", "arm": "a", "same_as": ""},
            {**row, "run_id": "ft-b-t-f1-s0", "arm": "b", "same_as": "ft-a-t-f1-s0"}]
    curves = collect_curves(rows, path)
    assert [(c["run_id"], c["arm"], c["step"], c["value"]) for c in curves] == [
        ("ft-a-t-f1-s0", "a", 49, 0.7), ("ft-a-t-f1-s0", "a", 99, 0.8),
        ("ft-b-t-f1-s0", "b", 49, 0.7), ("ft-b-t-f1-s0", "b", 99, 0.8)]
    assert collect_curves(rows[1:], path) == curves[2:]  # kept under its own id


def test_time_left_is_estimated_from_runs_that_ran_not_from_repeats_recorded_in_no_time(tmp_path):
    results = Results(tmp_path / "results.csv")
    results.record({"run_id": "ft-a", "stage": "finetune", "status": "ok", "wall_s": 600})
    results.record({"run_id": "ft-b", "stage": "finetune", "status": "ok", "wall_s": 0, "same_as": "ft-a"})
    todo = [Run("ft-c", "finetune", "c", "t", 1.0, 0, ()),
            Run("ft-d", "finetune", "d", "t", 1.0, 0, (), same_as="ft-c")]
    assert runner.eta(results, todo) == "10.0 min"  # ft-c at ft-a's pace; ft-d will be recorded from it
