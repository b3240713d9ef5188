"""Token classification (NER): word tags aligned to sub-tokens as run_ner does, raw rows checked, entity scores equal
to seqeval's, per-example loss scaled by log(tags), word-level predictions, and a real mixed run with a classification
and a multiple-choice task in which all three tasks train, evaluate and predict."""

from __future__ import annotations

import json
import math
import random
import re

import lightning as L
import pytest
import torch
import yaml
from datasets import Dataset
from seqeval.metrics import f1_score, precision_score, recall_score
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer, BertTokenizer

from core.batch import BackboneOutput
from core.metrics import EntityScore
from datamodules.catalogue import DEFAULT_CATALOGUE, Catalogue, CatalogueError, parse_entry
from datamodules.families import FAMILIES
from datamodules.families.base import Lengths
from datamodules.families.token_classification import word_prefix
from datamodules.validation import DataValidationError, validate_split
from heads.base import Decoding
from heads.token_classification import TokenClassificationHead
from lightning_modules.muppet import MuppetModule
from lightning_modules.predictions import WritePredictions
from tests.conftest import TOKENIZER, demo_datamodule

NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
FAMILY = FAMILIES["token_classification"]
ENTRY = {"family": "token_classification", "source": {"path": "json"}, "inputs": ["tokens"], "label": "ner_tags",
         "label_names": NAMES}


def spec_of(**fields):
    return parse_entry("ner", {**ENTRY, **fields})


def preprocessed(spec, tok, rows: dict, max_length: int = 64, for_eval: bool = True) -> dict:
    preprocess = FAMILY.preprocess(spec, tok, Lengths(max_length=max_length), for_eval)
    return preprocess(rows, list(range(len(rows["tokens"]))))


def wordpiece() -> BertTokenizer:
    """A tiny BERT WordPiece tokenizer (MiniLM's kind): `[CLS] jo ##hn ... [SEP]`, with segment ids."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "jo", "##hn", "lives", "in", "new", "york", "fr",
             "##ance", "."]
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})


# ---- alignment -----------------------------------------------------------------------------------------------------
ROWS = {"tokens": [["John", "lives", "in", "New", "York", "."]], "ner_tags": [[1, 0, 0, 5, 6, 0]]}


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_first_sub_token_carries_the_word_tag_the_rest_minus_100(kind):
    tok = AutoTokenizer.from_pretrained(TOKENIZER) if kind == "bpe" else wordpiece()
    out = preprocessed(spec_of(), tok, ROWS)
    enc = tok(ROWS["tokens"][0], is_split_into_words=True)
    assert out["input_ids"][0] == enc["input_ids"] and ("token_type_ids" in out) == (kind == "wordpiece")
    word_ids, tags = enc.word_ids(), ROWS["ner_tags"][0]
    expected = [-100 if w is None or w == p else tags[w] for w, p in zip(word_ids, [None, *word_ids])]
    assert out["token_labels"][0] == expected
    assert any(w is not None and w == p for w, p in zip(word_ids, [None, *word_ids]))  # some word has 2+ sub-tokens
    assert out["word_starts"][0] == [word_ids.index(w) for w in range(6)]
    assert out["gold_tags"][0] == ["B-PER", "O", "O", "B-LOC", "I-LOC", "O"]


def test_label_all_tokens_tags_continuations_of_b_x_as_i_x():
    tok = wordpiece()  # John -> jo ##hn (B-PER, I-PER); France -> fr ##ance (B-LOC, I-LOC)
    rows = {"tokens": [["John", "lives", "in", "France"]], "ner_tags": [["B-PER", "O", "O", "B-LOC"]]}
    spec = spec_of(label_all_tokens=True, label_map={n: i for i, n in enumerate(NAMES)})
    labels = preprocessed(spec, tok, rows)["token_labels"][0]
    assert labels == [-100, 1, 2, 0, 0, 5, 6, -100]
    assert preprocessed(spec_of(label_map=spec.fields.label_map), tok, rows)["token_labels"][0] == \
        [-100, 1, -100, 0, 0, 5, -100, -100]


def test_truncation_keeps_the_words_whose_first_sub_token_survives():
    out = preprocessed(spec_of(), wordpiece(), ROWS, max_length=5)  # [CLS] jo ##hn lives [SEP]
    assert out["word_starts"][0] == [1, 3] and out["gold_tags"][0] == ["B-PER", "O"]


def test_byte_level_bpe_without_prefix_space_gets_a_space_before_every_word():
    """roberta-base's own tokenizer (add_prefix_space false) would encode a pre-split word as if it began the text;
    the family gives every word its leading space, as run_ner's `add_prefix_space=True` does."""
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    assert word_prefix(tok) == "" and word_prefix(wordpiece()) == ""
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    assert word_prefix(tok) == " "
    ids = preprocessed(spec_of(), tok, ROWS)["input_ids"][0]
    assert ids == tok(" " + " ".join(ROWS["tokens"][0]))["input_ids"]  # as inside running text


