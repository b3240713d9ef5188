"""Which head serves which task, the model side's one place that names families: one classification (or regression)
head per task; multiple-choice and span heads shared by their family (or per task); one summarization head over the
backbone's LM head. A new family adds its head class to `make_head` (and its sharing rule to `head_key`)."""

from __future__ import annotations

from torch import nn

from datamodules.catalogue import TaskSpec
from heads.base import Head
from heads.classification import ClassificationHead, RegressionHead
from heads.multiple_choice import MultipleChoiceHead
from heads.span import SpanHead
from heads.summarization import SummarizationHead
from lightning_modules.backbone import Backbone


def head_key(spec: TaskSpec, shared_multiple_choice: bool, shared_span: bool) -> str:
    shared = {"multiple_choice": shared_multiple_choice, "span": shared_span, "summarization": True}
    return f"family_{spec.family}" if shared.get(spec.family) else f"task_{spec.name}"


def make_head(spec: TaskSpec, backbone: Backbone, dropout: float, label_smoothing: float) -> Head:
    hidden = backbone.hidden_size
    if spec.family == "classification":
        return RegressionHead(hidden, dropout) if spec.is_regression else ClassificationHead(hidden, spec.num_labels,
                                                                                             dropout)
    if spec.family == "multiple_choice":
        return MultipleChoiceHead(hidden, dropout)
    if spec.family == "span":
        return SpanHead(hidden)
    if spec.family == "summarization":
        return SummarizationHead(backbone.config.vocab_size, label_smoothing)
    raise ValueError(f"task '{spec.name}': no head for family '{spec.family}' (lightning_modules/heads_factory.py)")


def build_heads(specs: list[TaskSpec], backbone: Backbone, dropout: float, label_smoothing: float,
                shared_multiple_choice: bool, shared_span: bool) -> tuple[nn.ModuleDict, list[str]]:
    """(heads by key, the key of each task id). Generative heads need an encoder-decoder backbone."""
    keys = [head_key(s, shared_multiple_choice, shared_span) for s in specs]
    heads = nn.ModuleDict()
    for spec, key in zip(specs, keys):
        if key not in heads:
            heads[key] = make_head(spec, backbone, dropout, label_smoothing)
    generative = [s for s, key in zip(specs, keys) if heads[key].generative]
    if generative and not backbone.is_encoder_decoder:
        families = " and ".join(sorted({s.family for s in generative}))
        raise ValueError(f"{families} tasks need an encoder-decoder backbone (e.g. BART): "
                         f"{[s.name for s in generative]}")
    return heads, keys
