"""The data stages' batches as Prefect tasks on a Dask cluster (params.yaml `engine.kind: dask`).

clean and tokenize work through their input Parquet a batch of `reweigh.io.ROW_GROUP` rows at a time. With
`engine.kind: local` (the default) one process does that in order (reweigh.io.read_batches). With `dask`, each
batch is a Prefect task run by prefect-dask's DaskTaskRunner: on a `distributed.LocalCluster` of
`engine.workers` processes started for the stage, or on the running scheduler at `engine.address`. A task reads
its rows [start, start + ROW_GROUP) of the input, applies the stage's function and writes its part to
`<output>.parts/`; the stage then appends the parts, in order, to the output as its row groups, so the output
holds the same rows in the same order as the local path (a test holds the two equal on a 2-worker cluster).

Workers must see the project's directory at the same path (a shared filesystem: they read the input and the
tokenizer there and write the parts) and have the project installed (`pip install -e .`). A task's parameters
are plain JSON (the batch function's import name, the rows, the options), so its run in the Prefect UI says what
it did. docs/design.md, "Many documents", says how to point a stage at a cluster.
"""
from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from reweigh import io
from reweigh.params import EngineParams

# A stage's batch function, named "module:function": (its rows, **options) → (the rows to write, counts to sum).
BatchFn = Callable[..., tuple[pl.DataFrame, dict[str, int]]]


def batch_function(name: str) -> BatchFn:
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def row_ranges(path: Path, batch_rows: int | None = None) -> list[tuple[int, int]]:
    """(start, rows) of each batch of the table at `path`, as read_batches cuts it."""
    size = batch_rows or io.ROW_GROUP
    total = pl.scan_parquet(path).select(pl.len()).collect().item()
    return [(start, min(size, total - start)) for start in range(0, total, size)]


def run_batches(fn: str, src: Path, columns: list[str], target: Path, empty: pl.DataFrame, engine: EngineParams,
                options: dict[str, Any]) -> dict[str, int]:
    """The batch function `fn` ("module:function") over every batch of `src` (its `columns`), with `options`
    (JSON: they travel to the workers); the results appended in order to `target`, one row group each; the
    counts it returned, summed. Locally or on Dask, as `engine` says."""
    totals: dict[str, int] = {}

    def add(counts: dict[str, int]) -> None:
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value

    if engine.kind == "local":
        function = batch_function(fn)

        def frames() -> Iterator[pl.DataFrame]:
            for batch in io.read_batches(src, columns):
                out, counts = function(batch, **options)
                add(counts)
                if out.height:
                    yield out

        io.write_batches(frames(), target, empty)
        return totals

    parts = target.with_name(f".{target.name}.parts")
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    try:
        ranges = row_ranges(src)
        runner = _task_runner(engine)
        results = _on_dask.with_options(task_runner=runner)(fn, str(src.resolve()), columns, str(parts.resolve()), ranges, options)
        for counts in results:
            add(counts)
        files = [parts / f"{i:06d}.parquet" for i in range(len(ranges))]
        io.write_batches((frame for f in files if f.exists() for frame in io.read_batches(f)), target, empty)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    return totals


def _task_runner(engine: EngineParams):
    from prefect_dask import DaskTaskRunner

    if engine.address:
        return DaskTaskRunner(address=engine.address)
    # No dashboard (it would listen on a port and want bokeh); one thread per worker process: the stage's own
    # code (polars, tokenizers) uses the cores of its process.
    return DaskTaskRunner(cluster_kwargs={"n_workers": engine.workers, "threads_per_worker": 1, "dashboard_address": None,
                                          "processes": True})


@flow(name="batches-on-dask", log_prints=True)
def _on_dask(fn: str, src: str, columns: list[str], parts: str, ranges: list[tuple[int, int]],
             options: dict[str, Any]) -> list[dict[str, int]]:
    futures = [_batch.submit(fn, src, columns, f"{parts}/{i:06d}.parquet", start, rows, options)
               for i, (start, rows) in enumerate(ranges)]
    return [f.result() for f in futures]


@task(name="batch", cache_policy=NO_CACHE, task_run_name="rows {start}+{rows}")
def _batch(fn: str, src: str, columns: list[str], part: str, start: int, rows: int, options: dict[str, Any]) -> dict[str, int]:
    """One batch on a worker: rows [start, start + rows) of src through fn, written to `part` (when any remain)."""
    batch = pl.scan_parquet(src).select(columns).slice(start, rows).collect()
    out, counts = batch_function(fn)(batch, **options)
    if out.height:
        io.write_batches([out], Path(part), out)
    return counts
