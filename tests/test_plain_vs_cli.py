"""The plain-loop comparison's driver (experiments/plain_vs_cli.py): every upstream arm's and fine-tuning recipe's
options reach train.py's resolved config; the report labels each recipe's runs, pairs them with the baseline
fine-tuned by the same recipe, and pairs the CLI's pre-finetuning with the plain loop's, seed by seed."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from experiments.plain_vs_cli import ARMS, RECIPES, cli_finetune_command, finish_cli_finetune, report
from tests.test_cli import train


@pytest.mark.slow
def test_every_arms_and_recipes_options_reach_train_pys_resolved_config(tmp_path):
    """One `--print_config` with every option an upstream arm or a fine-tuning recipe adds: each names a real
    option, and its value is what the resolved config holds (a misspelt option fails the parse)."""
    options = list(dict.fromkeys(o for arm in ARMS.values() if arm for o in arm))
    options += [o for _, _, recipe in RECIPES.values() for o in recipe if o not in options]
    command = cli_finetune_command(None, 0, str(tmp_path), tmp_path / "run", 2.0)
    result = train(*command[command.index("fit"):], *options, "--print_config")
    assert result.returncode == 0, result.stderr[-2000:]
    printed = yaml.safe_load(result.stdout)
    for option in options:
        key, value = option[2:].split("=", 1)
        node = printed
        for part in key.split("."):
            node = node[part]
        expected = yaml.safe_load(value)
        assert node == (float(value) if isinstance(expected, str) and "e-" in value else expected), option
    assert printed["data"]["tasks"] == ["mrpc"]


def test_every_recipe_differs_from_the_default_and_plainlike_has_all_of_them():
    default = RECIPES["default"][2]
    singles = [options for name, (_, _, options) in RECIPES.items() if name not in ("default", "plainlike")]
    assert default == [] and all(singles)
    assert sorted(o for options in singles for o in options) == sorted(RECIPES["plainlike"][2])
    assert len({prefix for prefix, _, _ in RECIPES.values()}) == len(RECIPES)  # one run folder prefix each


def test_report_labels_each_recipe_and_pairs_it_with_its_own_baseline(tmp_path, capsys):
    values = {("ftcliplainlike", "baseline"): 0.75, ("ftcliplainlike", "cli"): 0.80, ("ftcli", "baseline"): 0.77,
              ("ftcli", "cli"): 0.775, ("ft", "plain"): 0.79, ("ft", "cli"): 0.81}
    for (prefix, arm), best in values.items():
        folder = tmp_path / f"{prefix}-{arm}-s0"
        folder.mkdir()
        (folder / "result.json").write_text(json.dumps({"best": best, "final": best, "updates": 58}))
        (folder / "curve.csv").write_text(f"step,epoch,train_loss,accuracy\n58,0.253,,{best}\n")
    report(tmp_path)
    printed = capsys.readouterr().out
    label = RECIPES["plainlike"][1]
    assert f"| cli ({label}) | 0.800 | 0.800 ± 0.000 | +0.050 ± 0.000 (1/1 better) |" in printed
    assert "| cli (CLI fine-tuning) | 0.775 | 0.775 ± 0.000 | +0.005 ± 0.000 (1/1 better) |" in printed
    assert "cli - plain, paired over seeds 0: +0.020; mean +0.020 ± 0.000" in printed  # same fine-tuner only


def test_a_cli_fine_tuning_runs_curve_and_result_come_from_its_tensorboard_scalars(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(str(tmp_path / "muppet" / "version_0")) as writer:
        for step, value in [(229, 0.70), (458, 0.75), (687, 0.74)]:
            writer.add_scalar("val/mrpc/accuracy", value, step)
    finish_cli_finetune(tmp_path)
    with (tmp_path / "curve.csv").open() as f:
        curve = list(csv.DictReader(f))
    assert [(c["step"], c["epoch"]) for c in curve] == [("229", "0.999"), ("458", "1.998"), ("687", "2.997")]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["updates"] == 687
    assert (result["final"], result["best"]) == (pytest.approx(0.74), pytest.approx(0.75))


def test_merge_into_a_committed_copy_replaces_rerun_rows_and_curves_and_keeps_the_rest(tmp_path, capsys):
    """`--report-only --out NEW --merge-into COMMITTED`: NEW's runs replace the committed rows of the same arm, seed,
    task and metric and the whole curve of that arm and seed; every other committed row and curve stays."""
    from experiments.plain_vs_cli import main
    committed, new = tmp_path / "committed", tmp_path / "new"
    for arm, seed, best in [("cli", "0", 0.70), ("cli", "1", 0.71), ("baseline", "0", 0.60)]:
        folder = committed / f"ft-{arm}-s{seed}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({"best": best, "final": best, "updates": 116}))
        (folder / "curve.csv").write_text(f"step,epoch,train_loss,accuracy\n58,0.5,,{best - 0.1}\n116,1.0,,{best}\n")
    report(committed)
    for folder in committed.glob("ft-*"):  # a committed copy is CSVs only
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    folder = new / "ft-cli-s1"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"best": 0.80, "final": 0.79, "updates": 87}))
    (folder / "curve.csv").write_text("step,epoch,train_loss,accuracy\n87,0.75,,0.80\n")
    capsys.readouterr()
    main(["--report-only", "--out", str(new), "--merge-into", str(committed), "--plot", str(tmp_path / "c.png")])
    printed = capsys.readouterr().out
    assert "merged 2 result rows and 1 curves" in printed
    assert "| cli | 0.700, 0.800 | 0.750 ± 0.071 | +0.100 ± 0.000 (1/1 better) |" in printed
    with (committed / "results.csv").open() as f:
        rows = {(r["arm"], r["seed"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}
    assert rows == {("cli", "0", "best"): 0.70, ("cli", "0", "final"): 0.70, ("baseline", "0", "best"): 0.60,
                    ("baseline", "0", "final"): 0.60, ("cli", "1", "best"): 0.80, ("cli", "1", "final"): 0.79}
    with (committed / "curves.csv").open() as f:
        curves = [(c["arm"], c["seed"], c["step"]) for c in csv.DictReader(f)]
    assert sorted(c for c in curves if c[:2] == ("cli", "1")) == [("cli", "1", "87")]  # the old curve is gone
    assert len(curves) == 5 and (tmp_path / "c.png").stat().st_size > 0
    assert {"ft-cli-s1"} == {p.name for p in new.iterdir() if p.is_dir()}  # NEW's run folders are left as they were


def test_report_of_a_folder_with_neither_runs_nor_csvs_names_what_it_needs(tmp_path):
    with pytest.raises(SystemExit, match="needs run folders"):
        report(tmp_path)
