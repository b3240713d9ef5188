"""The registry of task families, data side: one line per family. Its head registers in heads/registry.py."""

from __future__ import annotations

from datamodules.families.base import DataFamily
from datamodules.families.classification import Classification
from datamodules.families.multiple_choice import MultipleChoice
from datamodules.families.span import Span
from datamodules.families.summarization import Summarization
from datamodules.families.token_classification import TokenClassification

FAMILIES: dict[str, DataFamily] = {f.name: f for f in (
    Classification(),
    MultipleChoice(),
    Span(),
    Summarization(),
    TokenClassification(),
)}
