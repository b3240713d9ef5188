"""The batch contract between the collator (`datamodules/collate.py`) and the model (`lightning_modules/`, `heads/`).

Every batch holds, for R rows (a multiple-choice example is one row per choice; a long span-QA context one row per
window): `input_ids` (R, T), `attention_mask` (R, T), `token_type_ids` (R, T) where the tokenizer makes segment ids,
`task_ids` (R,), `example_ids` (R,) (rows of one example share it, contiguous), `split_index` (R,) (the example's
index in its split), and `is_padding: True` on filler evaluation batches. A family adds its own keys, declared as
`BatchKey`s in its data-side file; the collator pads them by their `kind` and never names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

# preprocessed columns every family may write (the generic part of the contract)
LENGTH = "length"  # tokens the example costs in a batch (all its rows)
ROWS = "rows"  # batch rows the example becomes (families with several rows per example write it)
SOURCE_INDEX = "example_index"  # evaluation rows of one example: the example's index in its split (span windows)

Kind = Literal["row_float", "row_long", "sequence", "token", "list"]


@dataclass(frozen=True)
class BatchKey:
    """A preprocessed `column` a family adds, collated into batch `key` by its `kind`:
    row_float / row_long: one value per example, repeated on each of its rows -> (R,), 0 on other families' rows;
    sequence: ids per row -> (R, L) padded with -100 (to `pad_to_multiple_of`), -100 rows elsewhere;
    token: one value per input token -> (R, T) aligned with `input_ids`, padded with -100;
    list: any value per row, kept as a Python list (evaluation columns such as offsets); None elsewhere."""

    column: str
    key: str
    kind: Kind


@dataclass
class BackboneOutput:
    hidden: torch.Tensor  # (R, T, H) token states: encoder output, or BART's decoder reading the same tokens
    pooled: torch.Tensor  # (R, H) per `model.pooling`: first token, masked mean, the model's pooler or the final EOS
    lm_logits: torch.Tensor | None = None  # (R_lm, L, V) rows of generative heads only, in batch order
    lm_rows: torch.Tensor | None = None  # (R_lm,) the batch rows `lm_logits` belongs to (ascending)
