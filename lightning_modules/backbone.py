"""The shared model: any Hugging Face encoder or encoder-decoder such as BART (the decoder reads the same tokens),
one forward per batch. Pooling (`model.pooling`): the first token, the masked mean, the model's own pooler, or for
BART the decoder state at the final EOS (as BartForSequenceClassification); `auto` picks what the checkpoint was
trained with."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (CONFIG_MAPPING, AutoConfig, AutoModel, AutoModelForSeq2SeqLM, PreTrainedModel,
                          PreTrainedTokenizerBase)
from transformers.utils import cached_file

from core.batch import BackboneOutput
from core.errors import OptionError
from core.pretrained import load_pretrained
from lightning_modules.checkpoint_files import checkpoint_parts

Pooling = Literal["auto", "first", "mean", "pooler", "eos"]


def tokenizer_source(backbone: str | None, tokenizer: str | None, init_from: str | None) -> str | None:
    """The tokenizer is given once: `model.tokenizer`, else `init_from`'s (an export folder, or the files a `.ckpt`
    stores), else the backbone's."""
    if tokenizer:
        return tokenizer
    if init_from and Path(init_from).is_dir():
        return init_from
    if init_from and Path(init_from).is_file():
        parts = checkpoint_parts(init_from)
        if parts is not None:
            return parts[1]
    return backbone


def build_backbone(name_or_path: str, config: dict[str, Any] | None, tokenizer: PreTrainedTokenizerBase
                   ) -> PreTrainedModel:
    """`from_pretrained(name_or_path)`, or a randomly initialised model from `config` (keys of the model's config
    class plus `model_type`); special-token ids and vocabulary size then come from the tokenizer."""
    if config is None:
        if not name_or_path:
            raise OptionError("model.backbone", "is not set (give a hub id or folder, or model.backbone_config)")
        model_config = load_pretrained(lambda: AutoConfig.from_pretrained(name_or_path), "backbone", name_or_path,
                                       "model.backbone")
        auto = AutoModelForSeq2SeqLM if model_config.is_encoder_decoder else AutoModel
        return load_pretrained(lambda: auto.from_pretrained(name_or_path), "backbone", name_or_path, "model.backbone")
    config = dict(config)
    model_type = config.pop("model_type", None)
    if model_type not in CONFIG_MAPPING:
        raise OptionError("model.backbone_config.model_type", f"model.backbone_config.model_type is {model_type!r}; "
                          "expected a transformers model type such as roberta, bert, deberta-v2 or bart")
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
           "bos_token_id": tokenizer.bos_token_id or tokenizer.cls_token_id,
           "eos_token_id": tokenizer.eos_token_id or tokenizer.sep_token_id}
    try:
        model_config = AutoConfig.for_model(model_type, **{**ids, **config})
        if model_config.is_encoder_decoder:
            model_config.decoder_start_token_id = config.get("decoder_start_token_id", ids["eos_token_id"])
            model_config.forced_eos_token_id = ids["eos_token_id"]
            return AutoModelForSeq2SeqLM.from_config(model_config)
        return AutoModel.from_config(model_config)
    except (ValueError, TypeError) as error:  # values that do not fit together, e.g. heads not dividing the size
        raise OptionError("model.backbone_config", str(error).strip().splitlines()[0]) from error


def shift_right(ids: torch.Tensor, pad_token_id: int, start_token_id: int) -> torch.Tensor:
    shifted = ids.new_full(ids.shape, pad_token_id)
    shifted[:, 1:] = ids[:, :-1]
    shifted[:, 0] = start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)




def sentence_transformers_pooling(source: str | None) -> str | None:
    """`mean` or `first` when `source` (folder or hub id) is a sentence-transformers checkpoint whose Pooling module
    averages the tokens or takes the CLS token; None otherwise (or when its files cannot be read)."""
    if not source:
        return None
    quiet = {"_raise_exceptions_for_missing_entries": False, "_raise_exceptions_for_connection_errors": False}
    try:
        modules_file = cached_file(source, "modules.json", **quiet)
        if not modules_file:
            return None
        modules = json.loads(Path(modules_file).read_text())
        folder = next(m["path"] for m in modules if m.get("type", "").endswith("Pooling"))
        settings = json.loads(Path(cached_file(source, f"{folder}/config.json", **quiet)).read_text())
    except (OSError, StopIteration, TypeError, ValueError, KeyError):
        return None
    if settings.get("pooling_mode_mean_tokens"):
        return "mean"
    return "first" if settings.get("pooling_mode_cls_token") else None


