"""The models and the training loop, in process: shapes, padding invariance, batching, determinism, resume."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from models.registry import build_model, count_parameters
from models.batching import TokenSet, bucket_batches, read_token_sets, sorted_batches
from models.gru import reverse_within_length
from models.train_loop import LoopConfig, predict_proba, train

VOCAB = 50


def _batch(lengths: list[int], T: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = T or max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(2, VOCAB, (n,), generator=g)
    return ids, torch.tensor(lengths)


def _model(name: str, n_classes: int = 3, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    hyper = {"embedding_dim": 8, "hidden_size": 8, "dropout": 0.1, **kw}
    if name == "gru_attention":
        hyper.setdefault("heads", 2)
    return build_model(name, VOCAB, n_classes, **hyper).eval()


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_gru_output_shape(pooling, bidirectional):
    model = _model("gru", pooling=pooling, bidirectional=bidirectional, num_layers=2)
    ids, lengths = _batch([7, 3, 5, 1])
    assert model(ids, lengths).shape == (4, 3)


@pytest.mark.parametrize("positional_encoding", [False, True])
def test_attention_shapes_and_weights(positional_encoding):
    model = _model("gru_attention", positional_encoding=positional_encoding)
    ids, lengths = _batch([7, 3, 5, 1])
    logits, att = model(ids, lengths, return_attention=True)
    assert logits.shape == (4, 3)
    assert att["self"].shape == (4, 2, 7, 7)  # (B, nh, T, T)
    assert att["pool"].shape == (4, 7)  # (B, T)
    assert torch.allclose(att["pool"].sum(-1), torch.ones(4))
    for i, n in enumerate(lengths.tolist()):
        assert torch.all(att["pool"][i, n:] == 0), "attention pooling must give padding no weight"
        assert torch.all(att["self"][i, :, :, n:] == 0), "no token may attend to padding"
    # the fused path (training / plain inference) computes the same logits as the spelled-out one
    assert torch.allclose(model(ids, lengths), logits, atol=1e-6)


@pytest.mark.parametrize("name,kw", [
    ("gru", {"pooling": "mean"}), ("gru", {"pooling": "max"}), ("gru", {"pooling": "last"}),
    ("gru", {"pooling": "last", "bidirectional": False, "num_layers": 2}), ("gru", {"packed": True}),
    ("gru_attention", {}), ("gru_attention", {"positional_encoding": True, "num_layers": 2}),
])
def test_padding_does_not_change_a_prediction(name, kw):
    model = _model(name, **kw)
    ids, lengths = _batch([6])
    short = model(ids, lengths)  # padded to its own length
    long_ids = torch.zeros(1, 40, dtype=torch.long)
    long_ids[0, :6] = ids[0]
    padded = model(long_ids, lengths)  # the same review padded to 40
    assert torch.allclose(short, padded, atol=1e-5), (short, padded)
    # and in a batch beside a longer review
    batch = torch.zeros(2, 25, dtype=torch.long)
    batch[0, :6], batch[1] = ids[0], torch.randint(2, VOCAB, (25,))
    assert torch.allclose(model(batch, torch.tensor([6, 25]))[0], short[0], atol=1e-5)


def test_fast_route_equals_packed_sequences():
    fast = _model("gru", num_layers=2, packed=False)
    packed = _model("gru", num_layers=2, packed=True)
    packed.load_state_dict(fast.state_dict())
    ids, lengths = _batch([9, 4, 6, 1])
    assert torch.allclose(fast(ids, lengths), packed(ids, lengths), atol=1e-6)


def test_reverse_within_length_keeps_padding_in_place():
    x = torch.arange(8).view(2, 4, 1).float()
    out = reverse_within_length(x, torch.tensor([3, 4]))
    assert out[..., 0].tolist() == [[2, 1, 0, 3], [7, 6, 5, 4]]


def test_number_of_classes_comes_from_the_labels():
    for c in (2, 5):
        model = build_model("gru_attention", VOCAB, c, embedding_dim=8, hidden_size=8, heads=2)
        ids, lengths = _batch([4, 2])
        assert model(ids, lengths).shape == (2, c)
    assert count_parameters(model) > 0


def test_bucketing_covers_every_review_once_and_groups_lengths():
    lengths = np.random.default_rng(0).integers(1, 500, size=1000)
    batches = bucket_batches(lengths, 32, seed=7)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert all(np.array_equal(a, b) for a, b in zip(batches, bucket_batches(lengths, 32, seed=7)))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    unbucketed = np.mean([lengths[b].max() - lengths[b].min() for b in bucket_batches(lengths, 32, seed=7, bucketing=False)])
    assert spread < unbucketed / 5, (spread, unbucketed)
    assert sorted(np.concatenate(list(sorted_batches(lengths, 64))).tolist()) == list(range(1000))


def test_batches_pad_to_the_longest_in_the_batch_only():
    data = TokenSet.from_lists([[3, 4, 5], [6], [], [7, 8]], np.array([0, 1, 2, 0]))
    ids, lengths, labels = data.batch(np.array([1, 3]))
    assert ids.tolist() == [[6, 0], [7, 8]] and lengths.tolist() == [1, 2] and labels.tolist() == [1, 0]
    assert data.batch(np.array([2]))[0].tolist() == [[1]], "an empty review becomes one <unk>"


def test_token_sets_read_from_the_file_a_batch_at_a_time_equal_the_whole_table_read(tmp_path):
    import polars as pl

    from flows.outputs import limit_labels
    from flows.train import token_sets

    rng = np.random.default_rng(0)
    n = 3000
    docs = [rng.integers(2, 500, rng.integers(0, 40)).tolist() for _ in range(n)]  # empty ones among them
    table = pl.DataFrame({"id": [f"r{i}" for i in range(n)], "split": rng.choice(["train", "val", "test", "unsup"], n).tolist(),
                          "label_id": rng.integers(0, 3, n), "ids": pl.Series(docs, dtype=pl.List(pl.UInt32))})
    table.write_parquet(tmp_path / "tokens.parquet", row_group_size=700)  # five row groups
    assert sum(len(d) == 0 for d in docs) > 10
    for limit in (0, 900):
        whole = limit_labels(table, limit, 7)
        splits, data = token_sets(tmp_path / "tokens.parquet", limit, 7)
        small = read_token_sets(tmp_path / "tokens.parquet", {s: (df["row"].to_numpy(), df["label_id"].to_numpy())
                                                              for s, df in splits.items()}, batch_rows=256)
        for s in ("train", "val", "test"):
            want = TokenSet.from_frame(whole.filter(pl.col("split") == s))
            assert splits[s]["id"].to_list() == whole.filter(pl.col("split") == s)["id"].to_list()
            assert data[s].ids.dtype == np.uint32 and np.array_equal(data[s].ids, want.ids)
            assert np.array_equal(small[s].ids, want.ids)  # reads that cut across row groups
            for got, ref in ((data[s].offsets, want.offsets), (data[s].lengths, want.lengths), (data[s].labels, want.labels)):
                assert np.array_equal(got, ref)
        assert len(data["train"]) + len(data["val"]) < 1000 if limit else len(data["train"]) > 500


def _toy_data(n: int, seed: int) -> TokenSet:
    """Three classes: class c's reviews are sprinkled with tokens 2+c."""
    rng = np.random.default_rng(seed)
    docs, labels = [], []
    for i in range(n):
        c = i % 3
        doc = rng.integers(10, VOCAB, size=rng.integers(5, 30))
        doc[rng.random(len(doc)) < 0.3] = 2 + c
        docs.append(doc.tolist())
        labels.append(c)
    return TokenSet.from_lists(docs, np.array(labels))


