"""MuppetModule: one backbone forward per mixed batch, per-family heads, losses scaled by 1/log n(task)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from core.batch import BackboneOutput
from core.errors import OptionError
from core.handoff import DataHandoff
from core.pretrained import load_tokenizer
from core.task_spec import TaskSpec
from datamodules.catalogue import spec_from_dict
from datamodules.sampler import total_variation
from heads.base import Head, HeadContext
from heads.registry import HeadSharing, build_heads
from lightning_modules.backbone import Backbone, Pooling, build_backbone, tokenizer_source
from lightning_modules.checkpoint_files import checkpoint_parts, rebuild_parts
from lightning_modules.evaluation import EvaluationMixin
from lightning_modules.export import save_export
from lightning_modules.init_from import load_initial_weights
from lightning_modules.optim import PaperAdamW, decay_groups, linear_warmup_decay
from lightning_modules.r3f import symmetric_kl
from lightning_modules.update import NonFiniteLossError, UpdateWindow, seed_step


class MuppetModule(EvaluationMixin, L.LightningModule):
    def __init__(
        self,
        backbone: str | None = "roberta-base",
        backbone_config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        task_specs: list[dict[str, Any]] | None = None,
        loss_scaling: Literal["log", "none"] = "log",
        shared_heads: list[str] | None = None,
        head_sharing: HeadSharing = "per_task",
        head_dense: bool = True,
        dropout: float = 0.1,
        label_smoothing: float = 0.1,
        optimizer: OptimizerCallable = PaperAdamW,
        scheduler: LRSchedulerCallable | None = None,
        warmup: float = 0.06,
        r3f_lambda: float = 0.0,
        r3f_noise: Literal["uniform", "normal"] = "uniform",
        r3f_eps: float = 1e-5,
        max_answer_length: int = 30,
        num_beams: int = 4,
        max_new_tokens: int = 64,
        max_generation_examples: int = 200,
        init_from: str | None = None,
        reuse_heads: bool = False,
        skip_nonfinite: bool = False,
        pooling: Pooling = "auto",
        length_chunks: int | None = None,
        log_task_mixture_up_to: int = 32,
    ) -> None:
        """
        Args:
            backbone: hub id or folder for `from_pretrained` (a tokenizer and config are read from it too).
            backbone_config: build a randomly initialised backbone from this config instead (`model_type` plus
                config fields, e.g. {model_type: roberta, hidden_size: 64}); vocabulary size comes from the tokenizer.
            tokenizer: hub id or folder of the tokenizer; default the backbone's.
            task_specs: the selected tasks (catalogue entries), linked from `data.tasks` by train.py.
            loss_scaling: `log` divides each example's loss by log n(task) (the paper's), `none` leaves it.
            shared_heads: families whose tasks share one head (e.g. [multiple_choice, span]); default each family's
                own rule: one scorer for the multiple-choice family (the paper's), one start/end head for span QA,
                one per task for classification (and token classification).
            head_sharing: `per_task` heads (the paper's), `label_set` (one classification head per label set, e.g.
                every 3-way NLI task) or `projection` (one dense(H, H) shared, out_proj per task); docs/heads.md.
            head_dense: classification and multiple-choice heads put dense(H, H) + tanh before their output layer
                (RoBERTa's heads, the paper's); false: the output layer alone over the pooled row (docs/heads.md).
            dropout: dropout inside classification and multiple-choice heads.
            label_smoothing: label smoothing of the summarization cross-entropy.
            optimizer: optimizer class and arguments; default AdamW(lr 1e-5, betas (0.9, 0.98), eps 1e-6, wd 0.01).
            scheduler: LR scheduler; default linear warmup then linear decay to 0 over the run.
            warmup: warmup of the default schedule: a fraction of the total steps (< 1) or a step count.
            r3f_lambda: weight of the R3F symmetric-KL term (0 = off).
            r3f_noise: R3F input-embedding noise: `uniform` or `normal`.
            r3f_eps: R3F noise scale.
            max_answer_length: longest span-QA answer in tokens when decoding.
            num_beams: beam size of summarization generation in validation.
            max_new_tokens: longest generated summary in validation.
            max_generation_examples: summaries generated (and ROUGE-scored) per task and validation run.
            init_from: start from a pre-finetuned model: an exported folder or a Lightning `.ckpt` (its backbone is
                rebuilt from the config and tokenizer the checkpoint stores, then its weights loaded; `backbone` is
                then not read).
            reuse_heads: with `init_from`, also load the heads of tasks present in both runs.
            skip_nonfinite: skip an update whose loss is NaN/inf (counted in `train/skipped_updates`) instead of
                stopping the run with a message naming the step and the tasks.
            pooling: how a row becomes the one vector classification and multiple-choice heads read: `first` token,
                `mean` (over real tokens), `pooler` (the backbone's own pooler output, e.g. BERT's), `eos` (BART: the
                decoder state at the final EOS) or `auto`: the checkpoint's own (what an export recorded; mean for
                sentence-transformers checkpoints such as MiniLM), else eos for encoder-decoders, first for encoders.
            length_chunks: an encoder reads a batch's rows sorted by length in chunks of this many rows, each padded
                to its own longest row: the same outputs with far less padding when batches are not grouped by
                length (`data.group_by_length=false`); none (the default): one call over the padded batch.
            log_task_mixture_up_to: log the realized and target share of each task (`mixture/<task>/...`) only up to
                this many tasks; per family (`mixture_family/<family>/...`) and `mixture/total_variation` always.
        """
        super().__init__()
        if not task_specs:
            raise OptionError("model.task_specs", "is empty: train.py links it from data.tasks")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer, self.scheduler = optimizer, scheduler
        self.specs = [t if isinstance(t, TaskSpec) else spec_from_dict(t) for t in task_specs]
        folder = init_from if init_from and Path(init_from).is_dir() else None
        stored = None  # a .ckpt's own backbone config: rebuilt from it, weights loaded below (no download)
        if init_from and Path(init_from).is_file() and backbone_config is None:
            stored = checkpoint_parts(init_from)
            if stored is None and not backbone:
                raise OptionError("model.init_from", f"model.init_from '{init_from}' stores no backbone config (a "
                                  f"checkpoint written before configs were stored): give model.backbone, the "
                                  f"architecture it was trained on")
        if init_from and not Path(init_from).exists():
            raise OptionError("model.init_from", f"model.init_from '{init_from}' does not exist")
        self.tokenizer = load_tokenizer(tokenizer_source(backbone, tokenizer, init_from))
        config = stored[0] if stored else None if folder else backbone_config
        model = build_backbone(folder or backbone, config, self.tokenizer)
        self.backbone = Backbone(model, pooling, source=folder or (None if config else backbone),
                                 length_chunks=length_chunks)
        context = HeadContext(self.backbone.hidden_size, self.backbone.config.vocab_size,
                              self.backbone.is_encoder_decoder, dropout, label_smoothing, head_dense)
        self.heads, self.head_keys = build_heads(self.specs, context, shared_heads, head_sharing)
        # tasks whose heads read the backbone's LM logits (summarization): the backbone computes them for their rows
        self.register_buffer("generative", torch.tensor([self.heads[k].generative for k in self.head_keys]),
                             persistent=False)
        self.register_buffer("examples_seen", torch.zeros(len(self.specs), dtype=torch.long))
        self.register_buffer("skipped_updates", torch.zeros((), dtype=torch.long))
        self._window = UpdateWindow(len(self.specs))
        self.data = DataHandoff()  # what the data module hands over in `setup`
        self._last_step_time = None
        self.rng_seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        if init_from:
            load_initial_weights(self, init_from, reuse_heads)
        self._setup_evaluation()

    def setup(self, stage: str) -> None:
        """The data module's hand-off (`handoff()`, core/handoff.py), when the run has one: each head gets what its
        family computed from the training split (regression: label mean and std; a head reused from `init_from`
        keeps its own, a resumed checkpoint restores them)."""
        datamodule = self.trainer.datamodule
        if hasattr(datamodule, "handoff"):
            self.use_data(datamodule.handoff())

    def use_data(self, data: DataHandoff) -> None:
        self.data = data
        for task, spec in enumerate(self.specs):
            if spec.name in data.train_statistics:
                self.head_of(task).use_train_statistics(data.train_statistics[spec.name])

    # ---- forward ---------------------------------------------------------------------------------------------------
    def head_of(self, task: int) -> Head:
        return self.heads[self.head_keys[task]]

    def forward(self, batch: dict, inputs_embeds: torch.Tensor | None = None
                ) -> tuple[BackboneOutput, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
        """One backbone forward for the whole batch; {task id: (rows, head logits)} for each task in it."""
        lm_rows = self.generative[batch["task_ids"]].nonzero().squeeze(1)
        targets = None
        if len(lm_rows):  # the decoder targets of the generative heads' rows
            targets = self.head_of(int(batch["task_ids"][lm_rows[0]])).decoder_targets(batch)
        out = self.backbone(batch, lm_rows, inputs_embeds, targets)
        logits = {}
        for task in batch["task_ids"].unique().tolist():
            rows = (batch["task_ids"] == task).nonzero().squeeze(1)
            logits[task] = (rows, self.head_of(task)(out, batch, rows))
        return out, logits

    def task_losses(self, batch: dict, logits: dict) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """{task: (scaled, raw)} per-example losses: raw in the task's own units; scaled = raw / the loss of a
        chance-level prediction (log n; the target variance for regression), or raw when scaling is off, times the
        task's `loss_weight` where its spec sets one. The update still divides by every example (unweighted), so a
        loss weight w scales that task's share of the update's mean by w."""
        losses = {}
        for task, (rows, task_logits) in logits.items():
            raw, chance = self.head_of(task).example_losses(task_logits, batch, rows)
            # a one-way choice has chance loss 0 and raw loss 0: it costs 0
            scaled = raw / chance.clamp(min=1e-6) if self.hparams.loss_scaling == "log" else raw
            weight = self.specs[task].loss_weight
            losses[task] = (scaled * weight if weight is not None else scaled, raw)
        return losses

    # ---- training ------------------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """Every RNG is seeded from (seed, epoch, batch, rank): dropout and R3F noise of a step do not depend on
        what ran before it (validation, data loading, a restart), so a resumed run draws what an uninterrupted one
        would. The seed travels in the checkpoint."""
        seed_step(self.rng_seed, self.current_epoch, batch_idx, self.global_rank)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out, logits = self(batch)
        losses = self.task_losses(batch, logits)
        total = sum(scaled.sum() for scaled, _ in losses.values())
        examples = sum(len(scaled) for scaled, _ in losses.values())
        if self.hparams.r3f_lambda > 0:
            total = total + self.hparams.r3f_lambda * self._r3f(batch, logits) * examples
        # every head takes part (with weight 0), so DDP needs no find_unused_parameters; the heads of tasks absent
        # from the whole update get their (zero) gradients removed before the optimizer step
        total = total + 0.0 * sum(p.sum() for p in self._always_used)
        self._window.add(losses, total.detach(), self.device)
        self._log_training(batch, losses, total.detach() / examples, examples)
        return total

    @property
    def _always_used(self) -> list[nn.Parameter]:
        pooler = getattr(self.backbone.model, "pooler", None)
        return [*self.heads.parameters(), *(pooler.parameters() if pooler is not None else [])]

    def _r3f(self, batch: dict, logits: dict) -> torch.Tensor:
        """Mean symmetric KL between predictions on clean and noised input embeddings (Aghajanyan et al., 2020)."""
        embeds = self.backbone.embed(batch["input_ids"])
        noise = (torch.rand_like(embeds) * 2 - 1 if self.hparams.r3f_noise == "uniform"
                 else torch.randn_like(embeds)) * self.hparams.r3f_eps
        _, noisy = self(batch, inputs_embeds=embeds + noise)
        terms = [symmetric_kl(c, n) for task, (rows, clean) in logits.items()
                 for c, n in zip(self.head_of(task).distributions(clean, batch, rows),
                                 self.head_of(task).distributions(noisy[task][1], batch, rows))]
        return torch.stack(terms).mean() if terms else logits[next(iter(logits))][1].sum() * 0.0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Once per update, with one all-reduce of the per-task example counts and non-finite flags of every
        micro-batch on every rank: gradients of summed losses -> the mean over every example of the update;
        parameters that took no real part (heads of absent tasks, an unused pooler) lose their zero gradients so
        AdamW leaves them and their state untouched; a non-finite loss stops the run (or skips the update)."""
        counts, nonfinite = self._window.reduce(self.trainer.strategy)
        self._window.reset()
        present = counts > 0
        self.last_update_tasks = present.nonzero().flatten().tolist()
        self.log("train/tasks_per_update", present.sum().float(), on_step=True, on_epoch=False, batch_size=1)
        if nonfinite.any():
            self._on_nonfinite(present, nonfinite > 0)
            for p in self.parameters():
                p.grad = None  # AdamW skips parameters without a gradient: the update does not happen
            return
        factor = self.trainer.accumulate_grad_batches * self.trainer.world_size / max(float(counts.sum()), 1.0)
        for p in self._idle_parameters(present):
            p.grad = None
        for p in self.parameters():
            if p.grad is not None:
                p.grad.mul_(factor)

    def _idle_parameters(self, present: torch.Tensor) -> list[nn.Parameter]:
        used_keys = {self.head_keys[t] for t in present.nonzero().flatten().tolist()}
        # idle: held by no head of the update (the projection shared under model.head_sharing=projection is used)
        used = {id(p) for key in used_keys for p in self.heads[key].parameters()}
        idle = [p for p in self.heads.parameters() if id(p) not in used]
        pooler = getattr(self.backbone.model, "pooler", None)
        if pooler is not None and not self._uses_pooler:
            idle += list(pooler.parameters())
        return idle

    @property
    def _uses_pooler(self) -> bool:
        return getattr(self.backbone, "pooling", None) == "pooler"

    def _on_nonfinite(self, present: torch.Tensor, bad: torch.Tensor) -> None:
        names = lambda mask: [self.specs[t].name for t in mask.nonzero().flatten().tolist()]  # noqa: E731
        where = (f"step {self.global_step} (epoch {self.current_epoch}): tasks in the update {names(present)}, "
                 f"non-finite loss in {names(bad)}")
        if self.hparams.skip_nonfinite:
            self.skipped_updates += 1
            rank_zero_warn(f"skipped the update at {where}")
            self.log("train/skipped_updates", self.skipped_updates.float(), on_step=True, on_epoch=False,
                     batch_size=1)
            return
        raise NonFiniteLossError(f"non-finite loss at {where}. Training stopped before this update; the last "
                                 f"good checkpoint is kept (resume with --ckpt_path). Set model.skip_nonfinite=true "
                                 f"to skip such updates instead")

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Norm clipping under FSDP goes through FSDP's own `clip_grad_norm_` (the norm over all shards); Lightning's
        FSDP precision plugin refuses it otherwise. Other strategies clip as Lightning does."""
        if gradient_clip_val and isinstance(self.trainer.strategy, FSDPStrategy) \
                and gradient_clip_algorithm in (None, "norm"):
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["muppet_rng_seed"] = self.rng_seed
        # the backbone's config and the tokenizer's files: lightning_modules/rebuild.py rebuilds the model from the
        # checkpoint alone (no hub, no backbone folder)
        checkpoint.update(rebuild_parts(self.backbone.config, self.tokenizer))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.rng_seed = int(checkpoint.get("muppet_rng_seed", self.rng_seed))

    def _log_training(self, batch: dict, losses: dict, loss: torch.Tensor, examples: int) -> None:
        size = len(batch["task_ids"])
        self.log("train/loss", loss, prog_bar=True, batch_size=examples)
        for task, (scaled, raw) in losses.items():
            name = self.specs[task].name
            self.log(f"train/{name}/loss", scaled.mean(), batch_size=len(scaled))
            self.log(f"train/{name}/raw_loss", raw.mean(), batch_size=len(raw))
            self.examples_seen[task] += len(scaled)
        now = time.perf_counter()
        if self._last_step_time is not None:
            elapsed = now - self._last_step_time
            world = self.trainer.world_size
            self.log("train/examples_per_s", examples * world / elapsed, batch_size=size)
            self.log("train/tokens_per_s", batch["attention_mask"].sum().float() * world / elapsed, batch_size=size)
        self._last_step_time = now
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self._log_mixture()

    def _log_mixture(self) -> None:
        """Realized mixture (fraction of examples seen) beside the sampler's target proportions: per family, per
        task up to `log_task_mixture_up_to` tasks, and `mixture/total_variation` (0.5 x sum |realized - target|)."""
        seen = (self.examples_seen.float() / self.examples_seen.sum().clamp(min=1)).tolist()
        targets = [self.data.target_proportions.get(spec.name) for spec in self.specs]
        per_task = len(self.specs) <= self.hparams.log_task_mixture_up_to
        scalars: dict[str, float] = {}
        for spec, realized, target in zip(self.specs, seen, targets):
            family = f"mixture_family/{spec.family}"
            scalars[f"{family}/realized"] = scalars.get(f"{family}/realized", 0.0) + realized
            if per_task:
                scalars[f"mixture/{spec.name}/realized"] = realized
            if target is not None:
                scalars[f"{family}/target"] = scalars.get(f"{family}/target", 0.0) + target
                if per_task:
                    scalars[f"mixture/{spec.name}/target"] = target
        if None not in targets:
            scalars["mixture/total_variation"] = total_variation(seen, targets)
        for name, value in scalars.items():
            self.log(name, value, on_step=True, on_epoch=False, batch_size=1)

    # ---- optimizer -----------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer(decay_groups(self))
        if self.scheduler is not None:
            scheduler = self.scheduler(optimizer)
        else:
            scheduler = linear_warmup_decay(optimizer, int(self.trainer.estimated_stepping_batches),
                                            self.hparams.warmup)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- export and initialisation -------------------------------------------------------------------------------
    def export_pretrained(self, folder: str | Path, lengths: dict[str, int] | None = None) -> Path:
        """A Hugging Face folder: `save_pretrained` of backbone and tokenizer; heads and task specs beside them;
        `lengths`: the data module's max_length / max_target_length / doc_stride, recorded for inference."""
        return save_export(self, Path(folder), lengths=lengths)