def resolve_pooling(pooling: str, model: PreTrainedModel, source: str | None) -> str:
    """`auto` -> the pooling the checkpoint was trained with: the one a MUPPET export recorded (`muppet_pooling` in
    its config.json), a sentence-transformers checkpoint's (MiniLM, all-mpnet, ...: mean), else `eos` for
    encoder-decoders and `first` for encoders. Other values are checked against the model."""
    encoder_decoder = bool(model.config.is_encoder_decoder)
    if pooling == "auto":
        pooling = getattr(model.config, "muppet_pooling", None) or sentence_transformers_pooling(source) \
            or ("eos" if encoder_decoder else "first")
    name = type(model).__name__
    if pooling == "pooler" and (encoder_decoder or getattr(model, "pooler", None) is None):
        raise OptionError("model.pooling", f"model.pooling=pooler: the backbone ({name}) has no pooler of its own; "
                                           f"use first or mean")
    if pooling == "first" and encoder_decoder:
        raise OptionError("model.pooling", f"model.pooling=first: the decoder of {name} is causal, its first state "
                                           f"sees only the start token; use eos or mean")
    if pooling == "eos" and not encoder_decoder:
        raise OptionError("model.pooling", f"model.pooling=eos is for encoder-decoders (BART); {name} is an encoder: "
                                           f"use first, mean or pooler")
    return pooling


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (R, T, H), (R, T) -> (R, H)
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


