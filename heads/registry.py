"""The registry of heads: one line per family (its data side registers in datamodules/families/__init__.py). Which
head serves which task: a family's head is one per task, or one shared by the family's tasks where the family shares
by default or `model.shared_heads` names it (a generative head always reads the one LM head). `model.head_sharing`
scales per-task heads to hundreds of tasks (docs/heads.md): `label_set` gives the tasks of a family with the same
label set one head, `projection` gives a family's per-task heads one shared part (classification: the dense(H, H))."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from torch import nn

from core.errors import OptionError
from core.task_spec import TaskSpec
from heads import classification, multiple_choice, span, summarization, token_classification
from heads.base import Head, HeadContext


HeadSharing = Literal["per_task", "label_set", "projection"]


@dataclass(frozen=True)
class HeadFamily:
    build: Callable[..., Head]  # (spec, context) -> head; with `projection`: (spec, context, shared part) -> head
    shared_by_default: bool = False  # one head for all the family's tasks unless model.shared_heads says otherwise
    always_shared: bool = False  # one head whatever the option (e.g. a head over the backbone's own LM head)
    # head_sharing=label_set: tasks with the same value share one head (None: the task keeps its own)
    label_set: Callable[[TaskSpec], str | None] | None = None
    # head_sharing=projection: the part every per-task head of the family shares, built once
    projection: Callable[[HeadContext], nn.Module] | None = None


HEADS: dict[str, HeadFamily] = {
    "classification": HeadFamily(classification.build, label_set=classification.label_set,
                                 projection=classification.shared_projection),
    "multiple_choice": HeadFamily(multiple_choice.build, shared_by_default=True),
    "span": HeadFamily(span.build, shared_by_default=True),
    "summarization": HeadFamily(summarization.build, always_shared=True),
    "token_classification": HeadFamily(token_classification.build),
}


def head_key(spec: TaskSpec, shared: list[str] | None = None, sharing: HeadSharing = "per_task") -> str:
    """`family_<family>` for a head shared by the family's tasks, `labels_<label set>` under `label_set` for one
    shared by the tasks with that label set (classification: `labels_3`, `labels_3_<hash of the class names>`), else
    `task_<task>` (under `projection` too: those heads share the family's projection, not their key). shared: the
    families whose tasks share one head (None: each family's default)."""
    family = HEADS[spec.family]
    is_shared = family.always_shared or (family.shared_by_default if shared is None else spec.family in shared)
    if is_shared:
        return f"family_{spec.family}"
    labels = family.label_set(spec) if sharing == "label_set" and family.label_set is not None else None
    return f"labels_{labels}" if labels is not None else f"task_{spec.name}"


def build_heads(specs: list[TaskSpec], context: HeadContext, shared: list[str] | None = None,
                sharing: HeadSharing = "per_task") -> tuple[nn.ModuleDict, list[str]]:
    """(heads by key, the key of each task id). Generative heads need an encoder-decoder backbone. Under
    `projection` the per-task heads of a family hold the same shared module (its parameters appear once in
    `parameters()`, under every head in `state_dict()`)."""
    unknown = sorted(set(shared or []) - set(HEADS))
    if unknown:
        raise OptionError("model.shared_heads", f"names unknown families {unknown}; families: {list(HEADS)}")
    if sharing == "projection" and not context.dense:
        raise OptionError("model.head_sharing", "'projection' shares the heads' dense layer, and model.head_dense=false "
                                                "builds heads without one: use per_task or label_set")
    keys = [head_key(s, shared, sharing) for s in specs]
    heads, projections = nn.ModuleDict(), {}  # family -> its shared part under `projection`
    for spec, key in zip(specs, keys):
        family = HEADS[spec.family]
        if key in heads:
            continue
        if sharing == "projection" and family.projection is not None and key.startswith("task_"):
            if spec.family not in projections:
                projections[spec.family] = family.projection(context)
            heads[key] = family.build(spec, context, projections[spec.family])
        else:
            heads[key] = family.build(spec, context)
    generative = [s for s, key in zip(specs, keys) if heads[key].generative]
    if generative and not context.is_encoder_decoder:
        families = " and ".join(sorted({s.family for s in generative}))
        raise OptionError("model.backbone", f"{families} tasks need an encoder-decoder backbone (e.g. BART): "
                                            f"{[s.name for s in generative]}")
    return heads, keys
