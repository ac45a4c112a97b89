"""bench/ablations.py: the variants change only what they say, and the padding check tells a masked model
from an unmasked one. Small synthetic arrays, real torch training (one epoch); the section's export from a
real `dvc repro pretrain` runs in test_bench.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bench import ablations
from models.batching import TokenSet

ROOT = Path(__file__).resolve().parents[1]
V, D = 60, 16
SMALL = ["model.transformer.embedding_dim=16", "model.transformer.heads=2", "model.transformer.ff=32",
         "model.transformer.layers=1", "model.gru_attention.embedding_dim=16", "model.gru_attention.hidden_size=8",
         "model.gru_attention.heads=2", "train.threads=1", "train.batch_size=8"]  # 16 a test batch: lengths vary


def _arrays(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    lengths = rng.integers(3, 40, size=n)
    labels = rng.integers(0, 2, size=n)
    # class 1 reviews carry token 7 somewhere, class 0 token 8: learnable in one epoch, order irrelevant
    docs = [np.concatenate([[7 if y else 8], rng.integers(2, V, size=k - 1)]) for k, y in zip(lengths, labels)]
    return {"ids": np.concatenate(docs).astype(np.uint16), "lengths": lengths.astype(np.int32), "labels": labels.astype(np.int32)}


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    splits = {s: _arrays(n, rng) for s, n in (("train", 160), ("val", 40), ("test", 120))}
    np.savez_compressed(tmp_path / "tokens.npz", **{f"{s}_{k}": v for s, a in splits.items() for k, v in a.items()})
    torch.save({"method": "ppmi_svd", "embedding": torch.randn(V, D, generator=torch.Generator().manual_seed(0))},
               tmp_path / "pretrained.pt")
    meta = {"labels": ["neg", "pos"], "vocab_size": V, "params": yaml.safe_load((ROOT / "params.yaml").read_text()),
            "rows": {s: len(a["lengths"]) for s, a in splits.items()}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    return tmp_path


def test_shuffling_keeps_each_reviews_tokens_and_changes_their_order():
    data = TokenSet.from_lists([[2, 3, 4, 5, 6, 7, 8, 9], [10, 11], [12], [13, 14, 15, 16, 17, 18]], np.array([0, 1, 0, 1]))
    mixed = ablations.shuffled(data, seed=0)
    for i in range(len(data)):
        a = data.ids[data.offsets[i]:data.offsets[i] + data.lengths[i]]
        b = mixed.ids[mixed.offsets[i]:mixed.offsets[i] + mixed.lengths[i]]
        assert sorted(a) == sorted(b), "a review keeps its own tokens"
    assert not np.array_equal(data.ids, mixed.ids), "and their order changes"
    assert np.array_equal(mixed.labels, data.labels) and np.array_equal(mixed.lengths, data.lengths)


def test_variants_differ_only_in_their_switch():
    for name, v in ablations.VARIANTS.items():
        if v.reference:
            ref = ablations.VARIANTS[v.reference]
            assert v.model == ref.model, name
            assert (v.change != ref.change) or (v.shuffle != ref.shuffle), f"{name} changes nothing"
    assert "gru" not in ablations.ABLATIONS and "transformer_unmasked" in ablations.ABLATIONS


def test_padding_changes_predictions_only_without_the_mask(exported: Path, tmp_path: Path):
    out = tmp_path / "r.json"
    r = ablations.run(exported, out, ["transformer", "transformer_unmasked", "transformer_shuffled"], device="cpu",
                      epochs=1, overrides=SMALL)
    assert json.loads(out.read_text()) == json.loads(json.dumps(r)), "the file holds the whole result"
    masked, unmasked = r["variants"]["transformer"], r["variants"]["transformer_unmasked"]
    assert masked["padding_share"] > 0.3, "random batches pad heavily"
    assert masked["predictions_changed"] == 0 and masked["max_probability_change"] < 1e-5
    assert unmasked["max_probability_change"] > 1e-3, "without the mask padding moves the probabilities"
    for v in r["variants"].values():
        assert 0 <= v["test_accuracy"] <= 1 and v["epochs"] == 1 and len(v["history"]) == 1 and v["s_per_epoch"] >= 0
        assert v["init"] == "ppmi_svd"
    assert r["meta"]["overrides"] == SMALL and r["meta"]["epochs_cap"] == 1
    md = "\n".join(ablations.render(r))
    assert "| transformer | " in md and "reference" in md and "| transformer_unmasked | " in md


def test_an_unknown_override_or_variant_says_what_is_wrong(exported: Path, tmp_path: Path):
    with pytest.raises(SystemExit, match="params.yaml has no model.gru.widths"):
        ablations.run(exported, tmp_path / "r.json", ["gru"], device="cpu", overrides=["model.gru.widths=3"])
    with pytest.raises(SystemExit, match="unknown variant"):
        ablations.run(exported, tmp_path / "r.json", ["lstm"], device="cpu")