class Backbone(nn.Module):
    def __init__(self, model: PreTrainedModel, pooling: str = "auto", source: str | None = None,
                 length_chunks: int | None = None) -> None:
        """pooling: how a row becomes one vector for the pooled heads (`resolve_pooling`); source: the folder or hub
        id the model came from (where `auto` looks for a sentence-transformers pooling config); length_chunks: an
        encoder reads a batch's rows sorted by length in chunks of this many rows, each padded to its own longest
        row (`encode`)."""
        super().__init__()
        self.length_chunks = length_chunks
        self.model = model.train()  # `from_pretrained` returns eval mode, which would switch dropout off in training
        self.config = model.config
        self.is_encoder_decoder = bool(model.config.is_encoder_decoder)
        self.pooling = resolve_pooling(pooling, model, source)
        self.config.muppet_pooling = self.pooling  # saved with the config: an export's `auto` pools the same way
        # segment ids reach the model only when it has an embedding for a second segment (BERT, ALBERT, ELECTRA)
        self.uses_token_types = (not self.is_encoder_decoder and getattr(model.config, "type_vocab_size", 0) > 1
                                 and "token_type_ids" in inspect.signature(model.forward).parameters)

    @property
    def hidden_size(self) -> int:
        return self.config.d_model if self.is_encoder_decoder else self.config.hidden_size

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    @property
    def max_input_length(self) -> int:
        """Tokens per row the position table can read (RoBERTa-style embeddings reserve `padding_idx + 1` slots)."""
        positions = getattr(self.config, "max_position_embeddings", None) or 10 ** 9
        embeddings = getattr(self.model, "embeddings", None)
        padding_idx = getattr(embeddings, "padding_idx", None) if embeddings is not None else None
        return positions - (padding_idx + 1 if isinstance(padding_idx, int) else 0)

    def forward(self, batch: dict, lm_rows: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None,
                decoder_targets: torch.Tensor | None = None) -> BackboneOutput:
        """decoder_targets: (R, L) target ids of the rows in `lm_rows` (generative heads), which the decoder reads
        shifted right and the LM head scores."""
        input_ids, mask = batch["input_ids"], batch["attention_mask"]
        embeds = {"inputs_embeds": inputs_embeds} if inputs_embeds is not None else {"input_ids": input_ids}
        if not self.is_encoder_decoder:
            if self.uses_token_types and "token_type_ids" in batch:
                embeds["token_type_ids"] = batch["token_type_ids"]
            hidden, pooler = self.encode(mask, embeds)  # (R, T, H), (R, H) or None
            pooled = {"first": lambda: hidden[:, 0], "mean": lambda: masked_mean(hidden, mask),
                      "pooler": lambda: pooler}[self.pooling]()
            return BackboneOutput(hidden=hidden, pooled=pooled)
        decoder_ids = self._decoder_inputs(input_ids, lm_rows, decoder_targets)  # (R, max(T, L))
        hidden = self.model.model(attention_mask=mask, decoder_input_ids=decoder_ids, **embeds).last_hidden_state
        width = input_ids.shape[1]
        eos = input_ids.eq(self.config.eos_token_id) & mask.bool()
        last_eos = width - 1 - eos.flip(1).int().argmax(1)  # (R,) position of the final EOS
        pooled = hidden[torch.arange(len(hidden)), last_eos] if self.pooling == "eos" \
            else masked_mean(hidden[:, :width], mask)
        out = BackboneOutput(hidden=hidden[:, :width], pooled=pooled)
        if lm_rows is not None and len(lm_rows):
            length = decoder_targets.shape[1]
            logits = self.model.lm_head(hidden[lm_rows, :length])  # (R_lm, L, V)
            out.lm_logits = logits + self.model.final_logits_bias.to(logits.dtype) \
                if hasattr(self.model, "final_logits_bias") else logits
            out.lm_rows = lm_rows
        return out

    def encode(self, mask: torch.Tensor, embeds: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(last hidden state, pooler output) of an encoder. With `length_chunks` the rows (right-padded) run sorted
        by length in chunks of that many rows, each cut to its own longest row, and are put back in place: the same
        outputs as one call (a row attends to itself only) at the padding of length-grouped batches, so batches that
        mix tasks need not be grouped by length (`data.group_by_length`). Positions past a row's chunk width hold 0."""
        rows_total, width_total = mask.shape
        if not self.length_chunks or rows_total <= self.length_chunks:
            outputs = self.model(attention_mask=mask, **embeds)
            return outputs.last_hidden_state, getattr(outputs, "pooler_output", None)
        lengths = mask.sum(1)
        order = torch.argsort(lengths)
        hidden = pooler = None
        for start in range(0, rows_total, self.length_chunks):
            rows = order[start:start + self.length_chunks]
            width = max(1, int(lengths[rows].max()))
            outputs = self.model(attention_mask=mask[rows, :width],
                                 **{k: v[rows, :width] for k, v in embeds.items()})
            part = outputs.last_hidden_state
            if hidden is None:
                hidden = part.new_zeros(rows_total, width_total, part.shape[-1])
            hidden = hidden.index_put((rows,), F.pad(part, (0, 0, 0, width_total - width)))
            if getattr(outputs, "pooler_output", None) is not None:
                if pooler is None:
                    pooler = part.new_zeros(rows_total, outputs.pooler_output.shape[-1])
                pooler = pooler.index_put((rows,), outputs.pooler_output)
        return hidden, pooler

    def _decoder_inputs(self, source: torch.Tensor, lm_rows: torch.Tensor | None,
                        targets: torch.Tensor | None) -> torch.Tensor:
        """Every row reads its own input (shifted right); rows of generative heads read their shifted target."""
        pad, start = self.config.pad_token_id, self.config.decoder_start_token_id
        if lm_rows is None or not len(lm_rows):
            return shift_right(source, pad, start)
        width = max(source.shape[1], targets.shape[1])
        ids = source.new_full((len(source), width), pad)
        ids[:, :source.shape[1]] = source
        ids[lm_rows] = pad
        ids[lm_rows, :targets.shape[1]] = targets[lm_rows].masked_fill(
            targets[lm_rows] == -100, pad)
        return shift_right(ids, pad, start)

    def generate(self, batch: dict, **kwargs: Any) -> torch.Tensor:
        return self.model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