def _run(name: str, cfg: LoopConfig):
    torch.manual_seed(cfg.seed)
    model = build_model(name, VOCAB, 3, embedding_dim=16, hidden_size=16, **({"heads": 2} if name == "gru_attention" else {}))
    result = train(model, _toy_data(240, 1), _toy_data(60, 2), cfg, log=lambda _m: None)
    model.load_state_dict(result.best_state)
    return result, predict_proba(model, _toy_data(60, 3), 16)


@pytest.mark.parametrize("name", ["gru", "gru_attention"])
def test_training_is_seeded_and_learns(name):
    cfg = LoopConfig(batch_size=16, epochs=3, lr=1e-2, patience=3, threads=1, seed=3)
    a, probs_a = _run(name, cfg)
    b, probs_b = _run(name, cfg)
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert np.array_equal(probs_a, probs_b), "same params + seed must give the same predictions"
    assert a.history[-1]["val_accuracy"] > 0.6, a.history


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    ckpt = tmp_path / "gru.ckpt"
    base = dict(batch_size=16, lr=1e-2, patience=5, threads=1, seed=5, checkpoint=ckpt, fingerprint="x")
    straight, probs_straight = _run("gru", LoopConfig(epochs=3, **{**base, "checkpoint": tmp_path / "other.ckpt"}))
    _run("gru", LoopConfig(epochs=2, **base))  # "interrupted" after epoch 2
    resumed, probs_resumed = _run("gru", LoopConfig(epochs=3, resume=True, **base))
    assert resumed.resumed_from == 2
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)
    assert np.array_equal(probs_resumed, probs_straight)
    # a checkpoint written with other params is not resumed
    other, _ = _run("gru", LoopConfig(epochs=1, resume=True, **{**base, "fingerprint": "y"}))
    assert other.resumed_from == 0


