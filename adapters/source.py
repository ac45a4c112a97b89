"""The adapter's table read a batch at a time, and the GX suite over it: what the ingest stage and `reweigh validate`
share, so that neither holds the texts of a large table.

`Source` reads the table (a DataFrame, or a LazyFrame such as the table adapter's scan) a batch of ROW_GROUP rows
at a time; `facts` makes one pass and keeps, per row, what every later decision needs and no text (id, label,
split, whether the text is null or blank, its length, its hash and the hash of its cleaned form); `validate_source`
runs the GX suite on the whole table up to `validate_rows` rows, else on a seeded sample and every row a check
flags, with the counts exact over all rows (adapters/sampled.py).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl

from adapters.base import AdapterError, no_rows
from adapters.expectations import ValidationReport, build_expectations, report_of, validate
from adapters.hygiene import KEY, with_text_keys
from adapters.sampled import run_suite_sampled, text_facts
from reweigh.io import ROW_GROUP


class Source:
    """The adapter's table, read as often as the stage needs, a batch at a time: its rows in order, `_row` their
    position, `id` the adapter's or the position as text, labels through the merge (`relabel`) once known."""

    def __init__(self, frame: pl.DataFrame | pl.LazyFrame, title: str) -> None:
        lazy = frame.lazy().with_row_index("_row")
        if "id" not in lazy.collect_schema():
            lazy = lazy.with_columns(id=pl.col("_row").cast(pl.String))
        self.frame, self.title, self.mapping = lazy, title, {}

    def relabel(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def _lazy(self) -> pl.LazyFrame:
        return self.frame.with_columns(pl.col("label").replace(self.mapping)) if self.mapping else self.frame

    def batches(self) -> Iterator[pl.DataFrame]:
        with self._reading():
            yield from self._lazy().collect_batches(chunk_size=ROW_GROUP)

    def rows(self, positions: list[int]) -> pl.DataFrame:
        """The rows at these positions (sorted), read in one pass a batch at a time. Each batch's few rows are copied
        out: polars' filtered strings point into the batch they came from, which would keep every batch alive."""
        wanted = pl.Series(positions, dtype=pl.UInt32).implode()
        parts = [compact(batch.filter(pl.col("_row").is_in(wanted))) for batch in self.batches()]
        return pl.concat(parts) if parts else self.frame.head(0).collect()

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


def compact(df: pl.DataFrame) -> pl.DataFrame:
    """`df` with its own copy of its strings, not views into the larger frame it was cut from."""
    return pl.from_arrow(df.to_arrow(compat_level=pl.CompatLevel.oldest()))


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
