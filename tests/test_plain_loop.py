"""The plain reference loop of the plain-loop comparison (experiments/plain_loop.py): its length-chunked encoder
gives what one padded backbone call gives, and its loss divides each example's cross-entropy by log n."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import BertConfig, BertModel

from experiments.plain_loop import Model, loss_of
from lightning_modules.backbone import Backbone


def test_chunked_encoding_equals_one_padded_call_and_passes_gradients():
    torch.manual_seed(0)
    model = Model.__new__(Model)
    nn.Module.__init__(model)
    model.backbone = Backbone(BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                   num_attention_heads=2, intermediate_size=64)), "mean",
                              length_chunks=16).eval()
    lengths = torch.randint(3, 40, (70,))
    ids = torch.zeros(70, 40, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 100, (int(n),))
    batch = {"input_ids": ids, "attention_mask": ids.ne(0).long(), "token_type_ids": torch.zeros_like(ids)}
    chunked = model.backbone(batch).pooled  # what Model.forward pools
    out = model.backbone.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(chunked, (out * mask).sum(1) / mask.sum(1), atol=1e-5)
    chunked.sum().backward()
    assert model.backbone.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_loss_is_the_batch_mean_of_cross_entropy_over_log_n():
    logits = [torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.5, 0.5])]
    expected = (-(torch.log_softmax(logits[0], 0)[0]) / math.log(3) - torch.log_softmax(logits[1], 0)[1]
                / math.log(2)) / 2
    assert torch.isclose(loss_of(logits, [0, 1]), expected)
