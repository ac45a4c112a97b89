"""The benchmark's data: the IMDB archive through the project's own adapter, sampled in --quick mode."""
from __future__ import annotations

import os
from pathlib import Path

import polars as pl

ENV_ARCHIVE = "REWEIGH_IMDB_ARCHIVE"


def resolve_archive(cli_archive: str | None, params_archive: str | None) -> str | None:
    """--archive, else $REWEIGH_IMDB_ARCHIVE, else params.yaml's dataset.options.archive, else None
    (the adapter then uses its cached official download, fetching it once)."""
    for candidate in (cli_archive, os.environ.get(ENV_ARCHIVE), params_archive):
        if candidate:
            return str(Path(candidate).expanduser().resolve())
    return None


def load_reviews(archive: str | None, limit: int, seed: int) -> pl.DataFrame:
    """id, text, label, split (train/test/unsup) of every review; at most `limit` per split when limit > 0."""
    from adapters.imdb import ImdbAdapter
    from flows.common import cache_dir

    df = ImdbAdapter(archive=archive, include_unsup=True, verify_counts=False).load(cache_dir())
    df = df.select("id", "text", "label", "split")
    if limit:
        parts = [g.sample(n=min(limit, g.height), seed=seed) for _, g in df.group_by("split", maintain_order=True)]
        df = pl.concat(parts).sort("id")
    return df
