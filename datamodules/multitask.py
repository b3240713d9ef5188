"""MultiTaskDataModule: load -> validate -> preprocess (cached) -> mixed, length-grouped, rank-sharded batches."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
from datasets import Dataset, DatasetDict, load_dataset
from datasets.fingerprint import Hasher
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from core.batch import ROWS, SOURCE_INDEX
from core.errors import DataValidationError, OptionError, UserError
from core.handoff import DataHandoff
from core.pretrained import load_tokenizer
from core.task_spec import WEIGHT, TaskSpec
from datamodules.catalogue import DEFAULT_CATALOGUE, Catalogue
from datamodules.collate import MultiTaskCollator, MultiTaskDataset
from datamodules.eval_sampler import EvalBatchSampler
from datamodules.families import FAMILIES
from datamodules.from_data import needs_data, resolve, split_name, split_rows
from datamodules.holdout import carve
from datamodules.preprocess import Lengths, cache_key_parts, make_preprocess
from datamodules.sampler import MultiTaskBatchSampler, target_proportions
from datamodules.source_errors import check_text, load_error
from datamodules.subset import check_subset, train_subset
from datamodules.tasksource_source import check_installed, is_tasksource
from datamodules.tasksource_source import load as tasksource_load
from datamodules.validation import validate_split

DEFAULT_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "muppet")
DATA_ROOT_ENV = "MUPPET_DATA_ROOT"


class MultiTaskDataModule(L.LightningDataModule):
    def __init__(
        self,
        tasks: str | list[str] = "quickstart",
        tokenizer: str = "roberta-base",
        catalogue: list[str] | None = None,
        data_root: str | None = None,
        batch_size: int = 32,
        max_tokens: int | None = None,
        sampling: Literal["proportional", "temperature", "uniform"] = "proportional",
        temperature: float = 2.0,
        task_weights: dict[str, dict[str, float]] | None = None,
        max_examples_per_task: int | None = None,
        train_fraction: float | None = None,
        train_examples: int | None = None,
        epoch_size: int | None = None,
        homogeneous_batches: bool = False,
        batching: Literal["mixed", "task_per_batch", "task_per_update"] | None = None,
        group_by_length: bool = True,
        group_pool_size: int = 4096,
        max_length: int = 256,
        max_target_length: int = 64,
        doc_stride: int = 64,
        max_eval_examples: int | None = None,
        eval_batch_size: int | None = None,
        pad_to_multiple_of: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str = DEFAULT_CACHE,
        seed: int = 0,
    ) -> None:
        """
        Args:
            tasks: task names, family names and/or mixture names from the catalogue (e.g. `muppet`, `glue`, `rte`).
            tokenizer: hub id or local folder of the tokenizer (linked from the model's backbone by train.py).
            catalogue: YAML files or folders of task entries; default `configs/tasks`.
            data_root: folder of local copies of public datasets (e.g. `<root>/mrpc/train.jsonl`); entries with a
                `local` section are then read from it. Default: the environment variable MUPPET_DATA_ROOT, else none
                (hub sources).
            batch_size: examples per training batch (when `max_tokens` is not set).
            max_tokens: token budget per batch (rows x longest row, padding included); overrides `batch_size`.
            sampling: which task each example comes from: `proportional` (dataset sizes), `temperature`, `uniform`.
            temperature: T of `temperature` sampling, p ~ size^(1/T).
            task_weights: per selected task, `{sampling: x, loss: y}` overriding its entry's `sampling_weight` and
                `loss_weight` (numbers > 0): x multiplies how often it is drawn, y how much its loss counts.
            max_examples_per_task: cap on any task's examples per epoch (a catalogue entry's own cap wins).
            train_fraction: train on this fraction of each task's training split: a subset drawn with `seed`,
                nested across fractions (datamodules/subset.py); for data-efficiency (few-shot) studies.
            train_examples: train on this many examples of each task's training split (a subset as above).
            epoch_size: examples per epoch (all ranks); default the sum of the capped task sizes.
            homogeneous_batches: shorthand for `batching: task_per_batch`.
            batching: `mixed` (tasks mixed inside every batch), `task_per_batch` (one task per micro-batch, many
                tasks per update through ranks and gradient accumulation: the paper's scheme) or `task_per_update`
                (every micro-batch of an update from one task: the paper's homogeneous ablation).
            group_by_length: sort examples by length inside pools before cutting batches (less padding).
            group_pool_size: examples sorted together when grouping; smaller pools mix more tasks into each batch
                at the cost of more padding.
            max_length: encoder tokens per row; longer inputs are truncated (span QA: split into windows).
            max_target_length: summary tokens for summarization tasks.
            doc_stride: overlap in tokens between span-QA windows.
            max_eval_examples: cap on each task's validation/test examples (a catalogue entry's own cap wins).
            eval_batch_size: examples per evaluation batch; default `batch_size`.
            pad_to_multiple_of: pad the sequence axis to a multiple of this (8 helps tensor cores).
            num_workers: DataLoader worker processes.
            pin_memory: page-locked host memory for faster copies to the GPU.
            cache_dir: where tokenized datasets are cached; a second run with the same settings skips tokenization.
            seed: seed of the task sampler (the mixture and order are a function of seed and epoch).
        """
        super().__init__()
        check_subset(train_fraction, train_examples)
        for option, value in (("batch_size", batch_size), ("max_length", max_length),
                              ("eval_batch_size", eval_batch_size), ("max_tokens", max_tokens)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise OptionError(f"data.{option}", f"must be an integer >= 1, got {value!r}")
        data_root = data_root or os.environ.get(DATA_ROOT_ENV) or None
        # the tokenizer is the model's (linked by train.py): logged once, with the model's hyperparameters
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer_name = tokenizer
        self.specs: list[TaskSpec] = with_weights(
            Catalogue.load(catalogue or [DEFAULT_CATALOGUE], data_root).select(tasks), task_weights)
        check_installed(self.specs)  # an optional package a task needs: named now, before anything runs
        self._sources: dict[str, DatasetDict] = {}  # every split of a source read whole (tasksource, from_data)
        self._resolved = not any(needs_data(s) for s in self.specs)
        self.lengths = Lengths(max_length, max_target_length, doc_stride)
        self._tokenizer = None
        self.train_set: MultiTaskDataset | None = None
        self.eval_sets: dict[str, list[Dataset]] = {}
        self.sampler: MultiTaskBatchSampler | None = None
        self._resume: dict[str, int] | None = None
        self._lengths: tuple[list[np.ndarray], list[np.ndarray]] | None = None
        self._prepared = False

    # ---- what the model needs to know ----------------------------------------------------------------------------
    @property
    def task_specs(self) -> list[dict[str, Any]]:
        """The selected tasks as plain dicts, in task-id order (linked to `model.task_specs` by train.py); what an
        entry leaves to the data (datamodules/from_data.py) is read from it first."""
        self.resolve_specs()
        return [s.to_dict() for s in self.specs]

    def resolve_specs(self) -> None:
        """Settle what entries leave to the data (`from_data`, `features`), reading their sources; logged."""
        if self._resolved:
            return
        for i, spec in enumerate(self.specs):
            if needs_data(spec):
                self.specs[i], lines = resolve(spec, self._source(spec))
                for line in lines:
                    rank_zero_info(f"task '{spec.name}': {line}")
        self._resolved = True

    def _source(self, spec: TaskSpec) -> DatasetDict:
        """Every split of a task's source, read once: through tasksource's preprocessing for its entries."""
        if spec.name not in self._sources:
            try:
                data = tasksource_load(spec) if is_tasksource(spec) else load_dataset(**spec.load_kwargs())
            except UserError:
                raise
            except Exception as error:  # named by task, and for local files the file and line
                raise load_error(spec, "train", error) from error
            self._sources[spec.name] = data
        return self._sources[spec.name]

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name)
            if not self._tokenizer.is_fast:
                raise OptionError("data.tokenizer", f"'{self.tokenizer_name}' has no fast tokenizer (needed for "
                                                    f"offsets)")
        return self._tokenizer

    # ---- load, validate, preprocess ------------------------------------------------------------------------------
    def limit_max_length(self, limit: int) -> None:
        """Cap `max_length` at what the backbone can read (its position table), with a warning; called by train.py
        before anything is loaded."""
        if self.lengths.max_length > limit:
            rank_zero_warn(f"data.max_length {self.lengths.max_length} is beyond the backbone's {limit} positions: "
                           f"using {limit}", category=UserWarning)
            self.hparams.max_length = limit
            self.lengths = Lengths(limit, self.lengths.max_target_length, self.lengths.doc_stride)

    def raw_split(self, spec: TaskSpec, split: str) -> Dataset:
        """A task's raw split as the data module reads it: loaded, checked for encoding, carved, prepared by its
        family, subset and capped (what prediction lines are joined back to)."""
        if spec.name in self._sources or is_tasksource(spec):  # read whole already (or only so)
            source, name = self._source(spec), split_name(spec.splits[split])
            if name not in source:
                raise DataValidationError(f"task '{spec.name}', split '{split}': the data has no split '{name}' "
                                          f"(it has {sorted(source)})")
            dataset = split_rows(source[name], spec.splits[split], spec.name)  # a slice such as train[:10%]
        else:
            try:
                dataset = load_dataset(**spec.load_kwargs(), split=spec.splits[split])
            except Exception as error:  # noqa: BLE001 - named by task, split, and for local files the file and line
                raise load_error(spec, split, error) from error
        check_text(spec, split, dataset)
        dataset = carve(dataset, spec, split)  # catalogue field validation_from_train
        dataset = FAMILIES[spec.family].prepare_raw(spec, dataset, split)  # e.g. skip_labels, locate_answers
        if split == "train":  # data.train_fraction / data.train_examples, drawn from the (carved) train rows
            dataset = train_subset(dataset, self.hparams.train_fraction, self.hparams.train_examples,
                                   self.hparams.seed, spec.name)
        cap = (spec.max_eval_examples or self.hparams.max_eval_examples) if split != "train" else None
        return dataset.select(range(min(cap, len(dataset)))) if cap else dataset

    def _preprocessed(self, spec: TaskSpec, split: str, raw: Dataset | None = None) -> Dataset:
        raw = raw if raw is not None else self.raw_split(spec, split)
        for_eval = split != "train"
        key = Hasher.hash([raw._fingerprint, *cache_key_parts(spec, self.tokenizer, self.lengths, for_eval)])
        path = Path(self.hparams.cache_dir) / spec.name / f"{split}-{key}.arrow"
        path.parent.mkdir(parents=True, exist_ok=True)
        return raw.map(make_preprocess(spec, self.tokenizer, self.lengths, for_eval), batched=True,
                       with_indices=True, remove_columns=raw.column_names,
                       cache_file_name=str(path), load_from_cache_file=True, desc=f"tokenize {spec.name}/{split}",
                       new_fingerprint=key)  # `key` covers what the output depends on: no pickling of the tokenizer

    def _splits(self, stage: str | None) -> list[str]:
        return {"fit": ["train", "validation"], "validate": ["validation"], "test": ["test"],
                "predict": ["predict"]}.get(stage or "fit", ["train", "validation"])

    def prepare_data(self) -> None:
        """Runs on one process per node: load and check every split first, then tokenize into the cache (once per
        process: a `validate`/`test`/`predict` after `fit` finds it done)."""
        if self._prepared:
            return
        self.resolve_specs()
        raws = {}
        for spec in self.specs:
            for split in spec.splits:
                raws[spec.name, split] = raw = self.raw_split(spec, split)
                validate_split(spec, split, raw)
        rows = []
        for spec in self.specs:
            for split in spec.splits:
                self._preprocessed(spec, split, raws[spec.name, split])
            rows.append(f"  {spec.name:<28} {spec.family:<16} train {len(raws[spec.name, 'train']):>9,}  "
                        f"validation {len(raws[spec.name, 'validation']):>7,}")
        rank_zero_info(f"{len(self.specs)} task(s) selected:\n" + "\n".join(rows))
        self._prepared = True

    def setup(self, stage: str | None = None) -> None:
        self.resolve_specs()
        splits = self._splits(stage)
        if "train" in splits:
            self.train_set = MultiTaskDataset([self._preprocessed(s, "train") for s in self.specs])
            self._lengths = None
        for split in splits:
            if split == "predict":  # each task's test split where it has one, else its validation split
                self.eval_sets[split] = [self._preprocessed(s, "test" if "test" in s.splits else "validation")
                                         for s in self.specs]
            elif split != "train":
                self.eval_sets[split] = [self._preprocessed(s, split) if split in s.splits else None
                                         for s in self.specs]

    # ---- loaders -------------------------------------------------------------------------------------------------
    def _collator(self) -> MultiTaskCollator:
        return MultiTaskCollator([FAMILIES[s.family] for s in self.specs], self.tokenizer.pad_token_id,
                                 self.hparams.pad_to_multiple_of)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _length_columns(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(tokens, rows) of every training example, read once as Arrow -> numpy columns."""
        if self._lengths is None:
            def column(ds: Dataset, name: str) -> np.ndarray:  # `ds[name]` is a lazy Column: read all rows at once
                return np.asarray(ds.with_format("numpy", columns=[name])[:][name], dtype=np.int64)
            datasets = self.train_set.datasets
            self._lengths = ([column(ds, "length") for ds in datasets],
                             [column(ds, ROWS) if ROWS in ds.column_names else np.ones(len(ds), dtype=np.int64)
                              for ds in datasets])
        return self._lengths

    def train_dataloader(self) -> DataLoader:
        """A fresh sampler for the trainer's current epoch (train.py reloads the loader every epoch: batch counts
        vary with the draw); on resume it skips the batches the checkpoint says were done."""
        world_size, rank = self._world()
        trainer = self.trainer
        epoch = trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0
        if trainer is not None and trainer.reload_dataloaders_every_n_epochs != 1:
            rank_zero_warn("the task sampler draws a new plan every epoch and its batch count varies: run the Trainer "
                           "with reload_dataloaders_every_n_epochs=1 (train.py does) so that Lightning sees each "
                           "epoch's length", category=UserWarning)
        lengths, rows = self._length_columns()
        caps = [s.max_train_examples or self.hparams.max_examples_per_task for s in self.specs]
        weights = [s.sampling_weight or 1.0 for s in self.specs]
        self.sampler = MultiTaskBatchSampler(
            lengths, rows, strategy=self.hparams.sampling,
            temperature=self.hparams.temperature, caps=caps, batch_size=self.hparams.batch_size,
            max_tokens=self.hparams.max_tokens, homogeneous=self.hparams.homogeneous_batches,
            batching=self.hparams.batching, accumulate=trainer.accumulate_grad_batches if trainer else 1,
            group_by_length=self.hparams.group_by_length, pool_size=self.hparams.group_pool_size,
            epoch_size=self.hparams.epoch_size, num_replicas=world_size, rank=rank, seed=self.hparams.seed,
            epoch=epoch, weights=weights)
        if self._resume:
            self.sampler.resume_from(self._resume["epoch"], self._resume["batches_done"])
            self._resume = None
        return DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=self._collator(),
                          num_workers=self.hparams.num_workers, persistent_workers=False,
                          pin_memory=self.hparams.pin_memory)

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        world_size, rank = self._world()
        loaders = []
        for task_id, (spec, dataset) in enumerate(zip(self.specs, self.eval_sets[split])):
            if dataset is None:
                continue
            # rows of one example (span-QA windows) carry its index and stay in one batch
            groups = (dataset.select_columns([SOURCE_INDEX])[:][SOURCE_INDEX]  # one read, not one per row
                      if SOURCE_INDEX in dataset.column_names else None)
            sampler = EvalBatchSampler(len(dataset), self.hparams.eval_batch_size or self.hparams.batch_size,
                                       groups, world_size, rank)
            loaders.append(DataLoader(MultiTaskDataset([dataset], [task_id]), batch_sampler=sampler,
                                      collate_fn=self._collator(), num_workers=self.hparams.num_workers))
        return loaders

    def handoff(self) -> DataHandoff:
        """What the model needs from the loaded data (core/handoff.py), after `setup("fit")`: each task's training
        statistics from its family, the sampler's target proportions (sampling weights included), the evaluation batch
        size."""
        statistics = {}
        for spec, dataset in zip(self.specs, self.train_set.datasets if self.train_set else []):
            stats = FAMILIES[spec.family].train_statistics(spec, dataset)
            if stats is not None:
                statistics[spec.name] = stats
        proportions = {}
        if self.train_set is not None:
            caps = [s.max_train_examples or self.hparams.max_examples_per_task for s in self.specs]
            sizes = [min(len(ds), cap) if cap else len(ds) for ds, cap in zip(self.train_set.datasets, caps)]
            shares = target_proportions(sizes, self.hparams.sampling, self.hparams.temperature,
                                        [s.sampling_weight or 1.0 for s in self.specs])
            proportions = {s.name: float(p) for s, p in zip(self.specs, shares)}
        return DataHandoff(statistics, proportions, self.hparams.eval_batch_size or self.hparams.batch_size)

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("validation")

    def test_dataloader(self) -> list[DataLoader]:
        if not any("test" in s.splits for s in self.specs):
            rank_zero_warn("no selected task has a 'test' split in its catalogue entry: nothing to test "
                           "(`validate` evaluates the validation splits)")
        return self._eval_loaders("test")

    def predict_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("predict")

    # ---- exact resume --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.trainer is None or self.sampler is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": self.trainer.current_epoch, "batches_done": done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = dict(state) if state else None


WEIGHT_KEYS = {"sampling": "sampling_weight", "loss": "loss_weight"}


def with_weights(specs: list[TaskSpec], task_weights: dict[str, dict[str, float]] | None) -> list[TaskSpec]:
    """The selected specs with `data.task_weights` applied over their entries' weights (copies: the catalogue's
    own specs stay as read)."""
    names = [s.name for s in specs]
    for task, weights in (task_weights or {}).items():
        if task not in names:
            raise OptionError("data.task_weights", f"names task '{task}', which is not selected; selected: {names}")
        if not isinstance(weights, dict) or not weights or set(weights) - set(WEIGHT_KEYS):
            raise OptionError("data.task_weights", f"task '{task}': expected a mapping with 'sampling' and/or 'loss', "
                                                   f"got {weights!r}")
        for key, value in weights.items():
            if not WEIGHT[0](value):
                raise OptionError("data.task_weights", f"task '{task}': '{key}' must be {WEIGHT[1]}, got {value!r}")
    return [dataclasses.replace(s, **{WEIGHT_KEYS[k]: float(v) for k, v in task_weights[s.name].items()})
            if s.name in (task_weights or {}) else s for s in specs]
