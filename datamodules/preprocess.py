"""Tokenization of a task's split: the family's batched `preprocess(examples, indices)` (datamodules/families/), run
under `dataset.map(batched=True, with_indices=True)` with a fast tokenizer, and what its cached output depends on.

Every family writes `input_ids` (and `token_type_ids` when the tokenizer returns them: BERT-family segment ids, kept
as run_glue keeps the whole encoding) and `length` (tokens the example costs in a batch; a family with several rows
per example counts all of them and also writes `rows`). Each family's own columns are its batch keys.
"""

from __future__ import annotations

from typing import Any, Callable

from transformers import PreTrainedTokenizerBase

from core.task_spec import TaskSpec
from datamodules.families import FAMILIES
from datamodules.families.base import Lengths

PREPROCESS_VERSION = 4  # bump when the output of a preprocess function changes: it invalidates the cache
__all__ = ["Lengths", "cache_key_parts", "make_preprocess"]


def make_preprocess(spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths, for_eval: bool) -> Callable:
    """The batched `preprocess(examples, indices=None)` of the task's family."""
    return FAMILIES[spec.family].preprocess(spec, tok, lengths, for_eval)


def cache_key_parts(spec: TaskSpec, tok: PreTrainedTokenizerBase, lengths: Lengths, for_eval: bool) -> list[Any]:
    """What the preprocessed output depends on, besides the raw data's own fingerprint."""
    ignored = ("metrics", "id", "sampling_weight", "loss_weight", "license")  # what does not change the tokenized rows
    return [PREPROCESS_VERSION, {k: v for k, v in spec.to_dict().items() if k not in ignored},
            tok.name_or_path, type(tok).__name__, len(tok), lengths, for_eval]
