"""One task of a trained model as a standard Hugging Face task model, where a standard class computes exactly what
the task's head computes (at eval: dropout off), so `AutoModelFor...from_pretrained(folder)` and `pipeline(...)` run it
without this project:

| head (pooling)                       | backbone                   | standard class                                   |
|--------------------------------------|----------------------------|--------------------------------------------------|
| classification, regression (`first`) | roberta, xlm-roberta       | *ForSequenceClassification (dense+tanh+out_proj) |
| classification, regression (`first`) | bert                       | BertForSequenceClassification (pooler)           |
| multiple choice (`first`)            | roberta, xlm-roberta, bert | *ForMultipleChoice (dense+tanh = pooler)         |
| span                                 | encoders with `qa_outputs` | *ForQuestionAnswering                            |
| token classification                 | encoders with `classifier` | *ForTokenClassification                          |

Not standard (a clear error, and the project's own API, lightning_modules/inference.py, serves them): `mean` pooling
(no standard class averages the tokens), `pooler` pooling (BERT's pooler followed by this head's own dense+tanh: two
layers where the standard class has one), encoder-decoders (BART's `eos` heads; summarization needs no conversion:
an export folder of a BART model already loads with AutoModelForSeq2SeqLM), other backbones' classification heads
(ELECTRA's uses gelu, DeBERTa's ContextPooler its own activation).

    python -m lightning_modules.hf_export --model exported/                      # which task exports to what
    python -m lightning_modules.hf_export --model exported/ --task rte --output rte-hf/
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from torch import nn
from transformers import (AutoModelForMultipleChoice, AutoModelForQuestionAnswering,
                          AutoModelForSequenceClassification, AutoModelForTokenClassification, PreTrainedModel)

from core.errors import UserError
from datamodules.families.base import label_names
from heads.classification import ClassificationHead, RegressionHead
from heads.multiple_choice import MultipleChoiceHead
from heads.span import SpanHead
from heads.token_classification import TokenClassificationHead
from lightning_modules.inference import load_module
from lightning_modules.muppet import MuppetModule

NOTE_FILE = "muppet_standard.json"
ROBERTA_LIKE, POOLED = ("roberta", "xlm-roberta"), ("roberta", "xlm-roberta", "bert")


class NotStandard(UserError, ValueError):
    """A task whose head no standard Hugging Face class reproduces; the message says why."""


def _linear(prefix: str, layer: nn.Linear) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": layer.weight.detach().cpu(), f"{prefix}.bias": layer.bias.detach().cpu()}


def _out_proj(head: ClassificationHead, prefix: str) -> dict[str, torch.Tensor]:
    """The output layer; a regression head's normalisation (mean, std) folded in: the logit is the score."""
    weights = _linear(prefix, head.out_proj)
    if isinstance(head, RegressionHead):
        std, mean = head.label_std.float().cpu(), head.label_mean.float().cpu()
        weights = {f"{prefix}.weight": weights[f"{prefix}.weight"] * std,
                   f"{prefix}.bias": weights[f"{prefix}.bias"] * std + mean}
    return weights


def standard_head(module: MuppetModule, task: str) -> tuple[type, dict[str, torch.Tensor], list[str]]:
    """(the Auto class, the head's tensors under the standard model's names, notes); NotStandard says why not."""
    names = [s.name for s in module.specs]
    if task not in names:
        raise NotStandard(f"'{task}' is not a task of this model; its tasks: {names}")
    head, config = module.head_of(names.index(task)), module.backbone.config
    kind, pooling = config.model_type, module.backbone.pooling
    prefix = "roberta" if kind in ROBERTA_LIKE else kind  # the standard classes' backbone attribute
    if module.backbone.is_encoder_decoder:
        raise NotStandard(f"task '{task}': {kind} is an encoder-decoder; its heads read the decoder state at the "
                          f"final EOS, which no standard class here is verified to reproduce (summarization needs no "
                          f"conversion: the export folder loads with AutoModelForSeq2SeqLM)")
    if isinstance(head, (ClassificationHead, MultipleChoiceHead)) and pooling != "first":
        why = {"mean": "no standard class averages the tokens",
               "pooler": "the standard classes have one dense+tanh over the first token, this head adds its own "
                         "after the backbone's pooler"}.get(pooling, "standard classes read the first token")
        raise NotStandard(f"task '{task}': {pooling} pooling: {why}; predict with lightning_modules.inference "
                          f"instead")
    if isinstance(head, ClassificationHead):
        notes = [("regression: the logit is the score in the task's units (the head's normalisation is folded into "
                 "the output layer); pipeline('text-classification') applies a sigmoid to a single logit unless "
                 "function_to_apply='none'")] if isinstance(head, RegressionHead) else []
        if kind in ROBERTA_LIKE:
            return (AutoModelForSequenceClassification,
                    {**_linear("classifier.dense", head.dense), **_out_proj(head, "classifier.out_proj")}, notes)
        if kind == "bert":
            return (AutoModelForSequenceClassification,
                    {**_linear(f"{prefix}.pooler.dense", head.dense), **_out_proj(head, "classifier")},
                    notes + ["the task head's dense+tanh is stored as BERT's pooler"])
        raise NotStandard(f"task '{task}': {kind}'s *ForSequenceClassification head is not dense+tanh+out_proj over "
                          f"the first token (supported: {', '.join(POOLED)})")
    if isinstance(head, MultipleChoiceHead):
        if kind not in POOLED:
            raise NotStandard(f"task '{task}': {kind}'s *ForMultipleChoice is not pooler(dense+tanh)+linear "
                              f"(supported: {', '.join(POOLED)})")
        return (AutoModelForMultipleChoice, {**_linear(f"{prefix}.pooler.dense", head.dense),
                                             **_linear("classifier", head.scorer)},
                ["the task head's dense+tanh is stored as the pooler"])
    if isinstance(head, SpanHead):
        return (AutoModelForQuestionAnswering, _linear("qa_outputs", head.qa_outputs),
                [("start/end logits equal on real tokens; answers are decoded by the pipeline's own post-processing "
                 "(this project's: max_answer_length, no-answer at the first token)")])
    if isinstance(head, TokenClassificationHead):
        return AutoModelForTokenClassification, _linear("classifier", head.classifier), \
            ["tags per sub-token; this project scores a word by its first sub-token"]
    raise NotStandard(f"task '{task}': no standard Hugging Face class reproduces its {type(head).__name__}")


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
