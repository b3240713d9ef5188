"""The one hand-off from the data to the model: what the model needs from the loaded data, computed by the data
module in `setup` (`MultiTaskDataModule.handoff()`), read by the model in its own `setup`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataHandoff:
    # task name -> what its family computes from the training split (regression: label mean, std, count)
    train_statistics: dict[str, dict[str, Any]] = field(default_factory=dict)
    # task name -> the sampler's target share of training examples
    target_proportions: dict[str, float] = field(default_factory=dict)
    # examples per evaluation batch (generation budgets count batches with it, identically on every rank)
    eval_batch_size: int | None = None