def test_early_stopping_keeps_the_best_epoch():
    # lr so high that validation accuracy cannot keep improving: training stops after `patience` bad epochs
    cfg = LoopConfig(batch_size=16, epochs=12, lr=0.5, patience=1, threads=1, seed=0)
    result, _ = _run("gru", cfg)
    best = max(result.history, key=lambda h: h["val_accuracy"])
    assert result.best_epoch == best["epoch"]
    assert result.epochs_run < 12


def test_linear_schedule_changes_training_and_resumes_exactly(tmp_path):
    base = dict(batch_size=16, epochs=3, lr=1e-2, patience=5, threads=1, seed=5, fingerprint="x")
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    constant, _ = _run("gru", LoopConfig(lr_schedule="constant", **base))
    straight, probs_straight = _run("gru", LoopConfig(lr_schedule="linear", checkpoint=tmp_path / "a.ckpt", **base))
    assert strip(straight.history) != strip(constant.history), "the schedule must change the updates"

    def stop_in_epoch_3(message: str) -> None:  # killed after epoch 3's work, before its checkpoint
        if message.startswith("epoch 3/"):
            raise KeyboardInterrupt

    cfg = LoopConfig(lr_schedule="linear", checkpoint=tmp_path / "b.ckpt", **base)
    torch.manual_seed(cfg.seed)
    model = build_model("gru", VOCAB, 3, embedding_dim=16, hidden_size=16)
    with pytest.raises(KeyboardInterrupt):
        train(model, _toy_data(240, 1), _toy_data(60, 2), cfg, log=stop_in_epoch_3)
    resumed, probs_resumed = _run("gru", dataclasses.replace(cfg, resume=True))
    assert resumed.resumed_from == 2
    assert strip(resumed.history) == strip(straight.history)
    assert np.array_equal(probs_resumed, probs_straight)


@pytest.mark.parametrize("name,hyper", [("gru", {"embedding_dim": 8, "hidden_size": 8}),
                                         ("gru_attention", {"embedding_dim": 8, "hidden_size": 8, "heads": 2}),
                                         ("cnn", {"embedding_dim": 8, "filters": 4}),
                                         ("transformer", {"embedding_dim": 8, "heads": 2, "ff": 16})])
def test_adversary_moves_each_review_by_epsilon_words_uphill(name, hyper):
    from models.train_loop import EmbeddingAdversary
    torch.manual_seed(0)
    model = build_model(name, VOCAB, 3, **hyper).eval()  # eval: no dropout, so the passes see the same network
    ids, lengths = _batch([7, 3, 5])
    labels = torch.tensor([0, 1, 2])
    adversary = EmbeddingAdversary(model, epsilon=0.5)
    _, clean, delta = adversary.perturbation(ids, lengths, labels)
    assert delta.shape == (*ids.shape, 8)
    assert torch.all(delta[ids == 0] == 0), "padding is never perturbed"
    e = adversary.embedding(ids)  # (B, T, E)
    word = e[ids != 0].norm(dim=-1).mean()
    assert torch.allclose(delta.flatten(1).norm(dim=1), 0.5 * word.expand(3), rtol=1e-4)
    attacked = F.cross_entropy(adversary.perturbed(delta, ids, lengths), labels)
    assert attacked > clean, "the perturbation follows the loss's gradient, so the loss rises"
    assert F.cross_entropy(adversary.perturbed(-delta, ids, lengths), labels) < clean
    adversary.remove()
    assert torch.equal(model(ids, lengths), model(ids, lengths)), "the hook is gone: plain forwards again"


@pytest.mark.parametrize("embedding_lr_scale", [1.0, 0.0])
def test_adversarial_training_is_seeded_learns_and_differs(embedding_lr_scale):
    cfg = LoopConfig(batch_size=16, epochs=3, lr=1e-2, patience=3, threads=1, seed=3,
                     embedding_lr_scale=embedding_lr_scale)
    plain, _ = _run("gru", cfg)
    a, probs_a = _run("gru", dataclasses.replace(cfg, adversarial=1.0))
    b, probs_b = _run("gru", dataclasses.replace(cfg, adversarial=1.0))
    assert np.array_equal(probs_a, probs_b), "same params + seed must give the same predictions"
    assert a.history[-1]["val_accuracy"] > 0.6, a.history
    assert a.history[0]["train_loss"] != plain.history[0]["train_loss"], "the attack's gradient changes training"
