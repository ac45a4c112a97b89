"""A model's start from the pretrain stage's output (artifacts/pretrained.pt, models/embeddings.py and
models/language_model.py): its token vectors always, its GRU encoder where the model has one that fits.

One function for every caller: `flows/train.py` (the train stages) and `bench/ablations.py` (the same training
without Prefect, on a GPU machine), so both start a model the same way. torch only.

Shapes: V vocabulary, D the pretrained width (pretrain.dim), E the model's embedding width.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.gru import GRUEncoder


class PretrainedMismatch(ValueError):
    """The pretrained weights do not fit the model params.yaml asks for; the message says which keys to match."""


def start_from(model: nn.Module, saved: dict[str, Any], name: str) -> bool:
    """Copy `saved["embedding"]` (V, D) into the model's embedding (V, E); where `saved` holds a GRU encoder
    and the model is a GRU, load that whole encoder (embedding included). True when the encoder was loaded.
    `name` is the model's params.yaml name, for the error message."""
    vectors = saved["embedding"]  # (V, D)
    table = model.encoder.embedding.weight  # (V, E)
    if vectors.shape != table.shape:
        raise PretrainedMismatch(
            f"model.{name}: the pretrained embedding is {tuple(vectors.shape)} (vocabulary x pretrain.dim) but the "
            f"model's is {tuple(table.shape)} (vocabulary x model.{name}.embedding_dim): set model.{name}.embedding_dim "
            f"to pretrain.dim ({vectors.shape[1]}), or model.{name}.init: random")
    if "encoder" not in saved or not isinstance(model.encoder, GRUEncoder):  # the encoder fits the GRUs only
        with torch.no_grad():
            table.copy_(vectors)
        return False
    mine = model.encoder.state_dict()
    if {k: v.shape for k, v in saved["encoder"].items()} != {k: v.shape for k, v in mine.items()}:
        have, cfg = saved["encoder_config"], model.encoder.cfg
        raise PretrainedMismatch(
            f"model.{name}: the pretrained GRU encoder has hidden_size {have['hidden_size']} x 2 directions, 1 layer; "
            f"model.{name} asks for hidden_size {cfg.hidden_size}, num_layers {cfg.num_layers}, "
            f"bidirectional {cfg.bidirectional}: match pretrain.hidden_size, or set pretrain.encoder_epochs: 0 "
            f"(embeddings only), or model.{name}.init: random")
    model.encoder.load_state_dict(saved["encoder"])
    return True
