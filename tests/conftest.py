"""Shared fixtures: tiny models built from configs and saved, so code under test loads them with `from_pretrained`
exactly as it loads a hub model; the demo tokenizer that ships in assets/tokenizer."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOKENIZER = str(ROOT / "assets" / "tokenizer")
TINY = {
    "roberta": {"model_type": "roberta", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                "intermediate_size": 64, "max_position_embeddings": 258, "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0},
    "bert": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 256, "hidden_dropout_prob": 0.0,
             "attention_probs_dropout_prob": 0.0},
    "bart": {"model_type": "bart", "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
             "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64,
             "decoder_ffn_dim": 64, "max_position_embeddings": 256, "dropout": 0.0, "attention_dropout": 0.0},
}


def save_tiny(kind: str, path: Path) -> str:
    from transformers import AutoTokenizer

    from lightning_modules.backbone import build_backbone
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    build_backbone(None, TINY[kind], tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory) -> str:
    return save_tiny("roberta", tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="session")
def tiny_bart(tmp_path_factory) -> str:
    return save_tiny("bart", tmp_path_factory.mktemp("tiny-bart"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return save_tiny("bert", tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> str:
    """One tokenized-dataset cache for the demo suite, shared by the tests that only read it."""
    return str(tmp_path_factory.mktemp("muppet-cache"))


def demo_datamodule(tasks, cache_dir: str, tokenizer: str = TOKENIZER, **kwargs):
    from datamodules.multitask import MultiTaskDataModule
    dm = MultiTaskDataModule(tasks=tasks, tokenizer=tokenizer, cache_dir=cache_dir, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def stats_of(datamodule, task: int) -> tuple[float, float, int]:
    """(mean, std, count) of a regression task's training labels, as the data module hands them to the model."""
    stats = datamodule.handoff().train_statistics[datamodule.specs[task].name]
    return stats["mean"], stats["std"], stats["count"]
