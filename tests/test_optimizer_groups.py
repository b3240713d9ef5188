"""Weight decay by parameter: on tiny RoBERTa, BERT and BART built from configs, the decayed group holds exactly the
embeddings and weight matrices and the second group (weight_decay 0.0) exactly the biases and LayerNorm weights,
told apart by the module that owns each tensor, not by the name markers under test; the same for MuppetModule's
optimizer as a real Trainer builds it. Each check is shown failing on a planted grouping mistake."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from lightning_modules import optim
from lightning_modules.backbone import build_backbone
from lightning_modules.muppet import MuppetModule
from tests.conftest import TINY, TOKENIZER, demo_datamodule

# tensors per group: (decayed, not decayed); RoBERTa/BERT: 3 embeddings + 6 matrices x 2 layers + pooler = 16, and
# embedding LayerNorm 2 + (6 biases + 2 LayerNorms x 2) x 2 layers + pooler bias = 23; BART (1+1 layers, tied LM head):
# shared + 2 positions + 6 encoder + 10 decoder matrices = 19, and 12 encoder + 18 decoder biases/LayerNorms = 30
COUNTS = {"roberta": (16, 23), "bert": (16, 23), "bart": (19, 30)}
SOME_DECAYED = {"roberta": ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                            "embeddings.token_type_embeddings.weight", "encoder.layer.1.attention.self.query.weight",
                            "pooler.dense.weight"],
                "bert": ["embeddings.word_embeddings.weight", "encoder.layer.0.output.dense.weight"],
                "bart": ["model.shared.weight", "model.encoder.embed_positions.weight",
                         "model.decoder.layers.0.encoder_attn.k_proj.weight", "model.decoder.layers.0.fc2.weight"]}
SOME_PLAIN = {"roberta": ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias",
                          "encoder.layer.1.output.LayerNorm.weight", "encoder.layer.0.attention.self.query.bias",
                          "pooler.dense.bias"],
              "bert": ["embeddings.LayerNorm.weight", "encoder.layer.1.attention.output.LayerNorm.weight"],
              "bart": ["model.encoder.layernorm_embedding.weight", "model.decoder.layers.0.final_layer_norm.weight",
                       "model.decoder.layers.0.encoder_attn_layer_norm.weight", "model.encoder.layers.0.fc1.bias"]}
TASKS = {"roberta": ["demo_sentiment", "demo_rating", "demo_choice", "demo_span"],
         "bert": ["demo_sentiment", "demo_choice"],
         "bart": ["demo_sentiment", "demo_choice", "demo_span", "demo_summary"]}


def expected_split(module: nn.Module) -> tuple[set[str], set[str]]:
    """(decayed, not decayed) names from the owning module's type: a `bias`, or any tensor of a LayerNorm, is not
    decayed; everything else (embedding tables, weight matrices) is. A tied tensor counts once, under the name
    `named_parameters` gives it."""
    plain_ids = {id(p) for m in module.modules() for n, p in m.named_parameters(recurse=False)
                 if n == "bias" or isinstance(m, nn.LayerNorm)}
    named = list(module.named_parameters())
    return {n for n, p in named if id(p) not in plain_ids}, {n for n, p in named if id(p) in plain_ids}


def check_groups(module: nn.Module, groups: list[dict], default_decay: float | None = None) -> tuple[set, set]:
    """The two groups hold exactly the expected tensors (matched by identity through `named_parameters`); the second
    has weight_decay 0.0, the first the optimizer's default (`default_decay`, when the groups come from an
    optimizer)."""
    names = {id(p): n for n, p in module.named_parameters()}
    assert len(groups) == 2, f"{len(groups)} parameter groups"
    decayed, plain = ([names[id(p)] for p in g["params"]] for g in groups)
    assert len(decayed) == len(set(decayed)) and len(plain) == len(set(plain))
    assert (set(decayed), set(plain)) == expected_split(module)
    assert groups[1].get("weight_decay") == 0.0
    if default_decay is not None:
        assert groups[0].get("weight_decay") == default_decay > 0
    else:
        assert "weight_decay" not in groups[0]  # the optimizer's own weight decay applies
    return set(decayed), set(plain)


@pytest.fixture(scope="module")
def backbones() -> dict[str, nn.Module]:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    return {kind: build_backbone(None, TINY[kind], tokenizer) for kind in TINY}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_biases_and_layernorm_are_not_decayed_embeddings_and_matrices_are(backbones, kind):
    module = backbones[kind]
    decayed, plain = check_groups(module, optim.decay_groups(module))
    assert (len(decayed), len(plain)) == COUNTS[kind]
    assert set(SOME_DECAYED[kind]) <= decayed and set(SOME_PLAIN[kind]) <= plain
    assert all(n.endswith("bias") or "norm" in n.lower() for n in plain)
    assert all(optim.decays(n) for n in decayed) and not any(optim.decays(n) for n in plain)


def one_group(module):
    return [{"params": list(module.parameters())}]


def plain_group_decayed(module):
    decayed, plain = optim.decay_groups(module)
    return [decayed, {"params": plain["params"]}]


def swapped(module):
    decayed, plain = optim.decay_groups(module)
    return [{"params": plain["params"]}, {"params": decayed["params"], "weight_decay": 0.0}]


def biases_only(module, monkeypatch):
    monkeypatch.setattr(optim, "NO_DECAY", ("bias",))  # LayerNorm weights would be decayed
    return optim.decay_groups(module)


@pytest.mark.parametrize("plant", [one_group, plain_group_decayed, swapped, biases_only], ids=lambda f: f.__name__)
@pytest.mark.parametrize("kind", ["roberta", "bart"])
def test_the_check_fails_on_a_planted_grouping_mistake(backbones, kind, plant, monkeypatch):
    module = backbones[kind]
    groups = plant(module, monkeypatch) if plant is biases_only else plant(module)
    with pytest.raises(AssertionError):
        check_groups(module, groups)


class Optimizers(L.Callback):
    """The optimizer the Trainer built from `configure_optimizers`, as training starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.optimizer, self.schedulers = trainer.optimizers[0], trainer.lr_scheduler_configs


@pytest.mark.parametrize("kind", ["roberta", "bart"])
def test_muppet_modules_optimizer_through_a_trainer(kind, demo_cache, request):
    backbone = request.getfixturevalue(f"tiny_{kind}")
    data = demo_datamodule(TASKS[kind], demo_cache, batch_size=8, group_by_length=False)
    torch.manual_seed(0)
    module = MuppetModule(backbone=backbone, task_specs=data.task_specs)
    seen = Optimizers()
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[seen])
    trainer.fit(module, DataLoader([next(iter(data.train_dataloader()))], batch_size=None))
    optimizer = seen.optimizer
    assert isinstance(optimizer, optim.PaperAdamW) and seen.schedulers[0].interval == "step"
    decayed, plain = check_groups(module, optimizer.param_groups, default_decay=0.01)
    heads = {n for n in decayed | plain if n.startswith("heads.")}
    assert heads and {n for n in heads if n.endswith(".bias")} == heads & plain
    backbone_part = {n.removeprefix("backbone.model.") for n in decayed}
    assert set(SOME_DECAYED[kind]) <= backbone_part
