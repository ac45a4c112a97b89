"""scale: the data stages on many documents: docs/s and peak RSS as the corpus grows (`--sections scale`).

The corpus: the bench's reviews (IMDB: train, test and unlabelled) repeated until there are N, each copy after
the first made unique by a word appended to its text, written in row groups (so the bench itself never holds N
documents) to a project's data/raw/corpus.parquet, which its params.yaml names for the table adapter. Then, each
in a fresh child process:
- the stage as `dvc repro` runs it (flows/ingest.py, flows/clean.py, flows/tokenize.py: streaming, batch by batch);
- clean and tokenize with `engine.kind: dask`: their batches as Prefect tasks on a 2-worker Dask LocalCluster
  started for it (flows/shards.py), at sizes up to --scale-in-memory-max (the workers' peak RSS reported apart);
- the in-memory way, the bare libraries doing the same work on the whole table at once (polars read → GX on every
  row, the hygiene facts and the carve → write; polars read → clean_frame → write; tokenizers fit on the whole
  column → encode every text → write), as the stages did before they streamed: the baseline, measured in the
  same run, at sizes up to --scale-in-memory-max.
With --scale-pretrain the pretrain stage (flows/pretrain.py, params.yaml's settings: PPMI-SVD and, with
pretrain.encoder_epochs, the language model's epoch) runs after tokenize at every size, on the train and unlabelled
documents, streaming only (its corpus is spilled to disk as it is encoded: nothing to hold whole to compare with).
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

STAGES = ("ingest", "clean", "tokenize")
TRAIN_TEST = 50  # test documents beside the training ones in the one-epoch corpus: one per TRAIN_TEST training ones
TRAIN_VAL_FRACTION = 0.02
ENGINES = ("clean", "tokenize")  # the stages with an `engine`
WRITE_ROWS = 100_000  # rows the generator writes at a time


def make_corpus(raw: Path, project: Path, n: int, train_only: int = 0) -> dict[str, Any]:
    """project/ with data/raw/corpus.parquet of `n` documents from `raw`, and a params.yaml whose table adapter reads it.
    `train_only`: instead, that many labelled training documents and 1 in TRAIN_TEST as many test ones, for one epoch of training
    (validation: TRAIN_VAL_FRACTION of them, carved by ingest; the GRU from random vectors, one epoch)."""
    import polars as pl
    import pyarrow.parquet as pq
    import yaml

    from reweigh.io import ROW_GROUP

    base = pl.read_parquet(raw, columns=["text", "label", "split"]).sample(fraction=1.0, shuffle=True, seed=0)  # splits mixed
    if train_only:
        base, n = base.filter(pl.col("label").is_not_null()), train_only + max(train_only // TRAIN_TEST, 100)
    (project / "data" / "raw").mkdir(parents=True, exist_ok=True)
    labels = sorted(base["label"].drop_nulls().unique().to_list())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dataset"] = {**params["dataset"], "name": "table", "options": {
        "path": "data/raw/corpus.parquet", "split_column": "split", "labels": labels, "title": "scale"}}
    if train_only:
        params["dataset"]["val_fraction"] = TRAIN_VAL_FRACTION
        params["train"] = {**params["train"], "epochs": 1}
        params["model"]["gru"] = {**params["model"]["gru"], "init": "random"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    writer = None
    with timer() as t:
        for start in range(0, n, WRITE_ROWS):
            i = pl.int_range(start, min(start + WRITE_ROWS, n), eager=True, dtype=pl.Int64)
            copy = i // base.height
            part = base[(i % base.height).to_numpy()].with_columns(
                id=i.cast(pl.String),
                **({"split": pl.when(i < train_only).then(pl.lit("train")).otherwise(pl.lit("test"))} if train_only else {}),
                text=pl.when(copy > 0).then(pl.col("text") + " copy" + copy.cast(pl.String)).otherwise(pl.col("text")),
            ).select("id", "text", "label", "split").to_arrow()
            writer = writer or pq.ParquetWriter(project / "data" / "raw" / "corpus.parquet", part.schema, compression="zstd")
            writer.write_table(part, row_group_size=ROW_GROUP)
    writer.close()
    size = (project / "data" / "raw" / "corpus.parquet").stat().st_size
    return {"documents": n, "parquet_mb": round(size / 2**20, 1), "write_s": round(t["s"], 1)}


def _stage(project: str, stage: str, engine: str = "local") -> dict[str, Any]:
    """In a fresh child: the stage's flow function, as its `dvc repro` command runs it, with `engine.kind`."""
    import resource

    import yaml

    os.chdir(project)
    sys.path.insert(0, str(ROOT))
    from flows.clean import clean_flow
    from flows.ingest import ingest_flow
    from flows.tokenize import tokenize_flow

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["engine"] = {**params.get("engine", {}), "kind": engine, "workers": 2, "address": ""}
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # ingest as a flow run (its task and logger need one; the bench's Prefect server takes it), the others as functions
    runs = {"ingest": ingest_flow, "clean": clean_flow.fn, "tokenize": tokenize_flow.fn}
    if stage == "pretrain":  # torch and its kin: imported only where they are used
        from flows.pretrain import pretrain_flow

        runs["pretrain"] = pretrain_flow.fn
    flow = runs[stage]
    with timer() as t:
        flow()
    out: dict[str, Any] = {"seconds": round(t["s"], 2)}
    if stage == "pretrain":  # what it read and what it trained
        stats = json.loads(Path("reports/pretrain.json").read_text())
        out |= {"documents": sum(stats["documents"].values()), "tokens": stats["tokens"], "method": stats["method"]}
    if engine == "dask":  # the LocalCluster's worker processes, waited for when the stage stopped its cluster
        out["workers_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    return out


def _train_epoch(project: str, model: str) -> dict[str, Any]:
    """In a fresh child: the train stage of `model` as a flow run (params: one epoch), and what it reports."""
    os.chdir(project)
    sys.path.insert(0, str(ROOT))
    from flows.train import train_flow

    with timer() as t:
        train_flow(name=model)
    summary = json.loads(Path(f"reports/train/{model}.json").read_text())
    return {"seconds": round(t["s"], 1), "train_seconds": summary["train_seconds"],
            "test_predict_seconds": summary["test_predict_seconds"], "epochs": summary["epochs"], "history": summary["history"]}


def train_run(work: Path, documents: int, prefect_api: str | None) -> dict[str, Any]:
    """One GRU epoch on `documents` labelled training documents, after ingest, clean and tokenize made its tokens."""
    project = work / "scale" / f"train-{documents}"
    out: dict[str, Any] = {"corpus": in_child(make_corpus, work / "raw.parquet", project, 0, documents)}
    (project / "artifacts").mkdir(exist_ok=True)
    env = {"PREFECT_API_URL": prefect_api} if prefect_api else None
    for stage in STAGES:
        out[stage] = in_child(_stage, str(project), stage, env=env)
    out["train_gru"] = in_child(_train_epoch, str(project), "gru", env=env)
    out["rows"] = json.loads((project / "data" / "dataset.json").read_text())["rows"]
    shutil.rmtree(project, ignore_errors=True)
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
        if stage == "ingest":
            _ingest_in_memory(p)
        elif stage == "clean":
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


def _ingest_in_memory(p: Any) -> None:
    """The ingest stage as it was before it streamed: the whole table read, GX on every row, the facts and carve
    on the table itself, one write."""
    import polars as pl

    from adapters.expectations import validate
    from adapters.hygiene import KEY, Hygiene, check, with_text_keys
    from adapters.registry import get_adapter
    from flows.ingest import output_columns, split_rows
    from reweigh.io import write_parquet

    adapter, hygiene = get_adapter(p.dataset.name, p.dataset.options), Hygiene.from_params(p.dataset, p.clean.steps)
    path = Path(p.dataset.options["path"])
    raw = pl.read_parquet(path).with_row_index("_row").with_columns(id=pl.format("{}:{}", pl.lit(path.name), pl.col("_row")))
    assert validate(raw, adapter).success
    df, _ = split_rows(with_text_keys(raw, hygiene.clean_steps), p.dataset, hygiene, p.seed)
    check(df, adapter, hygiene)
    write_parquet(output_columns(df.drop(KEY)), "data/ingested-in-memory.parquet")


def _same_outputs(project: str) -> dict[str, bool]:
    import polars as pl

    os.chdir(project)
    return {"ingest": pl.read_parquet("data/ingested.parquet").equals(pl.read_parquet("data/ingested-in-memory.parquet")),
            "clean": pl.read_parquet("data/clean.parquet").equals(pl.read_parquet("data/clean-in-memory.parquet")),
            "tokens": pl.read_parquet("data/tokens.parquet").equals(pl.read_parquet("data/tokens-in-memory.parquet")),
            "tokenizer": Path("artifacts/tokenizer.json").read_text() == Path("artifacts/tokenizer-in-memory.json").read_text()}


def run(work: Path, sizes: list[int], in_memory_max: int, prefect_api: str | None = None, train_documents: int = 0,
        pretrain: bool = False, upto: str = STAGES[-1]) -> dict[str, Any]:
    """`prefect_api`: the bench's Prefect server, which the dask runs' task runs report to (as under `reweigh
    repro`); without one each would start a temporary server of its own, seconds the stage does not spend.
    `pretrain`: the pretrain stage too, after tokenize (its docs/s counts the documents it read). `upto`: the last of
    STAGES to run (each reads what the one before wrote): "ingest" measures ingest alone."""
    raw = work / "raw.parquet"
    stages = STAGES[:STAGES.index(upto) + 1] + (("pretrain",) if pretrain and upto == STAGES[-1] else ())
    out: dict[str, Any] = {"stages": list(stages), "in_memory_max": in_memory_max, "sizes": {}}
    for n in sorted(sizes):
        project = work / "scale" / str(n)
        row: dict[str, Any] = {"corpus": in_child(make_corpus, raw, project, n)}
        (project / "artifacts").mkdir(exist_ok=True)
        for stage in stages:
            s = in_child(_stage, str(project), stage, env={"PREFECT_API_URL": prefect_api} if prefect_api else None)
            row[stage] = {**s, "docs_per_s": rate(s.get("documents", n), s["seconds"])}
            if stage not in STAGES:
                continue  # pretrain: streaming only
            if n <= in_memory_max and stage in ENGINES:
                d = in_child(_stage, str(project), stage, "dask", env={"PREFECT_API_URL": prefect_api} if prefect_api else None)
                row[stage]["dask"] = {**d, "docs_per_s": rate(n, d["seconds"]), "vs_local_docs_per_s": ratio(s["seconds"], d["seconds"])}
            if n <= in_memory_max:
                m = in_child(_in_memory, str(project), stage)
                row[stage]["in_memory"] = {**m, "docs_per_s": rate(n, m["seconds"])}
                row[stage]["stream_vs_in_memory_speed"] = ratio(m["seconds"], s["seconds"])
                row[stage]["stream_vs_in_memory_rss"] = ratio(s["peak_rss_mb"], m["peak_rss_mb"])
        if n == min(sizes) and n <= in_memory_max and upto == STAGES[-1]:
            same = in_child(_same_outputs, str(project))
            row["same_outputs"] = {k: v for k, v in same.items() if k != "peak_rss_mb"}  # in_child adds the child's RSS
        out["sizes"][str(n)] = row
        shutil.rmtree(project, ignore_errors=True)  # a million documents take GBs on disk at each stage
    if train_documents:
        out["train"] = train_run(work, train_documents, prefect_api)
    out["bench_peak_rss_mb"] = rss_mb()
    return out
