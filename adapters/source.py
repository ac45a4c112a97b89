"""The adapter's table read a batch at a time, and the GX suite over it: what the ingest stage and `reweigh validate`
share, so that neither holds the texts of a large table.

`Source` reads the table (a DataFrame, or a LazyFrame such as the table adapter's scan) a batch of ROW_GROUP rows
at a time; `facts` makes one pass and keeps, per row, what every later decision needs and no text (id, label,
split, whether the text is null or blank, its length, its hash and the hash of its cleaned form); `validate_source`
runs the GX suite on the whole table up to `validate_rows` rows, else on a seeded sample and every row a check
flags, with the counts exact over all rows (adapters/sampled.py).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import polars as pl

from adapters.base import AdapterError, check_frame, no_rows, title_of
from adapters.expectations import ValidationReport, build_expectations, report_of, validate
from adapters.hygiene import KEY, with_text_keys
from adapters.sampled import run_suite_sampled, text_facts
from reweigh.io import ROW_GROUP

T = TypeVar("T")
_END = object()  # read_ahead: the items are done


class Source:
    """The adapter's table, read as often as the stage needs, a batch at a time: its rows in order, `_row` their
    position, `id` the adapter's or the position as text, labels through the merge (`relabel`) once known.

    `reader`, when given, yields the same table's rows a batch at a time, in order, read one batch ahead of the
    consumer and no further (the table adapter's Parquet files, through pyarrow; a DataFrame's own slices). Without one, a
    LazyFrame is read by polars' `collect_batches`, whose reader runs ahead of a slower consumer into memory that
    grows with the table (pola-rs/polars#28569)."""

    def __init__(self, frame: pl.DataFrame | pl.LazyFrame, title: str,
                 reader: Callable[[], Iterable[pl.DataFrame]] | None = None) -> None:
        if reader is None and isinstance(frame, pl.DataFrame):
            reader = partial(frame.iter_slices, ROW_GROUP)
        self.table, self.title, self.reader, self.mapping = frame.lazy(), title, reader, {}
        self.frame = self._shape(self.table, 0, {})

    def relabel(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def _shape(self, table: pl.LazyFrame, offset: int, mapping: dict[str, str]) -> pl.LazyFrame:
        """`table` (the whole table, or a batch starting at row `offset`) with `_row`, `id` and the merged labels."""
        lazy = table.with_row_index("_row", offset=offset)
        if "id" not in lazy.collect_schema():
            lazy = lazy.with_columns(id=pl.col("_row").cast(pl.String))
        return lazy.with_columns(pl.col("label").replace(mapping)) if mapping else lazy

    def _lazy(self) -> pl.LazyFrame:
        return self._shape(self.table, 0, self.mapping)

    def batches(self) -> Iterator[pl.DataFrame]:
        with self._reading():
            if self.reader is None:
                yield from self._lazy().collect_batches(chunk_size=ROW_GROUP)
                return
            yield from read_ahead(self._shaped(self.reader(), self.mapping))

    def _shaped(self, batches: Iterable[pl.DataFrame], mapping: dict[str, str]) -> Iterator[pl.DataFrame]:
        offset = 0
        for batch in batches:
            yield self._shape(batch.lazy(), offset, mapping).collect()
            offset += batch.height

    def rows(self, positions: list[int]) -> pl.DataFrame:
        """The rows at these positions (sorted), found in one pass inside polars' streaming engine, which keeps up with
        its reader (see `reader`). Their strings are copied (`+ ""`): a filtered string points into the batch it came
        from, and a few rows of each batch would keep every batch of the table alive."""
        wanted = pl.Series(positions, dtype=pl.UInt32).implode()
        with self._reading():
            return self._lazy().filter(pl.col("_row").is_in(wanted)).with_columns(pl.col(pl.String) + pl.lit("")).collect(engine="streaming")

    def collect(self) -> pl.DataFrame:
        with self._reading():
            return self._lazy().collect(engine="streaming")

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except pl.exceptions.PolarsError as exc:  # a scan that fails part way: a row the reader cannot parse
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AdapterError(f"dataset '{self.title}': reading its rows failed: {first}; check the data file around that row") from exc


def read_ahead(items: Iterable[T]) -> Iterator[T]:
    """`items`, each next one fetched on a worker thread while the consumer works on the one before: the reading
    overlaps the work, and no more than two are held."""
    it = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="reweigh-read") as pool:
        ahead = pool.submit(next, it, _END)
        while (item := ahead.result()) is not _END:
            ahead = pool.submit(next, it, _END)
            yield item


def source_of(adapter: Any, table: pl.DataFrame | pl.LazyFrame) -> Source:
    """The Source of an adapter's checked table (`check_frame(adapter.load(...))`), read through the adapter's
    `batch_reader()` when it offers one (the table adapter, for a Parquet file)."""
    title = title_of(adapter)
    offer = getattr(adapter, "batch_reader", None)
    read = offer() if callable(offer) else None
    return Source(table, title, reader=None if read is None else lambda: (check_frame(batch, title) for batch in read()))


def facts(source: Source, steps: tuple[str, ...] | None) -> pl.DataFrame:
    """Per row, in the table's order: _row, id, label, split, what the suite checks of the text (adapters/sampled.py)
    and KEY, the hash of the cleaned text (adapters/hygiene.py). What every later decision reads; no text."""
    parts = [with_text_keys(batch, steps).select("_row", "id", "label", "split", *text_facts(), KEY)
             for batch in source.batches()]
    if not parts:
        raise AdapterError(no_rows(source.title))
    return pl.concat(parts, rechunk=False)  # the batches as chunks: no second copy of the facts


def validate_source(source: Source, rows: pl.DataFrame, adapter: Any, validate_rows: int, seed: int) -> ValidationReport:
    """The shared GX suite on the whole table when it has at most `validate_rows` rows; else on a seeded sample
    and the rows the checks flag, the counts exact over `rows`, the facts of every row (adapters/sampled.py)."""
    if rows.height <= validate_rows:
        return validate(source.collect(), adapter)
    results, seen = run_suite_sampled(rows, build_expectations(adapter), adapter.name,
                                      lambda at: source.rows(at).with_columns(_pos=pl.col("_row")), validate_rows, seed)
    return report_of(adapter, rows, results, validated_rows=seen)
