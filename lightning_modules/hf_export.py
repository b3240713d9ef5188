"""One task of a trained model as a standard Hugging Face task model, where a standard class computes exactly what
the task's head computes (at eval: dropout off), so `AutoModelFor...from_pretrained(folder)` and `pipeline(...)` run it
without this project:

Each head says what it is as a standard class (`Head.standard` in its file under heads/): today first-token
classification and regression on RoBERTa/XLM-R (`*ForSequenceClassification`) and BERT (its dense+tanh as the
pooler), first-token multiple choice (`*ForMultipleChoice`), span QA (`*ForQuestionAnswering`) and token
classification (`*ForTokenClassification`). Where none reproduces a head (mean or pooler pooling, other backbones'
classification heads, encoder-decoders) the error says why, and the project's own API (lightning_modules/inference.py)
serves the task; a generative task needs no conversion: an export folder of BART loads with AutoModelForSeq2SeqLM.

    python -m lightning_modules.hf_export --model exported/                      # which task exports to what
    python -m lightning_modules.hf_export --model exported/ --task rte --output rte-hf/
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from core.errors import UserError
from datamodules.families.base import label_names
from heads.base import NotStandard
from lightning_modules.inference import load_module
from lightning_modules.muppet import MuppetModule

NOTE_FILE = "muppet_standard.json"


def standard_head(module: MuppetModule, task: str) -> tuple[type, dict[str, torch.Tensor], list[str]]:
    """(the Auto class, the head's tensors under the standard model's names, notes), as the task's head gives them
    (`Head.standard`); NotStandard says why not."""
    names = [s.name for s in module.specs]
    if task not in names:
        raise NotStandard(f"'{task}' is not a task of this model; its tasks: {names}")
    config = module.backbone.config
    if module.backbone.is_encoder_decoder:
        raise NotStandard(f"task '{task}': {config.model_type} is an encoder-decoder; its heads read the decoder state "
                          f"at the final EOS, which no standard class here is verified to reproduce (a generative "
                          f"task needs no conversion: the export folder loads with AutoModelForSeq2SeqLM)")
    try:
        head = module.head_of(names.index(task)).standard(config.model_type, module.backbone.pooling)
    except NotStandard as error:
        raise NotStandard(f"task '{task}': {error}; predict with lightning_modules.inference instead") from None
    return getattr(transformers, head.auto_class), head.tensors, head.notes


def labels_of(module: MuppetModule, task: str) -> dict[int, str] | None:
    """Class id -> name: the entry's `label_names`, else its `label_map`'s raw values; None when it has neither."""
    fields = module.specs[[s.name for s in module.specs].index(task)].fields
    names = getattr(fields, "label_names", None)
    if names:
        return dict(enumerate(map(str, names)))
    mapped = label_names(getattr(fields, "label_map", None))
    return {i: str(v) for i, v in sorted(mapped.items())} if mapped else None


def standard_model(module: MuppetModule, task: str) -> tuple[PreTrainedModel, list[str]]:
    """The task as a standard model (eval mode, CPU) carrying the module's backbone and the task's head weights."""
    auto, head, notes = standard_head(module, task)
    config = copy.deepcopy(module.backbone.config)
    labels = labels_of(module, task)
    count = getattr(module.head_of([s.name for s in module.specs].index(task)), "num_labels", 2)  # span: start, end
    config.num_labels = count
    if labels and len(labels) == count:
        config.id2label, config.label2id = labels, {v: k for k, v in labels.items()}
    if count == 1 and auto is AutoModelForSequenceClassification:
        config.problem_type = "regression"
    config.muppet_task = task
    model = auto.from_config(config)
    backbone = {k: v.detach().cpu() for k, v in module.backbone.model.state_dict().items()}
    missing, _ = model.base_model.load_state_dict(backbone, strict=False)  # a pooler the class lacks: unused
    prefix = model.base_model_prefix
    missing = [m for m in missing if f"{prefix}.{m}" not in head]
    loaded = model.load_state_dict(head, strict=False)
    if missing or loaded.unexpected_keys:
        raise RuntimeError(f"{type(model).__name__} does not take the weights: missing {missing[:3]}, unexpected "
                           f"{loaded.unexpected_keys[:3]}")
    return model.eval(), notes


def save_standard(module: MuppetModule, task: str, folder: str | Path) -> Path:
    """Write the task as a standard Hugging Face folder (model, tokenizer, `muppet_standard.json` with notes)."""
    folder = Path(folder)
    model, notes = standard_model(module, task)
    model.save_pretrained(folder)
    module.tokenizer.save_pretrained(folder)
    (folder / NOTE_FILE).write_text(json.dumps({"task": task, "class": type(model).__name__, "notes": notes},
                                               indent=2))
    return folder


def status(module: MuppetModule) -> dict[str, str]:
    """Task -> the standard class it exports to, or why it does not."""
    out = {}
    for spec in module.specs:
        try:
            auto, _, _ = standard_head(module, spec.name)
            out[spec.name] = auto.__name__
        except NotStandard as error:
            out[spec.name] = f"not standard: {error}"
    return out


def main(args: list[str] | None = None) -> dict[str, str] | Path:
    parser = argparse.ArgumentParser(description="Export a task as a standard Hugging Face task model.")
    parser.add_argument("--model", required=True, help="an export folder or a Lightning .ckpt of MuppetModule")
    parser.add_argument("--task", help="the task to export; without it, list what each task exports to")
    parser.add_argument("--output", help="folder to write (with --task)")
    options = parser.parse_args(args)
    try:
        module = load_module(options.model)
        if not options.task:
            table = status(module)
            print("\n".join(f"{task:<28} {what}" for task, what in table.items()))
            return table
        if not options.output:
            parser.error("--task needs --output")
        folder = save_standard(module, options.task, options.output)
    except UserError as error:
        parser.exit(2, f"error: {error}\n")
    print(f"exported task '{options.task}' to {folder}")
    return folder


if __name__ == "__main__":
    main()
