"""Pretrained embeddings reach the models, and the default training stops by patience, not by its cap."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flows.train import build_initialised
from models.batching import TokenSet
from models.embeddings import ppmi_svd_embeddings
from models.gru import GRUConfig, GRUEncoder
from models.train_loop import LoopConfig, train
from reweigh.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 40


def _pretrained_file(tmp_path: Path, dim: int) -> tuple[Path, torch.Tensor]:
    rng = np.random.default_rng(0)
    ids = rng.integers(2, VOCAB, size=3000)
    vectors, counts = ppmi_svd_embeddings(ids, np.array([0, 1000, 2000]), VOCAB, dim, window=2, seed=0)
    path = tmp_path / "pretrained.pt"
    torch.save({"method": "ppmi_svd", "params": {"dim": dim}, "seed": 0,
                "embedding": torch.from_numpy(vectors), "counts": torch.from_numpy(counts)}, path)
    return path, torch.from_numpy(vectors)


def _params(init: str, dim: int = 16):
    p = load_params(ROOT / "params.yaml")
    model = {name: getattr(p.model, name).model_copy(update={"init": init, "embedding_dim": dim, "hidden_size": 8})
             for name in ("gru", "gru_attention")}
    return p.model_copy(update={"model": p.model.model_copy(update=model)})


@pytest.mark.parametrize("name", ["gru", "gru_attention"])
def test_training_starts_from_the_pretrained_embedding(tmp_path, name):
    path, vectors = _pretrained_file(tmp_path, 16)
    model, _, note = build_initialised(name, _params("pretrained"), VOCAB, 2, pretrained=path)
    assert torch.equal(model.encoder.embedding.weight.detach(), vectors), "the model ignored the pretrained weights"
    assert note.startswith("pretrained")
    random_model, _, note = build_initialised(name, _params("random"), VOCAB, 2, pretrained=path)
    assert not torch.equal(random_model.encoder.embedding.weight.detach(), vectors)
    assert note.startswith("random")


@pytest.mark.parametrize("name", ["gru", "gru_attention"])
def test_training_starts_from_the_pretrained_encoder(tmp_path, name):
    """With pretrain.encoder_epochs > 0 the whole GRU encoder (embedding included) starts pretrained."""
    torch.manual_seed(7)
    encoder = GRUEncoder(GRUConfig(vocab_size=VOCAB, n_classes=1, embedding_dim=16, hidden_size=8, dropout=0.0))
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    path = tmp_path / "pretrained.pt"
    torch.save({"method": "ppmi_svd+bilm", "params": {}, "seed": 0, "embedding": state["embedding.weight"],
                "counts": torch.ones(VOCAB, dtype=torch.long), "encoder": state,
                "encoder_config": {"embedding_dim": 16, "hidden_size": 8, "num_layers": 1, "bidirectional": True}}, path)
    model, _, note = build_initialised(name, _params("pretrained"), VOCAB, 2, pretrained=path)
    mine = model.encoder.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in state.items()), "the model ignored the pretrained encoder"
    assert "encoder" in note
    wider = _params("pretrained")
    wider = wider.model_copy(update={"model": wider.model.model_copy(update={
        name: getattr(wider.model, name).model_copy(update={"hidden_size": 16})})})
    with pytest.raises(ParamsError, match=r"pretrain\.hidden_size"):
        build_initialised(name, wider, VOCAB, 2, pretrained=path)


def test_a_width_mismatch_says_which_params_to_change(tmp_path):
    path, _ = _pretrained_file(tmp_path, 12)
    with pytest.raises(ParamsError, match=r"model\.gru\.embedding_dim.*pretrain\.dim \(12\)"):
        build_initialised("gru", _params("pretrained", dim=16), VOCAB, 2, pretrained=path)


def _slow_to_learn(n: int, seed: int) -> TokenSet:
    """Two classes told apart only by a weak cue (one token in ten) among noise: several epochs to learn."""
    rng = np.random.default_rng(seed)
    docs, labels = [], []
    for i in range(n):
        doc = rng.integers(4, VOCAB, size=rng.integers(20, 40))
        doc[rng.random(len(doc)) < 0.1] = 2 + i % 2
        docs.append(doc.tolist())
        labels.append(i % 2)
    return TokenSet.from_lists(docs, np.array(labels))


def test_default_training_stops_by_patience_not_by_the_cap():
    p = load_params(ROOT / "params.yaml")
    cfg = LoopConfig(**{**p.train.loop_fields(), "threads": 1}, seed=p.seed)
    model, _, _ = build_initialised("gru", _params("random"), VOCAB, 2)
    result = train(model, _slow_to_learn(400, 1), _slow_to_learn(200, 2), cfg, log=lambda _m: None)
    val = [row["val_accuracy"] for row in result.history]
    assert val[2] > val[1] or val[2] > val[0], f"this dataset must still be learning at epoch 3: {val}"
    assert result.epochs_run > 3, val
    assert result.epochs_run < cfg.epochs, "the default cap, not early stopping, ended training"
    assert result.stop_reason.startswith("early stopping"), result.stop_reason
    assert result.best_epoch == int(np.argmax(val)) + 1
