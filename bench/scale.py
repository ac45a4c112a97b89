"""scale: the data stages on many documents: docs/s and peak RSS as the corpus grows (`--sections scale`).

The corpus: the bench's reviews (IMDB: train, test and unlabelled) repeated until there are N, each copy after
the first made unique by a word appended to its text, written straight into a project's data/ingested.parquet
in row groups (so the bench itself never holds N documents). Then, each in a fresh child process:
- the stage as `dvc repro` runs it (flows/clean.py, flows/tokenize.py: streaming, batch by batch);
- the same stage with `engine.kind: dask`: its batches as Prefect tasks on a 2-worker Dask LocalCluster started
  for it (flows/shards.py), at sizes up to --scale-in-memory-max (the workers' peak RSS is reported apart);
- the in-memory way, the bare libraries doing the same work on the whole table at once (polars read →
  clean_frame → write; tokenizers fit on the whole column → encode every text → write), as the stages did
  before they streamed: the baseline, measured in the same run, at sizes up to --scale-in-memory-max.
At the smallest size the outputs are compared: the tables the dask runs wrote last (after the local runs wrote
the same files) against the in-memory ones, and the tokenizers. Flat memory shows as a peak RSS that stays put
while N grows, and docs/s that holds.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.common import ROOT, in_child, rate, ratio, rss_mb, timer

STAGES = ("clean", "tokenize")
WRITE_ROWS = 100_000  # rows the generator writes at a time


def make_corpus(raw: Path, project: Path, n: int) -> dict[str, Any]:
    """project/ with params.yaml, data/dataset.json and data/ingested.parquet of `n` documents from `raw`."""
    import polars as pl
    import pyarrow.parquet as pq

    from reweigh.io import ROW_GROUP

    base = pl.read_parquet(raw, columns=["text", "label", "split"])
    (project / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    labels = sorted(base["label"].drop_nulls().unique().to_list())
    (project / "data" / "dataset.json").write_text(json.dumps({"name": "scale", "title": "scale", "labels": labels}))
    writer = None
    with timer() as t:
        for start in range(0, n, WRITE_ROWS):
            i = pl.int_range(start, min(start + WRITE_ROWS, n), eager=True, dtype=pl.Int64)
            copy = i // base.height
            part = base[(i % base.height).to_numpy()].with_columns(
                id=i.cast(pl.String),
                text=pl.when(copy > 0).then(pl.col("text") + " copy" + copy.cast(pl.String)).otherwise(pl.col("text")),
            ).select("id", "text", "label", "split").to_arrow()
            writer = writer or pq.ParquetWriter(project / "data" / "ingested.parquet", part.schema, compression="zstd")
            writer.write_table(part, row_group_size=ROW_GROUP)
    writer.close()
    size = (project / "data" / "ingested.parquet").stat().st_size
    return {"documents": n, "parquet_mb": round(size / 2**20, 1), "write_s": round(t["s"], 1)}


def _stage(project: str, stage: str, engine: str = "local") -> dict[str, Any]:
    """In a fresh child: the stage's flow function, as its `dvc repro` command runs it, with `engine.kind`."""
    import resource

    import yaml

    os.chdir(project)
    sys.path.insert(0, str(ROOT))
    from flows.clean import clean_flow
    from flows.tokenize import tokenize_flow

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["engine"] = {**params.get("engine", {}), "kind": engine, "workers": 2, "address": ""}
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    flow = {"clean": clean_flow, "tokenize": tokenize_flow}[stage]
    with timer() as t:
        flow.fn()
    out: dict[str, Any] = {"seconds": round(t["s"], 2)}
    if engine == "dask":  # the LocalCluster's worker processes, waited for when the stage stopped its cluster
        out["workers_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    return out


def _in_memory(project: str, stage: str) -> dict[str, Any]:
    """In a fresh child: the same work on the whole table at once (the stages before they streamed)."""
    os.chdir(project)
    sys.path.insert(0, str(ROOT))
    import polars as pl

    from flows.clean import clean_frame
    from flows.common import params, read_dataset_info
    from flows.tokenize import encode_frame, train_tokenizer

    p = params()
    with timer() as t:
        if stage == "clean":
            df = pl.read_parquet("data/ingested.parquet", columns=["id", "text", "label", "split"])
            clean_frame(df, p.clean.steps).write_parquet("data/clean-in-memory.parquet", compression="zstd")
        else:
            cfg, labels = p.tokenize, read_dataset_info()["labels"]
            df = pl.read_parquet("data/clean.parquet")
            tok = train_tokenizer(iter(df.filter(pl.col("split").is_in(["train", "unsup"]))["text"]), cfg)
            encode_frame(df.filter(pl.col("split") != "unsup"), tok, cfg, labels).write_parquet(
                "data/tokens-in-memory.parquet", compression="zstd")  # every labelled text encoded at once
            tok.save("artifacts/tokenizer-in-memory.json")
    return {"seconds": round(t["s"], 2)}


def _same_outputs(project: str) -> dict[str, bool]:
    import polars as pl

    os.chdir(project)
    return {"clean": pl.read_parquet("data/clean.parquet").equals(pl.read_parquet("data/clean-in-memory.parquet")),
            "tokens": pl.read_parquet("data/tokens.parquet").equals(pl.read_parquet("data/tokens-in-memory.parquet")),
            "tokenizer": Path("artifacts/tokenizer.json").read_text() == Path("artifacts/tokenizer-in-memory.json").read_text()}


def run(work: Path, sizes: list[int], in_memory_max: int, prefect_api: str | None = None) -> dict[str, Any]:
    """`prefect_api`: the bench's Prefect server, which the dask runs' task runs report to (as under `reweigh
    repro`); without one each would start a temporary server of its own, seconds the stage does not spend."""
    raw = work / "raw.parquet"
    out: dict[str, Any] = {"stages": list(STAGES), "in_memory_max": in_memory_max, "sizes": {}}
    for n in sorted(sizes):
        project = work / "scale" / str(n)
        row: dict[str, Any] = {"corpus": in_child(make_corpus, raw, project, n)}
        (project / "artifacts").mkdir(exist_ok=True)
        for stage in STAGES:
            s = in_child(_stage, str(project), stage)
            row[stage] = {**s, "docs_per_s": rate(n, s["seconds"])}
            if n <= in_memory_max:
                d = in_child(_stage, str(project), stage, "dask", env={"PREFECT_API_URL": prefect_api} if prefect_api else None)
                row[stage]["dask"] = {**d, "docs_per_s": rate(n, d["seconds"]), "vs_local_docs_per_s": ratio(s["seconds"], d["seconds"])}
                m = in_child(_in_memory, str(project), stage)
                row[stage]["in_memory"] = {**m, "docs_per_s": rate(n, m["seconds"])}
                row[stage]["stream_vs_in_memory_speed"] = ratio(m["seconds"], s["seconds"])
                row[stage]["stream_vs_in_memory_rss"] = ratio(s["peak_rss_mb"], m["peak_rss_mb"])
        if n == min(sizes) and n <= in_memory_max:
            same = in_child(_same_outputs, str(project))
            row["same_outputs"] = {k: v for k, v in same.items() if k != "peak_rss_mb"}  # in_child adds the child's RSS
        out["sizes"][str(n)] = row
        shutil.rmtree(project, ignore_errors=True)  # a million documents take GBs on disk at each stage
    out["bench_peak_rss_mb"] = rss_mb()
    return out
