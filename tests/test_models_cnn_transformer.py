"""The text CNN and the small Transformer: shapes, padding, masking, positions, scaling, pretrained init, learning."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.nn import functional as F

import models.cnn
from flows.train import build_initialised
from models.registry import architecture, build_model
from models.batching import TokenSet
from models.embeddings import ppmi_svd_embeddings
from models.train_loop import LoopConfig, train
from reweigh.params import TransformerParams, load_params

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 40
TINY = {"cnn": {"embedding_dim": 8, "widths": (2, 3, 5), "filters": 4, "dropout": 0.5},
        "transformer": {"embedding_dim": 8, "layers": 2, "heads": 2, "ff": 16, "dropout": 0.1, "max_len": 64}}


def _model(name: str, n_classes: int = 3, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, VOCAB, n_classes, **{**TINY[name], **kw}).eval()


def _batch(lengths: list[int], T: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), T or max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(2, VOCAB, (n,), generator=g)
    return ids, torch.tensor(lengths)


def _padded(ids: torch.Tensor, T: int) -> torch.Tensor:
    out = torch.zeros(ids.size(0), T, dtype=torch.long)
    out[:, :ids.size(1)] = ids
    return out


def _same_when_padded(model: torch.nn.Module, lengths: list[int]) -> bool:
    """Each review alone (padded to its own length) and all of them in one batch padded to 30: same logits?"""
    ids, lens = _batch(lengths)
    alone = torch.cat([model(ids[i:i + 1, :n], lens[i:i + 1]) for i, n in enumerate(lengths)])  # (B, C)
    return torch.allclose(model(_padded(ids, 30), lens), alone, atol=1e-5)


# --- shapes -------------------------------------------------------------------------------------------------

def test_cnn_shapes_even_when_the_batch_is_shorter_than_the_widest_kernel():
    model = _model("cnn")
    assert model(*_batch([7, 3, 5, 1])).shape == (4, 3)
    assert model(*_batch([2, 1])).shape == (2, 3), "T=2 < widest kernel 5 must still work"
    maps = model.encoder(*_batch([7, 3]))
    assert [tuple(m.shape) for m in maps] == [(2, 4, 6), (2, 4, 5), (2, 4, 3)]  # (B, F, T - K + 1)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_transformer_shapes_and_attention(pooling):
    model = _model("transformer", pooling=pooling)
    ids, lengths = _batch([7, 3, 5, 1])
    logits, att = model(ids, lengths, return_attention=True)
    assert logits.shape == (4, 3)
    assert att["self"].shape == (4, 2, 7, 7)  # the last block's (B, nh, T, T)
    assert att["pool"].shape == (4, 7)  # (B, T)
    assert torch.allclose(att["pool"].sum(-1), torch.ones(4))
    for i, n in enumerate(lengths.tolist()):
        assert torch.all(att["pool"][i, n:] == 0), "pooling must give padding no weight"
        assert torch.all(att["self"][i, :, :, n:] == 0), "no token may attend to padding"
    if pooling == "mean":
        assert torch.allclose(att["pool"][2, :5], torch.full((5,), 0.2))
    assert torch.allclose(model(ids, lengths), logits, atol=1e-6), "the fused route must equal the spelled-out one"


# --- padding and masking ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kw", [
    ("cnn", {}), ("cnn", {"widths": (1,)}),
    ("transformer", {}), ("transformer", {"positional_encoding": "learned", "pooling": "attention"}),
    ("transformer", {"positional_encoding": "none", "layers": 1}),
])
def test_padding_does_not_change_a_prediction(name, kw):
    model = _model(name, **kw)
    assert _same_when_padded(model, [6, 2, 11, 1])  # 2 and 1 are shorter than the widest kernel
    with torch.no_grad():
        model.encoder.embedding.weight[0].normal_()  # whatever <pad>'s vector holds (a pretrained one, say)
    assert _same_when_padded(model, [6, 2, 11, 1])


def _cnn_that_prefers_empty_windows() -> torch.nn.Module:
    """Real tokens drive every filter below zero, a window of zeros gives relu(bias) > 0: unless padded windows
    are masked out of the max, padding wins it and changes the prediction."""
    model = _model("cnn", dropout=0.0)
    with torch.no_grad():
        model.encoder.embedding.weight.uniform_(0.5, 1.0)
        for conv in model.encoder.convs:
            conv.weight.fill_(-1.0)
            conv.bias.fill_(0.5)
        model.head.weight.normal_()
    return model


def test_cnn_max_over_time_reads_real_windows_only(monkeypatch):
    model = _cnn_that_prefers_empty_windows()
    assert _same_when_padded(model, [6, 2, 11, 1])
    # the same model with the window mask switched off: padding now changes the logits
    monkeypatch.setattr(models.cnn, "real_windows", lambda lengths, n, k: torch.ones(len(lengths), n, dtype=torch.bool))
    assert not _same_when_padded(model, [6, 2, 11, 1])


def test_transformer_without_the_padding_mask_lets_padding_change_predictions():
    masked = _model("transformer")
    unmasked = _model("transformer", mask_padding=False)
    unmasked.load_state_dict(masked.state_dict())
    assert _same_when_padded(masked, [6, 2, 11])
    assert not _same_when_padded(unmasked, [6, 2, 11])
    ids, lengths = _batch([11, 6])
    assert torch.allclose(masked(ids, lengths)[0], unmasked(ids, lengths)[0], atol=1e-6), \
        "a review with no padding is the same either way"


# --- positions and scaling ----------------------------------------------------------------------------------

def test_sinusoidal_positions():
    pe = _model("transformer").encoder.positions.pe  # (max_len, D)
    assert pe.shape == (64, 8)
    assert torch.all(pe[0, 0::2] == 0) and torch.all(pe[0, 1::2] == 1), "position 0: sin 0 = 0, cos 0 = 1"
    assert torch.allclose(pe[:, 0], torch.sin(torch.arange(64.0)))  # the fastest pair: frequency 1
    assert torch.allclose(pe[:, 0::2] ** 2 + pe[:, 1::2] ** 2, torch.ones(64, 4))
    assert len({tuple(row) for row in pe.round(decimals=4).tolist()}) == 64, "every position has its own code"


@pytest.mark.parametrize("positional_encoding", ["sinusoidal", "learned"])
def test_only_positions_make_word_order_matter(positional_encoding):
    ids, lengths = _batch([9, 9])
    shuffled = ids[:, torch.randperm(9, generator=torch.Generator().manual_seed(1))]
    bag = _model("transformer", positional_encoding="none")
    assert torch.allclose(bag(ids, lengths), bag(shuffled, lengths), atol=1e-5), "without positions: a bag of words"
    ordered = _model("transformer", positional_encoding=positional_encoding)
    if positional_encoding == "learned":
        with torch.no_grad():
            ordered.encoder.positions.weight.normal_()  # its 0.02 start hardly moves a logit
    assert not torch.allclose(ordered(ids, lengths), ordered(shuffled, lengths), atol=1e-4)


def test_unscaled_scores_change_the_output_on_both_routes():
    scaled = _model("transformer")
    unscaled = _model("transformer", scale=False)
    unscaled.load_state_dict(scaled.state_dict())
    ids, lengths = _batch([7, 4])
    assert scaled.encoder.blocks[0].attention.scale == pytest.approx(1 / 2)  # 1/sqrt(hd), hd = 8 / 2 heads
    assert not torch.allclose(scaled(ids, lengths), unscaled(ids, lengths), atol=1e-4)
    logits, att = unscaled(ids, lengths, return_attention=True)
    assert torch.allclose(unscaled(ids, lengths), logits, atol=1e-6), "the fused route must leave out the scale too"
    # unscaled scores are sqrt(hd) = 2x larger, so the attention is sharper (lower entropy) than scaled
    entropy = lambda w: -(w * w.clamp_min(1e-12).log()).sum(-1)[0, :, :7].mean()  # noqa: E731
    assert entropy(att["self"]) < entropy(scaled(ids, lengths, return_attention=True)[1]["self"])


def test_a_review_longer_than_max_len_says_which_param_to_raise():
    with pytest.raises(ValueError, match="max_len"):
        _model("transformer", max_len=8)(*_batch([9]))
    with pytest.raises(ValidationError, match="heads=3 must divide"):
        TransformerParams(heads=3)


# --- the CNN's token contributions --------------------------------------------------------------------------

def test_cnn_token_contributions_add_up_to_the_logit():
    model = _model("cnn")
    ids, lengths = _batch([9, 2, 5])
    logits, shares = model.token_contributions(_padded(ids, 12), lengths)
    assert shares.shape == (3, 12)
    target = logits.argmax(-1)
    assert torch.allclose(shares.sum(-1), logits.gather(1, target[:, None])[:, 0] - model.head.bias[target], atol=1e-5)
    for i, n in enumerate(lengths.tolist()):
        assert torch.all(shares[i, n:] == 0), "padding contributes nothing"


# --- params, pretrained init, learning ----------------------------------------------------------------------

def _params(init: str, dim: int = 16):
    p = load_params(ROOT / "params.yaml")
    model = {name: getattr(p.model, name).model_copy(update={"init": init, "embedding_dim": dim})
             for name in ("cnn", "transformer")}
    return p.model_copy(update={"model": p.model.model_copy(update=model)})


def test_params_yaml_builds_both_models():
    p = load_params(ROOT / "params.yaml")
    assert p.model.cnn.widths == [3, 4, 5] and p.model.transformer.positional_encoding == "sinusoidal"
    for name in ("cnn", "transformer"):
        model = build_model(name, VOCAB, 2, **architecture(name, getattr(p.model, name).model_dump())).eval()
        assert model(*_batch([5, 3])).shape == (2, 2)


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_training_starts_from_the_pretrained_embedding(tmp_path, name):
    rng = np.random.default_rng(0)
    vectors, counts = ppmi_svd_embeddings(rng.integers(2, VOCAB, size=3000), np.array([0, 1000, 2000]), VOCAB, 16,
                                          window=2, seed=0)
    path = tmp_path / "pretrained.pt"
    torch.save({"method": "ppmi_svd", "params": {"dim": 16}, "seed": 0,
                "embedding": torch.from_numpy(vectors), "counts": torch.from_numpy(counts)}, path)
    model, _, note = build_initialised(name, _params("pretrained"), VOCAB, 2, pretrained=path)
    assert torch.equal(model.encoder.embedding.weight.detach(), torch.from_numpy(vectors))
    assert note.startswith("pretrained")
    random_model, _, _ = build_initialised(name, _params("random"), VOCAB, 2, pretrained=path)
    assert not torch.equal(random_model.encoder.embedding.weight.detach(), torch.from_numpy(vectors))
    # embedding_lr_scale reaches the token embedding and nothing else (not the learned positions)
    learned = build_model(name, VOCAB, 2, **TINY[name], **({"positional_encoding": "learned"} if name == "transformer" else {}))
    assert [n for n, _ in learned.named_parameters() if n.endswith("embedding.weight")] == ["encoder.embedding.weight"]


def _toy_data(n: int, seed: int) -> TokenSet:
    """Two classes: class c's reviews are sprinkled with token 2 + c among noise."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        doc = rng.integers(4, VOCAB, size=rng.integers(3, 20))
        doc[rng.random(len(doc)) < 0.3] = 2 + i % 2
        docs.append(doc.tolist())
    return TokenSet.from_lists(docs, np.arange(n) % 2)


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_a_few_steps_reduce_the_loss(name):
    data = _toy_data(64, 0)
    ids, lengths, y = data.batch(np.arange(64))
    model = _model(name, n_classes=2).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(ids, lengths), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_the_training_loop_trains_them(name):
    torch.manual_seed(0)
    model = build_model(name, VOCAB, 2, **TINY[name])
    cfg = LoopConfig(batch_size=16, epochs=3, lr=1e-2, patience=3, threads=1, seed=0)
    result = train(model, _toy_data(160, 1), _toy_data(60, 2), cfg, log=lambda _m: None)
    assert result.history[-1]["val_accuracy"] > 0.75, result.history


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_a_pretrained_gru_encoder_is_left_out_and_the_embedding_still_loaded(tmp_path, name):
    """pretrain.encoder_epochs > 0 saves a GRU encoder: it fits the GRUs only; these models take the vectors."""
    vectors = torch.randn(VOCAB, 16)
    path = tmp_path / "pretrained.pt"
    torch.save({"method": "ppmi_svd", "embedding": vectors, "encoder": {"embedding.weight": vectors},
                "encoder_config": {"hidden_size": 8}}, path)
    model, _, note = build_initialised(name, _params("pretrained"), VOCAB, 2, pretrained=path)
    assert torch.equal(model.encoder.embedding.weight.detach(), vectors)
    assert "GRU encoder does not fit this model" in note
