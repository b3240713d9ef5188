"""`model.length_chunks`: an encoder reads a mixed batch's rows sorted by length in chunks, each padded to its own
longest row; the outputs every head reads (hidden states at real tokens, pooled rows, the backbone's pooler) and the
gradients equal one padded call, and a real Trainer trains with it."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_modules.muppet import MuppetModule
from tests.test_head_sharing import ENTRIES, rows
from tests.test_training import constant_lr


def mixed_lengths(n: int = 23, width: int = 30) -> dict:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, width + 1, (n,), generator=generator)
    lengths[0] = width
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    ids = torch.randint(5, 60, (n, width), generator=generator) * mask + (1 - mask)  # pad id 1 (RoBERTa)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.mark.parametrize("model, pooling", [("tiny_roberta", "first"), ("tiny_roberta", "mean"),
                                            ("tiny_bert", "pooler")])
def test_chunked_outputs_and_gradients_equal_one_padded_call(model, pooling, request):
    backbone = request.getfixturevalue(model)
    torch.manual_seed(0)
    whole = MuppetModule(backbone=backbone, task_specs=ENTRIES, pooling=pooling).backbone.eval()
    chunked = MuppetModule(backbone=backbone, task_specs=ENTRIES, pooling=pooling, length_chunks=4).backbone.eval()
    chunked.load_state_dict(whole.state_dict())
    batch = mixed_lengths()
    a, b = whole(batch), chunked(batch)
    real = batch["attention_mask"].bool()
    assert torch.allclose(a.pooled, b.pooled, atol=1e-5)
    assert torch.allclose(a.hidden[real], b.hidden[real], atol=1e-5)
    a.pooled.square().sum().backward()
    b.pooled.square().sum().backward()
    for (name, p), q in zip(whole.named_parameters(), chunked.parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-4), name


def test_a_trainer_trains_with_length_chunks(tiny_roberta, tmp_path):
    torch.manual_seed(0)
    module = MuppetModule(backbone=tiny_roberta, task_specs=ENTRIES, length_chunks=3, scheduler=constant_lr)
    labels = [spec.fields.num_labels for spec in module.specs]
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, use_distributed_sampler=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader([rows([0, 1, 2, 3, 4, 0, 2], labels)] * 2, batch_size=None))
    assert trainer.global_step == 2
    assert not torch.equal(before["model.embeddings.word_embeddings.weight"],
                           module.backbone.state_dict()["model.embeddings.word_embeddings.weight"])