# ---- checks --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows, message", [
    ({"tokens": ["John lives in Paris"], "ner_tags": [[1, 0, 0, 5]]},
     "field 'tokens' is null or not a non-empty list of words (strings) in 1 row(s), first at index 0"),
    ({"tokens": [["John"], []], "ner_tags": [[1], []]}, "field 'tokens' is null or not a non-empty list of words"),
    ({"tokens": [["John", "lives"], ["Paris"]], "ner_tags": [[1, 0], [5, 0]]},
     ("field 'ner_tags' is not a list of tags (ids below the number of label_names, or raw tags of label_map), one per "
      "word in 1 row(s), first at index 1")),
    ({"tokens": [["John"]], "ner_tags": [[9]]}, "field 'ner_tags' is not a list of tags"),
])
def test_bad_rows_are_named(rows, message):
    with pytest.raises(DataValidationError, match=re.escape(f"task 'ner', split 'train': {message}")):
        validate_split(spec_of(), "train", Dataset.from_dict(rows))


@pytest.mark.parametrize("fields, message", [
    ({"label_names": ["O"]}, "at least 2 distinct tag names"),
    ({"label_names": ["O", "B-PER", "B-PER"]}, "at least 2 distinct tag names"),
    ({"label_names": ["O", "PER", "B-LOC"]}, "tags ['PER'] that are not IOB2"),
    ({"label_map": {"O": 0, "B-PER": 9}}, "maps {'B-PER': 9} outside 0..8"),
    ({"label_names": "O B-PER"}, "field 'label_names' must be a list of tag names"),
])
def test_bad_entries_are_named(fields, message):
    with pytest.raises(CatalogueError, match=re.escape(message)) as error:
        spec_of(**fields)
    assert error.value.task == "ner" and error.value.field in fields


