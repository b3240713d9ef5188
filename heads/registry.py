"""The registry of heads: one line per family (its data side registers in datamodules/families/__init__.py). Which
head serves which task: a family's head is one per task, or one shared by the family's tasks where the family shares
by default or `model.shared_heads` names it (a generative head always reads the one LM head)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from core.errors import OptionError
from core.task_spec import TaskSpec
from heads import classification, multiple_choice, span, summarization, token_classification
from heads.base import Head, HeadContext


@dataclass(frozen=True)
class HeadFamily:
    build: Callable[[TaskSpec, HeadContext], Head]
    shared_by_default: bool = False  # one head for all the family's tasks unless model.shared_heads says otherwise
    always_shared: bool = False  # one head whatever the option (e.g. a head over the backbone's own LM head)


HEADS: dict[str, HeadFamily] = {
    "classification": HeadFamily(classification.build),
    "multiple_choice": HeadFamily(multiple_choice.build, shared_by_default=True),
    "span": HeadFamily(span.build, shared_by_default=True),
    "summarization": HeadFamily(summarization.build, always_shared=True),
    "token_classification": HeadFamily(token_classification.build),
}


def head_key(spec: TaskSpec, shared: list[str] | None = None) -> str:
    """`family_<family>` for a head shared by the family's tasks, else `task_<task>`. shared: the families whose
    tasks share one head (None: each family's default)."""
    family = HEADS[spec.family]
    is_shared = family.always_shared or (family.shared_by_default if shared is None else spec.family in shared)
    return f"family_{spec.family}" if is_shared else f"task_{spec.name}"


def build_heads(specs: list[TaskSpec], context: HeadContext, shared: list[str] | None = None
                ) -> tuple[nn.ModuleDict, list[str]]:
    """(heads by key, the key of each task id). Generative heads need an encoder-decoder backbone."""
    unknown = sorted(set(shared or []) - set(HEADS))
    if unknown:
        raise OptionError("model.shared_heads", f"names unknown families {unknown}; families: {list(HEADS)}")
    keys = [head_key(s, shared) for s in specs]
    heads = nn.ModuleDict()
    for spec, key in zip(specs, keys):
        if key not in heads:
            heads[key] = HEADS[spec.family].build(spec, context)
    generative = [s for s, key in zip(specs, keys) if heads[key].generative]
    if generative and not context.is_encoder_decoder:
        families = " and ".join(sorted({s.family for s in generative}))
        raise OptionError("model.backbone", f"{families} tasks need an encoder-decoder backbone (e.g. BART): "
                                            f"{[s.name for s in generative]}")
    return heads, keys
