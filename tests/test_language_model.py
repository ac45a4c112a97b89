"""The bidirectional language model that pretrains the GRU encoder: it learns what can be predicted, it
cannot see the token it predicts, and the classifiers start from the encoder it trained."""
from __future__ import annotations

import numpy as np
import torch

from models.batching import TokenSet
from models.gru import GRUConfig, GRUEncoder
from models.language_model import BidirectionalLM, pretrain_encoder, train_language_model

V = 30


def _lm(seed: int = 0) -> BidirectionalLM:
    torch.manual_seed(seed)
    encoder = GRUEncoder(GRUConfig(vocab_size=V, n_classes=1, embedding_dim=16, hidden_size=16, dropout=0.0))
    return BidirectionalLM(encoder, torch.ones(V), negatives=8)


def _corpus(docs: list[list[int]]) -> TokenSet:
    return TokenSet.from_lists(docs)


def _final_loss(docs: list[list[int]], epochs: int = 6) -> tuple[float, float]:
    history = train_language_model(_lm(), _corpus(docs), epochs, lr=1e-2, batch_size=16, seed=0, log=lambda _m: None)
    return history[0]["loss"], history[-1]["loss"]


def test_it_learns_a_predictable_sequence():
    # each token fixes the next and the previous one: a cycle 2 → 3 → ... → 11 → 2
    rng = np.random.default_rng(0)
    docs = [[2 + (start + i) % 10 for i in range(30)] for start in rng.integers(0, 10, size=128)]
    first, last = _final_loss(docs)
    assert last < 0.3 * first, (first, last)


def test_it_cannot_see_the_token_it_predicts():
    # independent uniform tokens: nothing to predict. A state that had read its target (an off-by-one in
    # either direction) would drive this loss towards 0, as on the cycle above.
    rng = np.random.default_rng(0)
    docs = rng.integers(2, V, size=(128, 30)).tolist()
    first, last = _final_loss(docs)
    assert last > 0.8 * first, (first, last)


def test_training_is_seeded():
    rng = np.random.default_rng(1)
    docs = rng.integers(2, V, size=(32, 20)).tolist()
    runs = []
    for _ in range(2):
        lm = _lm()
        train_language_model(lm, _corpus(docs), 1, lr=1e-2, batch_size=8, seed=3, log=lambda _m: None)
        runs.append(lm.encoder.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_the_pretrain_stage_hands_its_encoder_to_both_classifiers(tmp_path):
    from pathlib import Path

    from flows.train import build_initialised
    from reweigh.params import load_params

    root = Path(__file__).resolve().parents[1]
    p = load_params(root / "params.yaml")
    p = p.model_copy(update={
        "pretrain": p.pretrain.model_copy(update={"dim": 16, "hidden_size": 8, "encoder_epochs": 1, "negatives": 8}),
        "train": p.train.model_copy(update={"threads": 1}),
        "model": p.model.model_copy(update={m: getattr(p.model, m).model_copy(update={"embedding_dim": 16, "hidden_size": 8})
                                            for m in ("gru", "gru_attention")})})
    rng = np.random.default_rng(0)
    ids = rng.integers(2, V, size=600)
    starts = np.arange(0, 600, 30)
    vectors = torch.randn(V, 16)
    cfg = p.pretrain
    saved = pretrain_encoder(vectors, torch.ones(V, dtype=torch.long), ids, starts, max_length=p.tokenize.max_length,
                             hidden_size=cfg.hidden_size, negatives=cfg.negatives, epochs=cfg.encoder_epochs, lr=cfg.lr,
                             batch_size=cfg.batch_size, seed=p.seed)
    assert saved["history"][0]["epoch"] == 1 and not torch.equal(saved["embedding"], vectors), "it trained"
    path = tmp_path / "pretrained.pt"
    torch.save({"method": "ppmi_svd+bilm", "params": {}, "seed": 0, "counts": torch.ones(V), **saved}, path)
    for name in ("gru", "gru_attention"):
        model, _, note = build_initialised(name, p, V, 2, pretrained=path)
        assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in saved["encoder"].items()), name
        assert "GRU encoder" in note


def test_the_language_model_reads_what_the_classifiers_read():
    """cut_documents on the flat corpus = tokenize's truncate on each document, for every head size."""
    from flows.tokenize import truncate
    from models.language_model import cut_documents

    rng = np.random.default_rng(0)
    docs = [list(rng.integers(2, V, size=n)) for n in (1, 5, 10, 11, 30, 3)]
    ids = np.concatenate(docs)
    starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])[:-1]])
    for head in (0, 4, 10):
        flat, cut_starts, lengths = cut_documents(ids, starts, 10, head)
        got = [list(flat[a:a + n]) for a, n in zip(cut_starts, lengths)]
        assert got == [truncate(d, 10, "head_tail", head / 10) for d in docs], head


def test_two_threads_give_the_same_weights_twice():
    # The backward of the embedding lookup accumulates rows in whatever order torch's threads finish unless
    # deterministic kernels are on: a pretrained.pt that differed between two runs of one seed. Switched off
    # here first, so that a test run earlier in this process cannot have switched them on for it.
    rng = np.random.default_rng(2)
    docs = [rng.integers(2, V, size=int(n)).tolist() for n in rng.integers(40, 120, size=96)]
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    runs = []
    try:
        torch.set_num_threads(2)
        for _ in range(2):
            torch.use_deterministic_algorithms(False)
            lm = _lm()
            train_language_model(lm, _corpus(docs), 1, lr=1e-2, batch_size=32, seed=3, log=lambda _m: None)
            runs.append(lm.encoder.state_dict())
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0]), "two runs of one seed on 2 threads differ"
