"""Validation, test and predict of MuppetModule: per-task losses and metrics, `val/<task>/<metric>`, `val/score`.
Each task's head turns its logits into predictions and metric updates (heads/base.py); nothing here names a family.

Contracts with distributed evaluation (under FSDP every forward and every generation is a collective):
- a batch may carry `is_padding: True`, a filler that a rank runs only so that all ranks step equally often: it runs
  the forward (and the generation, where the task generates) as a real batch does, and updates nothing;
- `generate` runs with `synced_gpus=True` when there is more than one rank;
- whether a batch is generated depends only on its index in its dataloader and the configured batch size, which are
  the same on every rank.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MeanMetric

from heads.base import Decoding

STAGE_PREFIX = {"val": "val", "test": "test"}


class EvaluationMixin:
    """`val/score` = mean over tasks of each task's first (primary) metric, the value checkpointing monitors."""

    # what validation and test log under (`<prefix>/<task>/<metric>`); the end-of-fit evaluation sets
    # {"val": "final", "test": "final_test"} while it runs (lightning_modules/after_fit.py)
    eval_prefixes: dict[str, str] = STAGE_PREFIX

    def _setup_evaluation(self) -> None:
        self.eval_metrics = nn.ModuleDict({s.name: self.head_of(t).make_metrics(s) for t, s in enumerate(self.specs)})
        self.eval_losses = nn.ModuleDict({s.name: MeanMetric() for s in self.specs})

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, batch_idx)

    def _eval_step(self, batch: dict, batch_idx: int) -> None:
        padding = bool(batch.get("is_padding", False))
        _, logits = self(batch)
        losses = self.task_losses(batch, logits)
        for task, (rows, task_logits) in logits.items():
            head, decoding, name = self.head_of(task), self._decoding(task), self.specs[task].name
            scored = not head.generative or self._generation_due(batch_idx, int(batch["example_ids"].max()) + 1)
            if padding:
                if head.generative and scored:
                    head.predict(task_logits, batch, rows, decoding)  # the same collective generation; discarded
                continue
            self.eval_losses[name].update(losses[task][0])
            if scored:
                head.update_metrics(self.eval_metrics[name], task_logits, batch, rows, decoding)

    def _world_size(self) -> int:
        try:
            return self.trainer.world_size
        except RuntimeError:  # not attached to a Trainer (a module used on its own)
            return 1

    def _generation_due(self, batch_idx: int, examples: int) -> bool:
        """Generate (and score) the batches of a task that together hold about `max_generation_examples` examples
        over all ranks: the first k batches of each dataloader, k from the evaluation batch size the data hands over
        (this batch's size where none was handed over), the same k on every rank."""
        per_batch = self.data.eval_batch_size or examples
        return batch_idx * per_batch * self._world_size() < self.hparams.max_generation_examples

    def _decoding(self, task: int) -> Decoding:
        return Decoding(spec=self.specs[task], tokenizer=self.tokenizer, generate=self._generate,
                        max_answer_length=self.hparams.max_answer_length)

    def _generate(self, batch: dict, rows: torch.Tensor) -> torch.Tensor:
        sub = {"input_ids": batch["input_ids"][rows], "attention_mask": batch["attention_mask"][rows]}
        return self.backbone.generate(sub, num_beams=self.hparams.num_beams, max_new_tokens=self.hparams.max_new_tokens,
                                      synced_gpus=self._world_size() > 1)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        """One record per example, {task, index, prediction}: the example's index in its split and the prediction
        as its head gives it: {label, probabilities} (classification), a score in the task's units (regression), a
        choice index, an answer text, a summary. A padding batch runs the same forward and generation and returns
        no records."""
        _, logits = self(batch)
        records = []
        for task, (rows, task_logits) in logits.items():
            predictions = self.head_of(task).predict(task_logits, batch, rows, self._decoding(task))
            # the rows of one example (choices, span windows) are contiguous and share its index; None: rows that
            # did not come from a MultiTaskDataset
            known = "split_index" in batch and bool((batch["split_index"][rows] >= 0).all())
            indices = torch.unique_consecutive(batch["split_index"][rows]).tolist() if known \
                else [None] * len(predictions)
            assert len(indices) == len(predictions), (len(indices), len(predictions))
            records += [{"task": self.specs[task].name, "index": i, "prediction": p}
                        for i, p in zip(indices, predictions)]
        return [] if batch.get("is_padding", False) else records

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def _log_eval(self, stage: str) -> None:
        primary, lines = [], []
        prefix = self.eval_prefixes[stage]
        for task, spec in enumerate(self.specs):
            if stage == "test" and "test" not in spec.splits:  # no labelled test split: not evaluated
                continue
            values = self.eval_metrics[spec.name].compute()  # synced across ranks by torchmetrics
            loss = self.eval_losses[spec.name].compute()
            self.log(f"{prefix}/{spec.name}/loss", loss)
            for name, value in values.items():
                self.log(f"{prefix}/{spec.name}/{name}", value)
            shown = "  ".join(f"{name} {float(value):.4f}" for name, value in values.items())
            lines.append(f"  {spec.name:<28} loss {float(loss):.4f}  {shown}")
            primary.append(values[spec.metrics[0]].float())
            self.eval_metrics[spec.name].reset()
            self.eval_losses[spec.name].reset()
        if not primary:
            return
        score = torch.stack(primary).nan_to_num(0.0).mean()
        self.log(f"{prefix}/score", score, prog_bar=True)
        if not self.trainer.sanity_checking:
            rank_zero_info(f"{prefix} at step {self.global_step}: score {float(score):.4f}\n" + "\n".join(lines))
