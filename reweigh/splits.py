"""Seeded, stratified splits (the test split of a table without one, the validation split of train)."""
from __future__ import annotations

import numpy as np
import polars as pl


def stratified_split(labels: pl.Series, fraction: float, seed: int, picked: str, rest: str) -> pl.Series:
    """Within each label, the `fraction` of rows (rounded) with the lowest seeded random key get `picked`.

    Depends only on the labels' order and the seed, so the same table and seed give the same split.
    """
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame({"label": labels, "key": rng.random(len(labels))})
    frame = frame.with_columns(rank=pl.col("key").rank("ordinal").over("label"), n=pl.len().over("label"))
    chosen = pl.col("rank") <= (pl.col("n").cast(pl.Float64) * fraction).round().cast(pl.UInt32)
    return frame.select(pl.when(chosen).then(pl.lit(picked)).otherwise(pl.lit(rest)).alias("split")).to_series()
