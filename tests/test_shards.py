"""engine.kind: dask: clean and tokenize run their batches as Prefect tasks on a real 2-worker Dask LocalCluster
(prefect-dask) and write the same tables as the local path, in the same order: on the cluster a stage starts for
itself (no engine.address) and on a running one named by engine.address, as a cluster elsewhere would be."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from flows.clean import STEPS
from flows.shards import row_ranges, run_batches
from flows.tokenize import train_tokenizer, write_tokens
from reweigh import io
from reweigh.params import EngineParams, TokenizeParams

pytestmark = pytest.mark.slow
COLUMNS = ["id", "text", "label", "split"]
DASK = EngineParams(kind="dask", workers=2)


@pytest.fixture(scope="module")
def scheduler():
    """A running 2-worker Dask cluster's address (engine.address): its workers import the stage code once for
    every test here, where each LocalCluster a stage starts imports it again (about 30 s on this machine)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, processes=True) as cluster:
        yield cluster.scheduler_address


def _table(n: int) -> pl.DataFrame:
    words = ["great", "awful", "plot", "acting", "music", "boring", "moving", "film"]
    texts = [f"Review {i}: the <b>{words[i % 8]}</b> &amp; {words[(i * 3) % 8]} caf&#233; {'se&#241;or ' * (i % 4)}{words[(i * 5) % 8]}!"
             for i in range(n)]
    splits = [("train", "test", "unsup", "val")[i % 4] for i in range(n)]
    return pl.DataFrame({"id": [str(i) for i in range(n)], "text": texts,
                         "label": [None if s == "unsup" else ("neg", "pos")[i % 2] for i, s in enumerate(splits)], "split": splits})


def test_clean_and_tokenize_on_a_two_worker_dask_cluster_write_the_local_tables(tmp_path: Path, monkeypatch, scheduler) -> None:
    monkeypatch.setattr(io, "ROW_GROUP", 25)
    src = tmp_path / "ingested.parquet"
    _table(130).write_parquet(src)
    assert row_ranges(src) == [(0, 25), (25, 25), (50, 25), (75, 25), (100, 25), (125, 5)]
    empty = pl.DataFrame(schema={c: pl.String for c in COLUMNS})
    options = {"steps": list(STEPS)}
    local, dask = tmp_path / "clean-local.parquet", tmp_path / "clean-dask.parquet"
    run_batches("flows.clean:clean_batch", src, COLUMNS, local, empty, EngineParams(), options)
    run_batches("flows.clean:clean_batch", src, COLUMNS, dask, empty, DASK, options)
    assert pl.read_parquet(dask).equals(pl.read_parquet(local))
    assert pl.read_parquet(local)["text"][5] == "review 5 the boring film café señor awful"  # cleaned, not copied
    assert pq.ParquetFile(dask).metadata.num_row_groups == 6  # one per batch, in order
    assert not any(p.name.endswith(".parts") for p in tmp_path.iterdir())  # the workers' parts are gone

    cfg = TokenizeParams(kind="word", vocab_size=30, min_frequency=1, max_length=9)  # 7-10 tokens a review
    texts = pl.read_parquet(local).filter(pl.col("split").is_in(["train", "unsup"]))["text"]
    train_tokenizer(iter(texts), cfg).save(str(tmp_path / "tokenizer.json"))
    n_local = write_tokens(local, tmp_path / "tokenizer.json", cfg, ["neg", "pos"], tmp_path / "tokens-local.parquet")
    running = EngineParams(kind="dask", address=scheduler)
    n_dask = write_tokens(local, tmp_path / "tokenizer.json", cfg, ["neg", "pos"], tmp_path / "tokens-dask.parquet", running)
    tokens = pl.read_parquet(tmp_path / "tokens-local.parquet")
    assert pl.read_parquet(tmp_path / "tokens-dask.parquet").equals(tokens)
    assert n_dask == n_local and n_local["documents"] == tokens.height == 98  # 130 rows less 32 unsup
    assert n_local["unk"] > 0 and 0 < n_local["truncated"] < 98


def test_a_failing_batch_on_dask_fails_the_stage_and_leaves_no_output(tmp_path: Path, monkeypatch, scheduler) -> None:
    monkeypatch.setattr(io, "ROW_GROUP", 25)
    src = tmp_path / "ingested.parquet"
    _table(60).write_parquet(src)
    target = tmp_path / "clean.parquet"
    with pytest.raises(Exception, match="no_such_step"):
        run_batches("flows.clean:clean_batch", src, COLUMNS, target, pl.DataFrame(schema={c: pl.String for c in COLUMNS}),
                    EngineParams(kind="dask", address=scheduler), {"steps": ["no_such_step"]})
    assert not target.exists() and not any(p.name.endswith(".parts") for p in tmp_path.iterdir())
