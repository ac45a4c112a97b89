"""A dataset that is already a table needs no code: CSV, TSV, Parquet or JSON lines, configured in params.yaml.

    dataset:
      name: table
      options:
        path: data/raw/reviews.csv     # .csv .tsv .parquet .jsonl / .ndjson (or set `format`)
        text_column: body
        label_column: stars
        labels: [bad, ok, good]        # optional: declared classes, in class-id order (default: sorted)
        split_column: null             # optional: a column with train / test (/ unsup) values
        test_fraction: 0.2             # else: a seeded, stratified test split
        seed: 0
        title: my-reviews              # the name used in messages (default: the file name)
"""
from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from adapters.base import AdapterError
from reweigh.splits import stratified_split

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SAMPLES = 5  # problem lines quoted in an error


class TableAdapter:
    name = "table"

    def __init__(
        self,
        path: str,
        text_column: str = "text",
        label_column: str = "label",
        labels: list[str] | None = None,
        split_column: str | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
        format: str | None = None,
        title: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.text_column = text_column
        self.label_column = label_column
        self.split_column = split_column
        self.test_fraction = test_fraction
        self.seed = seed
        self.format = format or _FORMATS.get(self.path.suffix.lower())
        self.title = title or self.path.name
        if self.format not in set(_FORMATS.values()):
            raise AdapterError(f"dataset '{self.title}': cannot tell the format of {self.path}; set dataset.options.format to one of csv, tsv, parquet, jsonl")
        if not 0 < test_fraction < 1:
            raise AdapterError(f"dataset '{self.title}': test_fraction must be in (0, 1), got {test_fraction}")
        self._table: pl.DataFrame | None = None
        self.labels = tuple(str(x) for x in labels) if labels else self._infer_labels()

    def _read(self) -> pl.DataFrame:
        if self._table is not None:
            return self._table
        if not self.path.is_file():
            raise AdapterError(f"dataset '{self.title}': {self.path} does not exist")
        if self.format in ("csv", "tsv", "jsonl"):
            # polars says "invalid utf-8 sequence" or "found more fields than defined" without a line, and
            # reads a row with too few fields as nulls; find the lines first so the error can quote them.
            self._check_lines()
        try:
            if self.format in ("csv", "tsv"):
                df = pl.read_csv(self.path, separator="," if self.format == "csv" else "\t", infer_schema=False, encoding="utf8")
            elif self.format == "parquet":
                df = pl.read_parquet(self.path)
            else:
                df = pl.read_ndjson(self.path, infer_schema_length=None)
        except Exception as exc:  # polars raises many kinds; all mean "this file is not what it says"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AdapterError(f"dataset '{self.title}': {self.path} could not be read as {self.format}: {first}") from exc
        missing = [c for c in (self.text_column, self.label_column, self.split_column) if c and c not in df.columns]
        if missing:
            raise AdapterError(f"dataset '{self.title}': {self.path} has columns {df.columns}; missing {missing} (set dataset.options.text_column / label_column / split_column)")
        self._table = df
        return df

    def _check_lines(self) -> None:
        """Refuse text that is not UTF-8 and, for CSV/TSV, rows whose field count differs from the header."""
        bad_utf8: list[str] = []
        ragged: list[str] = []
        with open(self.path, "rb") as fh:
            opener = gzip.open if fh.read(2) == b"\x1f\x8b" else open  # polars reads gzipped text too

        def lines(fh: Any) -> Iterator[str]:
            for number, raw in enumerate(fh, 1):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad_utf8.append(f"line {number}: {raw[max(exc.start - 20, 0):exc.start + 20]!r}")
                    yield raw.decode("utf-8", errors="replace")

        try:
            with opener(self.path, "rb") as fh:
                if self.format == "jsonl":
                    for _ in lines(fh):
                        pass
                else:
                    limit = csv.field_size_limit()
                    csv.field_size_limit(2**31 - 1)  # a long review is the validation's call, not the parser's
                    try:
                        reader = csv.reader(lines(fh), delimiter="," if self.format == "csv" else "\t")
                        header = next(reader, [])
                        for row in reader:
                            if row and len(row) != len(header):
                                ragged.append(f"line {reader.line_num}: {len(row)} fields {[v[:30] for v in row[:4]]}")
                    finally:
                        csv.field_size_limit(limit)
        except (OSError, EOFError, csv.Error) as exc:
            raise AdapterError(f"dataset '{self.title}': {self.path} could not be read as {self.format}: {exc}") from exc
        problems = []
        if bad_utf8:
            problems.append(f"{len(bad_utf8)} line(s) are not valid UTF-8 (re-save the file as UTF-8), e.g. " + "; ".join(bad_utf8[:_SAMPLES]))
        if ragged:
            problems.append(
                f"{len(ragged)} row(s) do not have the header's {len(header)} fields {header[:6]} "
                "(an unquoted separator or a missing value?), e.g. " + "; ".join(ragged[:_SAMPLES])
            )
        if problems:
            raise AdapterError(f"dataset '{self.title}': {self.path}: " + "\n  ".join(problems))

    def _infer_labels(self) -> tuple[str, ...]:
        values = self._read()[self.label_column].drop_nulls().cast(pl.String).unique().sort()
        return tuple(values.to_list())

    def load(self, cache_dir: Path) -> pl.DataFrame:
        df = self._read()
        out = df.select(
            pl.col(self.text_column).cast(pl.String).alias("text"),
            pl.col(self.label_column).cast(pl.String).alias("label"),
            *([pl.col(self.split_column).cast(pl.String).str.strip_chars().str.to_lowercase().alias("split")] if self.split_column else []),
        ).with_row_index("row")
        if not self.split_column:
            out = out.with_columns(split=stratified_split(out["label"], self.test_fraction, self.seed, "test", "train"))
        return out.with_columns(id=pl.format("{}:{}", pl.lit(self.path.name), pl.col("row"))).drop("row")
