"""The neural models reweigh trains, by the name params.yaml gives them (`model.<name>`)."""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from torch import nn

from models.attention import AttentionGRUClassifier, AttentionGRUConfig
from models.cnn import CNNClassifier, CNNConfig
from models.gru import GRUClassifier, GRUConfig
from models.transformer import TransformerClassifier, TransformerConfig

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "gru": (GRUConfig, GRUClassifier),
    "gru_attention": (AttentionGRUConfig, AttentionGRUClassifier),
    "cnn": (CNNConfig, CNNClassifier),  # trained when params.yaml's train.models lists it
    "transformer": (TransformerConfig, TransformerClassifier),
}


def architecture(name: str, section: dict[str, Any]) -> dict[str, Any]:
    """The fields of `model.<name>` that build the model, without the training knobs kept beside them
    (init, embedding_lr_scale, adversarial): what `build_model` takes and a checkpoint records."""
    return {k: v for k, v in section.items() if k in {f.name for f in fields(MODELS[name][0])}}


def build_model(name: str, vocab_size: int, n_classes: int, **hyper: Any) -> nn.Module:
    """A fresh model of kind `name` (gru | gru_attention | cnn | transformer) from its params.yaml section."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    config_cls, model_cls = MODELS[name]
    return model_cls(config_cls(vocab_size=vocab_size, n_classes=n_classes, **hyper))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
