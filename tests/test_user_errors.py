"""A mistake in the user's input (options, config and catalogue YAML, catalogue entries, broken data files, paths,
backbones) ends in one line `error: <message>` naming the culprit, a non-zero exit and no traceback, before
anything is written. One real `python train.py` run; the other cases run `train.main(args)` one after another in a
single child process (importing torch/Lightning once per case would cost minutes on 2 cores). Checkpoints and an
export for the cases that need them come from one short real run into a folder of its own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_cli import OFFLINE, TINY_MODEL

ENTRY = "  family: classification\n  inputs: [text]\n  label: label\n  label_map: {negative: 0, positive: 1}\n" \
        "  num_labels: 2\n"
GOOD = '{"text": "a fine day", "label": "positive"}\n{"text": "a bad day", "label": "negative"}\n'
FILES = {
    "good.jsonl": GOOD.encode(),
    "bad_line.jsonl": (GOOD + '{"text": "broken", "label": positive}\n').encode(),
    "empty.jsonl": b"",
    "latin1.jsonl": GOOD.encode() + '{"text": "caf\xe9", "label": "positive"}\n'.encode("latin-1"),
    "no_label.jsonl": b'{"text": "a fine day"}\n{"text": "a bad day"}\n',
    "int_labels.jsonl": b'{"text": "a fine day", "label": 1}\n{"text": "a bad day", "label": 0}\n',
    "good.csv": b"text,label\na fine day,positive\na bad day,negative\n",
    "ragged.csv": b"text,label\na fine day,positive\na bad day,negative,extra\n",
    "scalar_answers.jsonl": b'{"question": "Where?", "context": "It was held in Denver.", '
                            b'"answers": {"text": "Denver", "answer_start": 15}}\n',
}
SPAN = "  family: span\n  inputs: [question, context]\n  answers: answers\n"
TASKS = {  # task -> (train file, validation file)
    "bad_line": ("bad_line.jsonl", "good.jsonl"), "empty_train": ("empty.jsonl", "good.jsonl"),
    "not_utf8": ("latin1.jsonl", "good.jsonl"), "missing_file": ("missing.jsonl", "good.jsonl"),
    "ragged_csv": ("ragged.csv", "good.csv"), "validation_lacks_label": ("good.jsonl", "no_label.jsonl"),
    "validation_label_type": ("good.jsonl", "int_labels.jsonl"),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Data files, a catalogue with one task per broken file, broken YAML, and model folders missing a piece."""
    root = tmp_path_factory.mktemp("user-errors")
    for name, content in FILES.items():
        (root / name).write_bytes(content)
    entries = [f"{task}:\n  source: {{path: {'csv' if train.endswith('csv') else 'json'}, data_files: "
               f"{{train: {train}, validation: {validation}}}}}\n{ENTRY}"
               for task, (train, validation) in TASKS.items()]
    entries.append("scalar_answers:\n  source: {path: json, data_files: {train: scalar_answers.jsonl, "
                   "validation: scalar_answers.jsonl}}\n" + SPAN)
    (root / "tasks.yaml").write_text("\n".join(entries))
    source = "  source: {path: json, data_files: {train: good.jsonl, validation: good.jsonl}}\n"
    (root / "label_map.yaml").write_text("label_map_outside:\n" + source + ENTRY.replace("positive: 1", "positive: 2"))
    (root / "dotted.yaml").write_text("my.task:\n" + source + ENTRY)
    (root / "wrong_type.yaml").write_text("wrong_type:\n  source: {path: json}\n" + ENTRY.replace("2", "two"))
    (root / "no_label.yaml").write_text("no_label_field:\n  source: {path: json}\n" + ENTRY.replace("label: label", ""))
    (root / "syntax.yaml").write_text("my_task:\n  family: classification\n  source: {path: json\n  inputs: [text]\n")
    (root / "config.yaml").write_text("data:\n  batch_size: 16\n   max_length: 64\n")
    (root / "tokenizer_only").mkdir()
    for file in (ROOT / "assets" / "tokenizer").iterdir():
        (root / "tokenizer_only" / file.name).write_bytes(file.read_bytes())
    (root / "a_file").write_text("")
    return root


