"""Rows of many tasks -> one padded batch (the contract in core/batch.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import Dataset as TorchDataset

from core.batch import SOURCE_INDEX, BatchKey
from datamodules.families.base import DataFamily


class PaddingBatch(list):
    """Indices of a filler evaluation batch: a rank with fewer examples runs it so that every rank steps equally
    often (under FSDP every forward is a collective); its rows carry `is_padding` and count in no metric."""


class MultiTaskDataset(TorchDataset):
    """Concatenation of per-task preprocessed datasets; global index = task offset + local index.
    `__getitems__` fetches a batch task by task with one Arrow read each."""

    def __init__(self, datasets: list[Dataset], task_ids: list[int] | None = None) -> None:
        """task_ids: the task id of each dataset (default 0, 1, ...)."""
        self.datasets = datasets
        self.task_ids = task_ids or list(range(len(datasets)))
        self.offsets = [0]
        for ds in datasets:
            self.offsets.append(self.offsets[-1] + len(ds))
        self._ends = np.asarray(self.offsets[1:], dtype=np.int64)  # task t holds [offsets[t], ends[t])

    def __len__(self) -> int:
        return self.offsets[-1]

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} rows")
        task = int(np.searchsorted(self._ends, index, side="right"))
        return task, index - self.offsets[task]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """Each index's task by binary search over the offsets (vectorised), then one Arrow read per task."""
        flat = np.asarray(indices, dtype=np.int64).reshape(-1)  # (N,)
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"an index is out of range for {len(self)} rows")
        tasks = np.searchsorted(self._ends, flat, side="right")  # (N,)
        local = flat - np.asarray(self.offsets, dtype=np.int64)[tasks]  # (N,) row index in its dataset
        order = np.argsort(tasks, kind="stable")  # positions grouped by task, ascending inside each task
        present, firsts = np.unique(tasks[order], return_index=True)
        rows: list[dict[str, Any] | None] = [None] * len(flat)
        for task, positions in zip(present.tolist(), np.split(order, firsts[1:])):
            wanted = local[positions].tolist()
            columns = self.datasets[task][wanted]
            for k, p in enumerate(positions.tolist()):
                rows[p] = {"task_id": self.task_ids[task], "index": wanted[k],  # row index in its dataset
                           **{name: values[k] for name, values in columns.items()}}
        if isinstance(indices, PaddingBatch):
            for row in rows:
                row["is_padding"] = True
        return rows


def pad(sequences: list[list[int]], value: int, multiple_of: int | None = None) -> torch.Tensor:
    width = max(map(len, sequences))
    if multiple_of:
        width = -(-width // multiple_of) * multiple_of
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        out[i, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


class MultiTaskCollator:
    """Examples -> rows -> one padded batch (core/batch.py). An example of a `multi_row` family becomes one row per
    encoding; each family's own columns are collated by the kind its `BatchKey`s declare."""

    def __init__(self, families: list[DataFamily], pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        """families: the data-side family of each task id."""
        self.families, self.pad_token_id, self.pad_to_multiple_of = families, pad_token_id, pad_to_multiple_of
        keys: dict[str, BatchKey] = {}
        for key in (k for f in families for k in f.batch_keys):
            if keys.setdefault(key.key, key) != key:
                raise ValueError(f"batch key '{key.key}' is declared twice with different columns or kinds: "
                                 f"{keys[key.key]} and {key}")
        self.keys = list(keys.values())

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        seqs, types, task_ids, example_ids, split_index = [], [], [], [], []
        values: dict[str, list] = {key.key: [] for key in self.keys}
        for e, ex in enumerate(examples):
            multiple = self.families[ex["task_id"]].multi_row
            encodings = ex["input_ids"] if multiple else [ex["input_ids"]]
            segments = ex.get("token_type_ids")
            segments = [None] * len(encodings) if segments is None else segments if multiple else [segments]
            for ids, segment in zip(encodings, segments):
                seqs.append(ids)
                types.append(segment)
                task_ids.append(ex["task_id"])
                example_ids.append(e)
                split_index.append(ex.get(SOURCE_INDEX, ex.get("index", -1)))  # rows of an example: its index
                for key in self.keys:
                    values[key.key].append(ex.get(key.column))
        input_ids = pad(seqs, self.pad_token_id, self.pad_to_multiple_of)
        batch: dict[str, Any] = {
            "input_ids": input_ids,  # (R, T)
            "attention_mask": (torch.arange(input_ids.shape[1]) < torch.tensor([[len(s)] for s in seqs])).long(),
            "task_ids": torch.tensor(task_ids), "example_ids": torch.tensor(example_ids),
            "split_index": torch.tensor(split_index),  # (R,) the example's index in its split (predictions)
        }
        if any(t is not None for t in types):  # BERT-family segment ids; tokenizers like RoBERTa's make none
            batch["token_type_ids"] = torch.zeros_like(input_ids)  # (R, T), padded with 0
            for row, segment in enumerate(types):
                batch["token_type_ids"][row, :len(segment or [])] = torch.as_tensor(segment or [], dtype=torch.long)
        for key in self.keys:
            column = values[key.key]
            if all(v is None for v in column):
                continue
            if key.kind in ("row_float", "row_long"):  # (R,), 0 on other families' rows
                dtype = torch.float if key.kind == "row_float" else torch.long
                batch[key.key] = torch.tensor([0 if v is None else v for v in column], dtype=dtype)
            elif key.kind == "sequence":  # (R, L)
                batch[key.key] = pad([v or [-100] for v in column], -100, self.pad_to_multiple_of)
            elif key.kind == "token":  # (R, T), aligned with input_ids
                aligned = torch.full_like(input_ids, -100)
                for row, v in enumerate(column):
                    aligned[row, :len(v or [])] = torch.as_tensor(v or [], dtype=torch.long)
                batch[key.key] = aligned
            else:  # list
                batch[key.key] = column
        if any(ex.get("is_padding") for ex in examples):  # a filler evaluation batch (PaddingBatch)
            batch["is_padding"] = True
        return batch
