"""`model.head_sharing`: per-task heads (default), one head per label set, or one shared projection with per-task
output layers; keys, parameter counts, which heads an update moves, and reuse through an export and a checkpoint."""

from __future__ import annotations


import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from datamodules.catalogue import spec_from_dict
from core.errors import OptionError
from heads.base import HeadContext, NotStandard
from heads.registry import build_heads
from lightning_modules.inference import module_from_export
from lightning_modules.muppet import MuppetModule
from tests.test_training import constant_lr
from tests.test_update import Snapshot

H = 32
NLI = {"entailment": 0, "neutral": 1, "contradiction": 2}


def entry(name: str, num_labels: int, label_map: dict | None = None) -> dict:
    values = {"name": name, "family": "classification", "source": {"path": "json"}, "inputs": ["a", "b"],
              "label": "label", "num_labels": num_labels, "metrics": ["pearson"] if num_labels == 1 else ["accuracy"]}
    return {**values, "label_map": label_map} if label_map else values


ENTRIES = [entry("mnli", 3, NLI), entry("anli", 3, NLI), entry("sst2", 2), entry("stsb", 1),
           entry("swapped", 3, {"entailment": 0, "contradiction": 1, "neutral": 2})]


def heads_for(option: str, entries: list[dict] = ENTRIES):
    return build_heads([spec_from_dict(e) for e in entries], HeadContext(H, 100, False), None, option)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_keys_and_parameter_counts_per_option():
    dense, out = H * H + H, lambda c: H * c + c
    heads, keys = heads_for("per_task")
    assert keys == ["task_mnli", "task_anli", "task_sst2", "task_stsb", "task_swapped"]
    assert count(heads) == 5 * dense + out(3) * 3 + out(2) + out(1)

    heads, keys = heads_for("label_set")
    nli = keys[0]
    assert nli.startswith("labels_3_") and keys[1] == nli  # same names, same ids: one head
    assert keys[2:4] == ["labels_2", "task_stsb"]  # unnamed classes by count; regression keeps its own head
    assert keys[4].startswith("labels_3_") and keys[4] != nli  # same names, other ids: another head
    assert list(heads) == [nli, "labels_2", "task_stsb", keys[4]]
    assert count(heads) == 4 * dense + out(3) * 2 + out(2) + out(1)
    assert heads_for("label_set")[1] == keys  # stable across builds

    heads, keys = heads_for("projection")
    assert keys == heads_for("per_task")[1]
    assert count(heads) == dense + out(3) * 3 + out(2) + out(1)
    assert len({id(h.dense) for h in heads.values()}) == 1  # one dense, out_proj per task
    assert len({id(h.out_proj) for h in heads.values()}) == 5


def rows(task_ids: list[int], num_labels: list[int]) -> dict:
    generator = torch.Generator().manual_seed(len(task_ids))
    n = len(task_ids)
    labels = [float(torch.randn(1, generator=generator)) if num_labels[t] == 1 else t % num_labels[t]
              for t in task_ids]
    return {"input_ids": torch.randint(5, 60, (n, 12), generator=generator), "attention_mask": torch.ones(n, 12).long(),
            "task_ids": torch.tensor(task_ids), "example_ids": torch.arange(n), "labels": torch.tensor(labels)}


def trained(backbone: str, option: str, tmp_path) -> tuple[MuppetModule, Snapshot, L.Trainer]:
    """Two updates: every task, then only mnli (task 0)."""
    torch.manual_seed(0)
    module = MuppetModule(backbone=backbone, task_specs=ENTRIES, head_sharing=option, scheduler=constant_lr)
    labels = [spec.fields.num_labels for spec in module.specs]
    snapshot = Snapshot()
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[snapshot],
                        use_distributed_sampler=False, enable_checkpointing=False, default_root_dir=tmp_path)
    batches = [rows([0, 0, 1, 2, 2, 3, 3, 4], labels), rows([0, 0, 0, 0], labels)]
    trainer.fit(module, DataLoader(batches, batch_size=None))
    return module, snapshot, trainer