@pytest.fixture(scope="module")
def trained(workspace) -> Path:
    """A real checkpoint and export of a two-step run (in `made/`, beside the cases' logs and cache), a copy of the
    checkpoint cut to its first half, and a copy of the export without its heads file."""
    made = workspace / "made"
    args = ["fit", "--config", "configs/quickstart.yaml", *TINY_MODEL, "--trainer.max_steps=2",
            "--data.tasks=[demo_sentiment]", f"--data.cache_dir={made}/cache",
            f"--trainer.logger.init_args.save_dir={made}/logs"]
    run = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=OFFLINE, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    version = made / "logs" / "muppet" / "version_0"
    checkpoint = (version / "checkpoints" / "final.ckpt").read_bytes()
    (made / "model.ckpt").write_bytes(checkpoint)
    (made / "truncated.ckpt").write_bytes(checkpoint[:len(checkpoint) // 2])
    shutil.copytree(version / "export", made / "export_without_heads")
    (made / "export_without_heads" / "muppet_heads.pt").unlink()
    return made


def common(root: Path) -> list[str]:
    return ["fit", "--config", "configs/quickstart.yaml", *TINY_MODEL, "--trainer.max_steps=1",
            f"--data.catalogue=[configs/tasks,{root}/tasks.yaml]", f"--data.cache_dir={root}/cache",
            f"--trainer.logger.init_args.save_dir={root}/logs"]


# case -> (extra arguments, substrings the error line must hold); {root} is the workspace
CASES = {
    "unknown_option": (["--data.batch_sise=16"], ["unrecognized arguments: --data.batch_sise=16"]),
    "option_type": (["--data.batch_size=abc"], ["option --data.batch_size: got 'abc'; expected int"]),
    "option_value": (["--data.sampling=often"], ["data.sampling is 'often'"]),
    "config_yaml_syntax": (["--config={root}/config.yaml"], ["{root}/config.yaml line 3, column 14: invalid YAML"]),
    "catalogue_yaml_syntax": (["--data.catalogue=[configs/tasks,{root}/syntax.yaml]"],
                              ["{root}/syntax.yaml line 4, column 9: invalid YAML"]),
    "catalogue_missing_field": (["--data.catalogue=[{root}/no_label.yaml]", "--data.tasks=[no_label_field]"],
                                ["task 'no_label_field'", "needs field 'label'"]),
    "catalogue_wrong_type": (["--data.catalogue=[{root}/wrong_type.yaml]", "--data.tasks=[wrong_type]"],
                             ["wrong_type.yaml", "task 'wrong_type'"]),
    "unknown_task": (["--data.tasks=[demo_sentiment,not_a_task]"], ["unknown task or mixture 'not_a_task'"]),
    "data_bad_json_line": (["--data.tasks=[bad_line]"],
                           ["task 'bad_line', split 'train'", "bad_line.jsonl line 3: invalid JSON"]),
    "data_empty_file": (["--data.tasks=[empty_train]"], ["task 'empty_train', split 'train': the split is empty",
                                                         "empty.jsonl"]),
    "data_not_utf8": (["--data.tasks=[not_utf8]"], ["task 'not_utf8', split 'train'",
                                                    "latin1.jsonl line 3: not UTF-8 text (byte 0xe9"]),
    "data_missing_file": (["--data.tasks=[missing_file]"], ["task 'missing_file', split 'train'",
                                                            "missing.jsonl does not exist"]),
    "data_ragged_csv": (["--data.tasks=[ragged_csv]"], ["task 'ragged_csv', split 'train'",
                                                        "ragged.csv line 3: 3 fields, but the header has 2"]),
    "data_validation_lacks_column": (["--data.tasks=[validation_lacks_label]"],
                                     ["split 'validation'", "label"]),
    "data_validation_label_type": (["--data.tasks=[validation_label_type]"],
                                   ["task 'validation_label_type', split 'validation': field 'label'"]),
    "path_ckpt": (["--ckpt_path={root}/nope.ckpt"], ["--ckpt_path '{root}/nope.ckpt': no such file"]),
    "path_tokenizer": (["--model.tokenizer={root}/no_tokenizer"], ["tokenizer '{root}/no_tokenizer'",
                                                                   "no such folder"]),
    "path_cache_dir": (["--data.cache_dir={root}/a_file"], ["cannot write '{root}/a_file/", "Not a directory"]),
    "backbone_missing": (["--model.backbone={root}/no_backbone", "--model.backbone_config=null"],
                         ["backbone '{root}/no_backbone' (model.backbone): no such folder"]),
    "backbone_config_model_type": (["--model.backbone_config.model_type=robertaa"],
                                   ["model.backbone_config.model_type is 'robertaa'"]),
    "backbone_without_config": (["--model.backbone={root}/tokenizer_only", "--model.backbone_config=null"],
                                ["backbone '{root}/tokenizer_only'", "no config.json"]),
    "init_from_export_without_heads": (["--model.init_from={root}/made/export_without_heads",
                                        "--model.reuse_heads=true"],
                                       ["model.init_from '{root}/made/export_without_heads'",
                                        "has no muppet_heads.pt"]),
    "ckpt_truncated": (["--ckpt_path={root}/made/truncated.ckpt"],
                       ["--ckpt_path '{root}/made/truncated.ckpt'", "Lightning checkpoint", "truncated?"]),
    "init_from_truncated": (["--model.init_from={root}/made/truncated.ckpt"],
                            ["model.init_from '{root}/made/truncated.ckpt'", "Lightning checkpoint", "truncated?"]),
    "resume_other_tasks": (["--ckpt_path={root}/made/model.ckpt", "--data.tasks=[demo_sentiment,demo_rating]"],
                           ["--ckpt_path '{root}/made/model.ckpt'", "was trained on tasks ['demo_sentiment']",
                            "this run selects ['demo_sentiment', 'demo_rating'] (data.tasks)"]),
    "batch_size_zero": (["--data.batch_size=0"], ["data.batch_size: must be an integer >= 1, got 0"]),
    "eval_batch_size_zero": (["--data.eval_batch_size=0"], ["data.eval_batch_size: must be an integer >= 1, got 0"]),
    "label_map_outside_num_labels": (["--data.catalogue=[{root}/label_map.yaml]", "--data.tasks=[label_map_outside]"],
                                     ["{root}/label_map.yaml", "task 'label_map_outside'",
                                      "field 'label_map' maps {'positive': 2} outside 0..1"]),
    "task_name_with_dot": (["--data.catalogue=[{root}/dotted.yaml]", "--data.tasks=[my.task]"],
                           ["{root}/dotted.yaml", "task name 'my.task' must be", "without '.'"]),
    "span_answers_scalars": (["--data.tasks=[scalar_answers]"],
                             [("task 'scalar_answers', split 'train': field 'answers' holds one text and one "
                               "answer_start per example; it takes lists")]),
}
DRIVER = """
import contextlib, io, json, os, sys, traceback
import train
results = {}
for name, args in json.loads(sys.argv[1]).items():
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            train.main(args)
            code = 0
        except SystemExit as exit:
            code = exit.code
        except BaseException:
            traceback.print_exc()
            code = 1
    os.environ.pop("MUPPET_TRACEBACK", None)
    results[name] = {"code": code, "stderr": stderr.getvalue()}
print("RESULTS " + json.dumps(results))
"""


def fill(text: str, root: Path) -> str:
    return text.replace("{root}", str(root))


@pytest.fixture(scope="module")
def results(workspace, trained) -> dict[str, dict]:
    cases = {name: common(workspace) + [fill(a, workspace) for a in args] for name, (args, _) in CASES.items()}
    cases["traceback_flag"] = common(workspace) + ["--data.sampling=often", "--traceback"]
    run = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases)], cwd=ROOT, env=OFFLINE,
                         capture_output=True, text=True, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, run.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULTS "))


