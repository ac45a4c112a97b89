"""Atomic writes: every stage output appears whole or not at all.

Each writer writes to a temporary sibling and renames it over the target, so an interrupted run leaves
either the previous complete file or none, never a half-written one that the next run would trust.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # polars is imported where it is used: models/ runs with torch + numpy alone (bench/ablations.py)
    import polars as pl


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed to `target`, else removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One fixed name per target, not a random one: a run killed mid-write (SIGKILL skips the `finally`)
    # leaves a temporary that the next write of `target` replaces, and writers that record their file's
    # name (torch.save names its zip archive after it) give the same bytes on every run. One writer per
    # target at a time: DVC runs each stage once at a time.
    tmp_path = target.with_name(f".{target.name}.tmp")
    tmp_path.unlink(missing_ok=True)
    tmp_path.touch()
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(df: pl.DataFrame, target: str | os.PathLike[str]) -> Path:
    with atomic_path(target) as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=True)
    return Path(target)


# Rows per batch the data stages read, process and write as one Parquet row group: what a stage holds at once
# (about 40 MB of IMDB text per 20k rows).
ROW_GROUP = 20_000


def read_batches(path: str | os.PathLike[str], columns: list[str] | None = None,
                 batch_rows: int | None = None) -> Iterator[pl.DataFrame]:
    """A Parquet file's rows in order, `batch_rows` (default ROW_GROUP) at a time, as polars frames.

    pyarrow's reader without pre-buffering: with it (the default) the reader kept every row group it had read
    until the end, and so did polars' streaming engine here (scan → sink of 1M IMDB-sized rows: 0.6-1.0 GB
    of heap, growing with the file); without it the heap stays near 0.25 GB however long the file."""
    import polars as pl
    import pyarrow.parquet as pq

    reader = pq.ParquetFile(path, pre_buffer=False)
    for batch in reader.iter_batches(batch_size=batch_rows or ROW_GROUP, columns=columns):
        yield pl.from_arrow(batch)


def rebatch(frames: Iterable[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """The same rows in frames of exactly `rows` (the last one shorter): row groups of one size, whatever the
    frames a filter left."""
    import polars as pl

    held: list[pl.DataFrame] = []
    count = 0
    for frame in frames:
        held.append(frame)
        count += frame.height
        while count >= rows:
            whole = pl.concat(held)
            yield whole.head(rows)
            held, count = [whole.slice(rows)], count - rows
    if count:
        yield pl.concat(held)


def write_batches(frames: Iterable[pl.DataFrame], target: str | os.PathLike[str], empty: pl.DataFrame) -> int:
    """Each frame appended to `target` as a row group (written at a temporary path, renamed when whole); `empty`
    (the columns, no rows) is written when there are no frames. The number of rows written."""
    import pyarrow.parquet as pq

    rows = 0
    with atomic_path(target) as tmp:
        writer = None
        try:
            for frame in frames:
                table = frame.to_arrow()
                writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table, row_group_size=max(frame.height, 1))
                rows += frame.height
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            empty.write_parquet(tmp, compression="zstd")
    return rows


def write_json(obj: Any, target: str | os.PathLike[str]) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(target)


def write_text(text: str, target: str | os.PathLike[str]) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256: a stage's summary records its predictions' digest, so that a DVC dependency on the
    summaries' folder (reports/train) changes whenever any model's predictions do (dvc.yaml, the ensemble)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