@pytest.mark.parametrize("option", ["label_set", "projection"])
def test_an_update_moves_only_the_heads_of_its_tasks(tiny_roberta, option, tmp_path):
    module, snapshot, _ = trained(tiny_roberta, option, tmp_path)
    (first, first_state), (second, second_state) = snapshot.after
    assert module.last_update_tasks == [0]
    own = f"heads.{module.head_keys[0]}."
    names = [n for n, _ in module.named_parameters()]  # shared parameters under their first name
    for name in names:
        if not name.startswith("heads."):
            continue
        moved = not torch.equal(first[name], second[name])
        used = name.startswith(own) or (option == "projection" and name.endswith((".dense.weight", ".dense.bias")))
        assert moved == used, name  # the projection is named once, under the first task's head
        if not used:
            assert all(torch.equal(v, second_state[name][k]) for k, v in first_state[name].items()), name
    if option == "label_set":  # anli shares mnli's head: moved by mnli's update although anli was absent
        assert module.head_keys[1] == module.head_keys[0]
    else:
        assert all(torch.equal(second[f"heads.{k}.dense.weight"], second["heads.task_mnli.dense.weight"])
                   for k in module.head_keys)  # state_dict names it under every head, one tensor


@pytest.mark.parametrize("option", ["label_set", "projection"])
def test_export_and_checkpoint_round_trip_with_reuse_heads(tiny_roberta, option, tmp_path):
    module, _, trainer = trained(tiny_roberta, option, tmp_path)
    folder = module.export_pretrained(tmp_path / "export")
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    loaded = module_from_export(folder)  # inference rebuilds the heads as they were built (muppet_model.json)
    assert loaded.head_keys == module.head_keys and loaded.hparams.head_sharing == option
    for name, value in module.heads.state_dict().items():
        assert torch.equal(loaded.heads.state_dict()[name], value), name
    entries = [*ENTRIES, entry("new_nli", 3, NLI)]  # a task new to the earlier run, in mnli's label set
    for source in (folder, tmp_path / "last.ckpt"):
        torch.manual_seed(1)
        again = MuppetModule(backbone=None if source == folder else tiny_roberta, task_specs=entries,
                             head_sharing=option, init_from=str(source), reuse_heads=True)
        assert again.head_keys[:5] == module.head_keys
        for key, head in module.heads.items():
            for name, value in head.state_dict().items():
                assert torch.equal(again.heads[key].state_dict()[name], value), (source, key, name)
        new = again.heads[again.head_keys[5]]
        if option == "label_set":  # the new NLI task gets the NLI head
            assert again.head_keys[5] == module.head_keys[0]
        else:  # its own output layer, the shared projection
            assert again.head_keys[5] == "task_new_nli" and new.dense is again.heads["task_mnli"].dense


def test_heads_without_the_dense_layer_train_export_and_reload(tiny_roberta, tmp_path):
    """`model.head_dense=false`: the output layer alone over the pooled row (classification, regression and the
    multiple-choice scorer); trained by a real Trainer, exported, rebuilt the same by inference; not a standard HF
    head; `projection` (which shares the dense layer) is refused by name."""
    heads, _ = build_heads([spec_from_dict(e) for e in ENTRIES], HeadContext(H, 100, False, dense=False))
    assert count(heads) == sum(H * c + c for c in (3, 3, 2, 1, 3)) and all(h.dense is None for h in heads.values())
    torch.manual_seed(0)
    module = MuppetModule(backbone=tiny_roberta, task_specs=ENTRIES, head_dense=False, scheduler=constant_lr)
    labels = [spec.fields.num_labels for spec in module.specs]
    before = {k: v.clone() for k, v in module.heads.state_dict().items()}
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, use_distributed_sampler=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader([rows([0, 1, 2, 3, 4], labels)], batch_size=None))
    assert all(not torch.equal(before[k], v) for k, v in module.heads.state_dict().items() if "out_proj" in k)
    loaded = module_from_export(module.export_pretrained(tmp_path / "export"))
    assert loaded.hparams.head_dense is False
    assert all(torch.equal(loaded.heads.state_dict()[k], v) for k, v in module.heads.state_dict().items())
    with pytest.raises(NotStandard, match="head_dense=false"):
        module.heads["task_mnli"].standard("roberta", "first")
    with pytest.raises(OptionError, match="model.head_sharing"):
        MuppetModule(backbone=tiny_roberta, task_specs=ENTRIES, head_dense=False, head_sharing="projection")
