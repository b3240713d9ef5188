"""Per-task sampling and loss weights (catalogue fields, `data.task_weights`) and the mixture logged at scale."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from core.errors import CatalogueError, OptionError
from core.handoff import DataHandoff
from datamodules.catalogue import parse_entry, spec_from_dict
from datamodules.multitask import MultiTaskDataModule
from datamodules.sampler import MultiTaskBatchSampler, target_proportions, total_variation
from lightning_modules.muppet import MuppetModule
from tests.conftest import TOKENIZER, demo_datamodule
from tests.test_sampler import lengths_of, realized

TASKS = ["demo_sentiment", "demo_topic_pair", "demo_choice"]
ENTRY = {"family": "classification", "source": {"path": "json"}, "inputs": ["a"], "label": "y", "num_labels": 2}


@pytest.fixture(scope="module")
def weighted_data(demo_cache):
    return demo_datamodule(TASKS, demo_cache, batch_size=48, group_by_length=False,
                           task_weights={"demo_choice": {"sampling": 3.0, "loss": 2.5}})


# ---- sampling ----------------------------------------------------------------------------------------------------
def test_sampling_weights_scale_each_strategys_share():
    assert np.allclose(target_proportions([100, 100], "uniform", weights=[2, 1]), [2 / 3, 1 / 3])
    assert np.allclose(target_proportions([300, 100], "proportional", weights=[1, 3]), [0.5, 0.5])
    tempered = target_proportions([400, 100], "temperature", 2.0)  # (20 : 10) before the weights
    assert np.allclose(target_proportions([400, 100], "temperature", 2.0, [1, 4]), [20 / 60, 40 / 60])
    assert np.allclose(target_proportions([400, 100], "temperature", 2.0, [1, 1]), tempered)


@pytest.mark.parametrize("strategy, sizes, weights, expected", [
    ("uniform", [1000, 1000, 500], [2, 1, 1], [0.5, 0.25, 0.25]),
    ("proportional", [1000, 500], [1, 2], [0.5, 0.5]),
])
def test_realized_share_over_an_epoch_follows_the_weights(strategy, sizes, weights, expected):
    sampler = MultiTaskBatchSampler(lengths_of(sizes), strategy=strategy, batch_size=32, weights=weights)
    assert np.allclose(sampler.proportions, expected)
    assert np.allclose(realized(sampler), expected, atol=0.01)
    assert abs(int(sampler.counts.sum()) - sum(sizes)) <= len(sizes)  # the epoch keeps its size


def test_weights_of_one_change_nothing():
    plain = MultiTaskBatchSampler(lengths_of([700, 300]), batch_size=32)
    ones = MultiTaskBatchSampler(lengths_of([700, 300]), batch_size=32, weights=[1.0, 1.0])
    assert list(plain) == list(ones)


def test_total_variation():
    assert total_variation([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert total_variation([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert math.isclose(total_variation([0.6, 0.3, 0.1], [0.5, 0.25, 0.25]), 0.15)


# ---- catalogue fields ----------------------------------------------------------------------------------------------
def test_weights_in_an_entry_parse_and_round_trip():
    spec = parse_entry("my_task", {**ENTRY, "sampling_weight": 2, "loss_weight": 0.5})
    assert (spec.sampling_weight, spec.loss_weight) == (2, 0.5)
    again = spec_from_dict(spec.to_dict())
    assert (again.sampling_weight, again.loss_weight) == (2, 0.5)
    assert parse_entry("my_task", ENTRY).loss_weight is None


@pytest.mark.parametrize("field", ["sampling_weight", "loss_weight"])
@pytest.mark.parametrize("value", [0, -1.5, "2", True, float("nan"), float("inf")])
def test_bad_weights_fail_naming_task_and_field(field, value):
    with pytest.raises(CatalogueError, match=re.escape(f"field '{field}' must be a finite number > 0")) as error:
        parse_entry("my_task", {**ENTRY, field: value})
    assert "my_task" in str(error.value)


# ---- the data option -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weights, message", [
    ({"rte": {"loss": 2.0}}, "names task 'rte', which is not selected"),
    ({"demo_choice": {"weight": 2.0}}, "task 'demo_choice': expected a mapping with 'sampling' and/or 'loss'"),
    ({"demo_choice": {}}, "task 'demo_choice': expected a mapping"),
    ({"demo_choice": {"sampling": 0}}, "task 'demo_choice': 'sampling' must be a finite number > 0, got 0"),
])
def test_task_weights_option_errors_are_named(weights, message, demo_cache):
    with pytest.raises(OptionError, match=re.escape(message)) as error:
        MultiTaskDataModule(tasks=TASKS, tokenizer=TOKENIZER, cache_dir=demo_cache, task_weights=weights)
    assert error.value.option == "data.task_weights"


def test_task_weights_option_overrides_entries_and_reaches_the_model(weighted_data, tiny_roberta):
    specs = {s["name"]: s for s in weighted_data.task_specs}
    assert (specs["demo_choice"]["sampling_weight"], specs["demo_choice"]["loss_weight"]) == (3.0, 2.5)
    assert specs["demo_sentiment"]["loss_weight"] is None
    plain = MultiTaskDataModule(tasks=TASKS, tokenizer=TOKENIZER, cache_dir=weighted_data.hparams.cache_dir)
    assert all(s.sampling_weight is None for s in plain.specs)  # the catalogue's specs were not changed
    sizes = [len(ds) for ds in weighted_data.train_set.datasets]
    expected = target_proportions(sizes, "proportional", weights=[1, 1, 3])
    assert np.allclose(list(weighted_data.handoff().target_proportions.values()), expected)
    weighted_data.train_dataloader()
    assert np.allclose(weighted_data.sampler.proportions, expected)


# ---- the loss ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weighted_module(weighted_data, tiny_roberta):
    torch.manual_seed(0)
    return MuppetModule(backbone=tiny_roberta, task_specs=weighted_data.task_specs, dropout=0.0).eval()


def test_loss_weight_scales_the_scaled_loss_and_not_the_raw(weighted_data, weighted_module):
    module, choice = weighted_module, TASKS.index("demo_choice")
    assert module.specs[choice].loss_weight == 2.5
    batch = next(iter(weighted_data.train_dataloader()))
    with torch.no_grad():
        _, logits = module(batch)
        weighted = module.task_losses(batch, logits)
        module.specs[choice].loss_weight = None
        try:
            plain = module.task_losses(batch, logits)
        finally:
            module.specs[choice].loss_weight = 2.5
    assert choice in weighted
    for task in weighted:
        factor = 2.5 if task == choice else 1.0
        torch.testing.assert_close(weighted[task][0], plain[task][0] * factor, rtol=0, atol=0)
        torch.testing.assert_close(weighted[task][1], plain[task][1], rtol=0, atol=0)


# ---- the mixture logged --------------------------------------------------------------------------------------------
def logged_mixture(module, monkeypatch) -> dict[str, float]:
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kwargs: logged.__setitem__(name, float(value)))
    module._log_mixture()
    return logged


def test_mixture_logged_per_family_and_as_total_variation(weighted_module, monkeypatch):
    module = weighted_module
    module.use_data(DataHandoff(target_proportions={"demo_sentiment": 0.2, "demo_topic_pair": 0.3,
                                                    "demo_choice": 0.5}))
    module.examples_seen.copy_(torch.tensor([30, 30, 40]))
    logged = logged_mixture(module, monkeypatch)
    assert math.isclose(logged["mixture_family/classification/realized"], 0.6, abs_tol=1e-6)
    assert math.isclose(logged["mixture_family/classification/target"], 0.5, abs_tol=1e-6)
    assert math.isclose(logged["mixture_family/multiple_choice/target"], 0.5, abs_tol=1e-6)
    assert math.isclose(logged["mixture/total_variation"], 0.5 * (0.1 + 0.0 + 0.1), abs_tol=1e-6)
    assert math.isclose(logged["mixture/demo_choice/realized"], 0.4, abs_tol=1e-6)  # 3 tasks <= 32: per task too
    monkeypatch.setitem(module.hparams, "log_task_mixture_up_to", 2)
    fewer = logged_mixture(module, monkeypatch)
    assert not [name for name in fewer if name.startswith("mixture/demo_")]
    assert set(fewer) == {"mixture/total_variation", *(f"mixture_family/{f}/{k}" for f in
                                                       ("classification", "multiple_choice")
                                                       for k in ("realized", "target"))}