# ---- metrics, loss, predictions ------------------------------------------------------------------------------------
def test_entity_scores_equal_seqeval_on_random_tag_sequences():
    rng = random.Random(0)
    golds = [[rng.choice(NAMES) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    preds = [[g if rng.random() < 0.6 else rng.choice(NAMES) for g in gold] for gold in golds]
    scores = {key: EntityScore(key) for key in ("entity_f1", "entity_precision", "entity_recall")}
    for start in range(0, 300, 64):  # several batches: counts accumulate
        for score in scores.values():
            score.update(preds[start:start + 64], golds[start:start + 64])
    expected = {"entity_f1": f1_score(golds, preds), "entity_precision": precision_score(golds, preds),
                "entity_recall": recall_score(golds, preds)}
    for key, score in scores.items():
        assert float(score.compute()) == pytest.approx(expected[key], abs=1e-6), key


def batch_of(labels: list[list[int]], starts: list[list[int]], hidden: int = 4) -> tuple[dict, BackboneOutput]:
    batch = {"token_labels": torch.tensor(labels), "word_starts": starts,
             "gold_tags": [[NAMES[t] for t in row if t >= 0] for row in labels]}
    return batch, BackboneOutput(hidden=torch.randn(len(labels), len(labels[0]), hidden), pooled=torch.zeros(1))


def test_loss_is_the_mean_over_labelled_tokens_and_chance_is_log_tags():
    head = TokenClassificationHead(4, len(NAMES), dropout=0.0)
    batch, out = batch_of([[-100, 1, -100, 0, -100], [-100, 3, 4, 5, 6], [-100, -100, -100, -100, -100]],
                          [[1, 3], [1, 2, 3, 4], []])
    rows = torch.arange(3)
    torch.nn.init.zeros_(head.classifier.weight)
    torch.nn.init.zeros_(head.classifier.bias)
    raw, chance = head.example_losses(head(out, batch, rows), batch, rows)  # uniform logits
    torch.testing.assert_close(raw, torch.tensor([math.log(9), math.log(9), 0.0]))
    torch.testing.assert_close(chance, torch.full((3,), math.log(9)))
    logits = torch.randn(3, 5, 9)
    raw, _ = head.example_losses(logits, batch, rows)
    first = -(logits[0, 1].log_softmax(-1)[1] + logits[0, 3].log_softmax(-1)[0]) / 2
    assert float(raw[0]) == pytest.approx(float(first), rel=1e-5)
    assert head.distributions(logits, batch, rows)[0].shape == (6, 9)  # the labelled positions only
    assert head.distributions(logits, batch, rows[2:]) == []


def test_predictions_are_tag_names_per_word_from_the_first_sub_token():
    head = TokenClassificationHead(4, len(NAMES))
    batch, _ = batch_of([[-100, 1, -100, 0, -100], [-100, 5, 6, -100, -100]], [[1, 3, -1], [1, 2]])
    logits = torch.zeros(2, 5, 9)
    logits[0, 1, 1] = logits[0, 2, 7] = logits[0, 3, 3] = logits[1, 1, 5] = logits[1, 2, 6] = 1.0
    decoding = Decoding(spec=spec_of(), tokenizer=None, generate=None)
    predictions = head.predict(logits, batch, torch.arange(2), decoding)
    assert predictions == [["B-PER", "B-ORG", "O"], ["B-LOC", "I-LOC"]]  # -1: a word that makes no token
    metrics = head.make_metrics(spec_of(metrics=["entity_f1", "token_accuracy"]))
    batch["gold_tags"] = [["B-PER", "O", "O"], ["B-LOC", "I-LOC"]]
    head.update_metrics(metrics, logits, batch, torch.arange(2), decoding)
    values = metrics.compute()  # entities: PER, ORG (wrong), LOC; words 4 of 5 right
    assert float(values["entity_f1"]) == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert float(values["token_accuracy"]) == pytest.approx(4 / 5)
    assert FAMILY.prediction_extras(spec_of(), predictions[1]) == {"predicted": [5, 6]}


# ---- the shipped entry and a real mixed run ------------------------------------------------------------------------
PEOPLE = [["Anna"], ["Boris", "Becker"], ["Carla"], ["Dmitri", "Ivanov", "Petrov"]]
PLACES = [["Paris"], ["New", "York"], ["Oslo"], ["Rio", "de", "Janeiro"]]
ORGS = [["Acme"], ["United", "Nations"], ["Globex", "Corp"]]


def entity(words: list[str], kind: str) -> tuple[list[str], list[int]]:
    return words, [NAMES.index(f"B-{kind}")] + [NAMES.index(f"I-{kind}")] * (len(words) - 1)


def ner_row(rng: random.Random) -> dict:
    parts = [entity(rng.choice(PEOPLE), "PER"), (["visited"], [0]), entity(rng.choice(PLACES), "LOC")]
    if rng.random() < 0.5:
        parts += [(["for", "the"], [0, 0]), entity(rng.choice(ORGS), "ORG")]
    parts.append((["."], [0]))
    return {"tokens": [w for words, _ in parts for w in words], "ner_tags": [t for _, tags in parts for t in tags]}


@pytest.fixture(scope="module")
def ner_catalogue(tmp_path_factory) -> str:
    """`ner_demo`: the shipped conll2003 entry read from generated local files."""
    folder = tmp_path_factory.mktemp("ner")
    rng = random.Random(0)
    for split, count in (("train", 400), ("validation", 40)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(ner_row(rng)) + "\n" for _ in range(count)))
    conll = Catalogue.load().tasks["conll2003"]
    assert conll.fields.label_names == NAMES and conll.metrics[0] == "entity_f1"
    entry = {k: v for k, v in conll.to_dict().items() if k not in ("name", "catalogue_dir", "data_root", "local")}
    entry |= {"source": {"path": "json", "data_files": {"train": "train.jsonl", "validation": "validation.jsonl"}},
              "splits": {"train": "train", "validation": "validation"}}
    (folder / "ner.yaml").write_text(yaml.safe_dump({"ner_demo": entry}))
    return str(folder / "ner.yaml")


class TasksSeen(L.Callback):
    def __init__(self) -> None:
        self.tasks: list[set[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.tasks.append(set(batch["task_ids"].tolist()))


@pytest.mark.slow  # a Trainer run: fit, validate and predict
def test_mixed_batches_train_evaluate_and_predict_ner_with_classification_and_multiple_choice(
        tiny_roberta, demo_cache, ner_catalogue, tmp_path):
    tasks = ["demo_sentiment", "demo_choice", "ner_demo"]
    data = demo_datamodule(tasks, demo_cache, catalogue=[DEFAULT_CATALOGUE, ner_catalogue], batch_size=32,
                           sampling="uniform", group_by_length=False, max_eval_examples=40,
                           max_length=64)
    torch.manual_seed(0)
    module = MuppetModule(backbone=tiny_roberta, task_specs=data.task_specs,
                          optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    before = {k: v.clone() for k, v in module.heads.state_dict().items()}
    seen = TasksSeen()
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False)
    trainer = L.Trainer(max_steps=6, limit_val_batches=0, callbacks=[seen], **options)
    trainer.fit(module, datamodule=data)
    assert any(s == {0, 1, 2} for s in seen.tasks)  # a batch holding all three
    for task in tasks:
        loss = trainer.callback_metrics[f"train/{task}/loss"]
        assert torch.isfinite(loss) and 0.2 < float(loss) < 3, (task, loss)
    moved = {key.split(".")[0] for key, value in module.heads.state_dict().items()
             if not torch.equal(value, before[key])}
    assert moved == set(module.head_keys)  # each task's head trained (multiple choice: the family's shared one)
    evaluator = L.Trainer(callbacks=[WritePredictions(str(tmp_path / "predictions"))], **options)
    results = evaluator.validate(module, datamodule=data, verbose=False)[0]
    assert {"val/ner_demo/entity_f1", "val/ner_demo/token_accuracy", "val/ner_demo/loss"} <= set(results)
    evaluator.predict(module, datamodule=data)
    lines = [json.loads(line) for line in (tmp_path / "predictions" / "ner_demo.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(40))
    for line in lines:
        words = line["inputs"]["tokens"]
        assert len(line["prediction"]) == len(words) == len(line["gold"]) == len(line["predicted"])
        assert set(line["prediction"]) <= set(NAMES)
