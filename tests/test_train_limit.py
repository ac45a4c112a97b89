"""dataset.train_limit: a seeded, label-stratified sample of the labelled training rows, taken before the
validation split is carved from them; test and unsup untouched."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from flows.ingest import carve_validation, limit_train, smallest_train_limit
from reweigh.params import DatasetParams, ParamsError


def _frame(train_per_label: dict[str, int], test: int = 50, unsup: int = 30) -> pl.DataFrame:
    rows = [(label, "train") for label, n in train_per_label.items() for _ in range(n)]
    rows += [("neg" if i % 2 else "pos", "test") for i in range(test)] + [(None, "unsup")] * unsup
    return pl.DataFrame({"id": [str(i) for i in range(len(rows))], "text": [f"review {i}" for i in range(len(rows))],
                         "label": [r[0] for r in rows], "split": [r[1] for r in rows]})


def _counts(df: pl.DataFrame) -> dict[tuple[str, str | None], int]:
    return {(split, label): n for split, label, n in df.group_by("split", "label").len().iter_rows()}


def test_limit_then_carve_gives_900_train_and_100_val_stratified():
    df = _frame({"neg": 2000, "pos": 2000}, test=500, unsup=300)
    out = carve_validation(limit_train(df, 1000, 0.1, seed=7), 0.1, seed=7)
    assert _counts(out) == {("train", "neg"): 450, ("train", "pos"): 450, ("val", "neg"): 50, ("val", "pos"): 50,
                            ("test", "neg"): 250, ("test", "pos"): 250, ("unsup", None): 300}
    assert out.filter(pl.col("split").is_in(["test", "unsup"])).equals(df.filter(pl.col("split").is_in(["test", "unsup"])))


def test_unbalanced_labels_keep_their_proportions():
    df = _frame({"neg": 900, "pos": 300, "mixed": 300})
    out = limit_train(df, 500, 0.1, seed=1)
    assert _counts(out.filter(pl.col("split") == "train")) == {("train", "neg"): 300, ("train", "pos"): 100, ("train", "mixed"): 100}
    assert out.filter(pl.col("split") != "train").height == 80


def test_seeded_and_zero_or_large_limits_keep_everything():
    df = _frame({"neg": 200, "pos": 200})
    assert limit_train(df, 100, 0.1, seed=3).equals(limit_train(df, 100, 0.1, seed=3))
    assert not limit_train(df, 100, 0.1, seed=3)["id"].equals(limit_train(df, 100, 0.1, seed=4)["id"])
    assert limit_train(df, 0, 0.1, seed=3).equals(df)
    assert limit_train(df, 10_000, 0.1, seed=3).equals(df)


def test_limit_too_small_for_a_val_row_per_label_names_the_smallest_that_works():
    df = _frame({"neg": 500, "pos": 100})
    smallest = smallest_train_limit(np.array([500, 100]), 0.1)
    assert 30 < smallest < 40  # pos gets a sixth of the limit and needs ~6 rows for round(0.1 x rows) >= 1
    with pytest.raises(ParamsError, match=rf"train_limit={smallest - 1} .*neg 500, pos 100\): set it to at least {smallest}, or 0 for all 600"):
        limit_train(df, smallest - 1, 0.1, seed=0)
    # The smallest one works with the real split (same rounding): every label in train and in val.
    out = carve_validation(limit_train(df, smallest, 0.1, seed=0), 0.1, seed=0)
    assert set(_counts(out.filter(pl.col("split").is_in(["train", "val"])))) == {
        ("train", "neg"), ("val", "neg"), ("train", "pos"), ("val", "pos")}


def test_param_defaults_to_all_and_rejects_negatives():
    assert DatasetParams().train_limit == 0
    with pytest.raises(ValueError, match="train_limit"):
        DatasetParams(train_limit=-1)