def last_line(stderr: str) -> str:
    return [line for line in stderr.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("case", CASES)
def test_mistake_ends_in_one_line_naming_the_culprit(case, results, workspace):
    result = results[case]
    assert result["code"] == 2 and "Traceback" not in result["stderr"], result["stderr"][-3000:]
    line = last_line(result["stderr"])
    assert line.startswith("error: ") and all(fill(s, workspace) in line for s in CASES[case][1]), line
    assert not (workspace / "logs").exists() and not any((workspace / "cache").rglob("*"))


def test_traceback_flag_shows_the_traceback(results):
    result = results["traceback_flag"]
    assert result["code"] != 2 and "Traceback" in result["stderr"] and "data.sampling is 'often'" in result["stderr"]


@pytest.mark.slow  # a child process of its own (the other cases share one)
def test_train_py_exits_2_with_one_line_and_writes_nothing(workspace, tmp_path):
    """The real entry point: a broken line in a data file, which Lightning meets inside `trainer.fit`."""
    args = common(workspace) + [f"--trainer.logger.init_args.save_dir={tmp_path}/logs",
                                f"--data.cache_dir={tmp_path}/cache", "--data.tasks=[demo_sentiment,bad_line]"]
    result = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=OFFLINE, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert last_line(result.stderr) == (f"error: task 'bad_line', split 'train': file {workspace}/bad_line.jsonl "
                                        "line 3: invalid JSON (Expecting value at column 29)")
    assert not any(tmp_path.rglob("*"))


@pytest.mark.slow
def test_max_length_beyond_the_position_table_is_capped_with_a_warning(tmp_path):
    """Not a mistake to stop on: `data.max_length` is capped at what the backbone reads (quickstart's position table
    of 258 holds 256 tokens), with a warning naming the option, and the run goes on."""
    args = ["fit", "--config", "configs/quickstart.yaml", *TINY_MODEL, "--trainer.max_steps=2",
            "--data.tasks=[demo_sentiment]", "--data.max_length=100000", f"--data.cache_dir={tmp_path}/cache",
            f"--trainer.logger.init_args.save_dir={tmp_path}/logs"]
    env = {key: value for key, value in OFFLINE.items() if key != "PYTHONWARNINGS"}  # the warning is what we check
    result = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data.max_length 100000 is beyond the backbone's 256 positions: using 256" in result.stderr
