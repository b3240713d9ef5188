"""Validation and test of MuppetModule: per-task losses and metrics, `val/<task>/<metric>`, `val/score`."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MeanMetric

from heads.span import decode_answers
from lightning_modules.metrics import TaskMetrics


class EvaluationMixin:
    """`val/score` = mean over tasks of each task's first (primary) metric, the value checkpointing monitors."""

    def _setup_evaluation(self) -> None:
        self.eval_metrics = nn.ModuleDict({s.name: TaskMetrics(s.metrics, max(2, s.num_labels or 2))
                                           for s in self.specs})
        self.eval_losses = nn.ModuleDict({s.name: MeanMetric() for s in self.specs})
        self._generated = {s.name: 0 for s in self.specs}

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch)

    def _eval_step(self, batch: dict) -> None:
        _, logits = self(batch)
        for task, (scaled, _) in self.task_losses(batch, logits).items():
            spec = self.specs[task]
            self.eval_losses[spec.name].update(scaled)
            rows, task_logits = logits[task]
            self._update_metrics(task, batch, rows, task_logits)

    def _update_metrics(self, task: int, batch: dict, rows: torch.Tensor, logits: torch.Tensor) -> None:
        spec, head, metrics = self.specs[task], self.head_of(task), self.eval_metrics[self.specs[task].name]
        if spec.family == "classification":
            metrics.update_labels(head.predict(logits), batch["labels"][rows])
        elif spec.family == "multiple_choice":
            metrics.update_labels(logits.argmax(-1), head.targets(batch, rows))
        elif spec.family == "span":
            answers = self._answers(task, batch, rows, logits)
            golds = {batch["example_index"][r]: batch["gold_answers"][r] for r in rows.tolist()}
            metrics.update_answers(list(answers.values()), [golds[e] for e in answers])
        elif self._generated[spec.name] < self.hparams.max_generation_examples:
            self._generated[spec.name] += len(rows)
            targets = batch["target_ids"][rows].masked_fill(batch["target_ids"][rows] == -100,
                                                           self.tokenizer.pad_token_id)
            metrics.update_texts(self._summaries(batch, rows), self.tokenizer.batch_decode(targets,
                                                                                          skip_special_tokens=True))

    def _summaries(self, batch: dict, rows: torch.Tensor) -> list[str]:
        sub = {"input_ids": batch["input_ids"][rows], "attention_mask": batch["attention_mask"][rows]}
        generated = self.backbone.generate(sub, num_beams=self.hparams.num_beams,
                                           max_new_tokens=self.hparams.max_new_tokens)
        return self.tokenizer.batch_decode(generated, skip_special_tokens=True)

    def _answers(self, task: int, batch: dict, rows: torch.Tensor, logits: torch.Tensor) -> dict[int, str]:
        picked = rows.tolist()
        return decode_answers(logits, [batch["example_index"][r] for r in picked],
                              [batch["offsets"][r] for r in picked], [batch["contexts"][r] for r in picked],
                              self.specs[task].allow_no_answer, self.hparams.max_answer_length)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        """One record per example: {task, prediction}: a class id or score, a choice index, an answer text or a
        generated summary."""
        _, logits = self(batch)
        records = []
        for task, (rows, task_logits) in logits.items():
            spec, head = self.specs[task], self.head_of(task)
            if spec.family == "classification":
                predictions = head.predict(task_logits).tolist()
            elif spec.family == "multiple_choice":
                predictions = task_logits.argmax(-1).tolist()
            elif spec.family == "span":
                predictions = list(self._answers(task, batch, rows, task_logits).values())
            else:
                predictions = self._summaries(batch, rows)
            records += [{"task": spec.name, "prediction": p} for p in predictions]
        return records

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def _log_eval(self, stage: str) -> None:
        primary, lines = [], []
        datamodule = getattr(self.trainer, "datamodule", None)
        evaluated = set(datamodule.eval_task_ids(stage if stage == "test" else "validation")) \
            if hasattr(datamodule, "eval_task_ids") else None
        for task, spec in enumerate(self.specs):
            if evaluated is not None and task not in evaluated:  # e.g. no labelled test split
                continue
            values = self.eval_metrics[spec.name].compute()  # synced across ranks by torchmetrics
            loss = self.eval_losses[spec.name].compute()
            self.log(f"{stage}/{spec.name}/loss", loss)
            for name, value in values.items():
                self.log(f"{stage}/{spec.name}/{name}", value)
            shown = "  ".join(f"{name} {float(value):.4f}" for name, value in values.items())
            lines.append(f"  {spec.name:<28} loss {float(loss):.4f}  {shown}")
            primary.append(values[spec.metrics[0]].float())
            self.eval_metrics[spec.name].reset()
            self.eval_losses[spec.name].reset()
            self._generated[spec.name] = 0
        if not primary:
            return
        score = torch.stack(primary).nan_to_num(0.0).mean()
        self.log(f"{stage}/score", score, prog_bar=True)
        if not self.trainer.sanity_checking:
            rank_zero_info(f"{stage} at step {self.global_step}: score {float(score):.4f}\n" + "\n".join(lines))
