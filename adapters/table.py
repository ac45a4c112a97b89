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
        quote_char: '"'                # CSV/TSV: the quoting character; null = quotes are plain text

Labels read from the data (no `labels` option) are marked `labels_inferred`, so dataset.normalize_labels
infers the merged set (adapters/hygiene.py) instead of keeping every spelling.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from adapters.base import AdapterError
from adapters.table_lines import Scan, check_lines
from reweigh.splits import stratified_split

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


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
        quote_char: str | None = '"',
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
        if quote_char is not None and (not isinstance(quote_char, str) or len(quote_char) != 1):
            raise AdapterError(f"dataset '{self.title}': quote_char must be one character or null (no quoting), got {quote_char!r}")
        self.quote_char = quote_char
        self._table: pl.DataFrame | None = None
        self.labels_inferred = not labels
        self.labels = tuple(str(x) for x in labels) if labels else self._infer_labels()

    def _read(self) -> pl.DataFrame:
        if self._table is not None:
            return self._table
        if not self.path.is_file():
            raise AdapterError(f"dataset '{self.title}': {self.path} does not exist")
        scan = check_lines(self.path, self.format, self.quote_char, self.title) if self.format != "parquet" else Scan()
        if self.format != "parquet" and not scan.header and not scan.rows:
            raise AdapterError(f"dataset '{self.title}': {self.path}: the file has no rows (it is empty); add rows, or set dataset.options.path to the file that has them")
        try:
            if self.format in ("csv", "tsv"):
                separator = "," if self.format == "csv" else "\t"
                df = pl.read_csv(self.path, separator=separator, quote_char=self.quote_char, infer_schema=False, encoding="utf8")
            elif self.format == "parquet":
                df = pl.read_parquet(self.path)
            else:
                df = pl.read_ndjson(self.path, infer_schema_length=None)
        except Exception as exc:  # polars raises many kinds; all mean "this file is not what it says"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AdapterError(f"dataset '{self.title}': {self.path} could not be read as {self.format}: {first}{self._quote_hint(scan, str(exc))}") from exc
        if df.height == 0:
            raise AdapterError(f"dataset '{self.title}': {self.path}: the file has no rows (columns {df.columns}, no data); add rows, or set dataset.options.path to the file that has them")
        missing = [c for c in (self.text_column, self.label_column, self.split_column) if c and c not in df.columns]
        if missing:
            raise AdapterError(f"dataset '{self.title}': {self.path} has columns {df.columns}; missing {missing} (set dataset.options.text_column / label_column / split_column)")
        self._table = df
        return df

    def _quote_hint(self, scan: Scan, error: str) -> str:
        """What to change when polars fails on a quote: quote_char null, if the file's quotes look stray."""
        if self.format not in ("csv", "tsv") or not self.quote_char:
            return ""
        if hint := scan.quote_hint(self.quote_char):
            return hint
        if "escaped" in error or "quote" in error:  # polars: 'Field `"FREE" entry` is not properly escaped'
            return f"; a `{self.quote_char}` inside a field? if the file does not quote its fields, set dataset.options.quote_char: null"
        return ""

    def sources(self) -> list[str]:
        """The file this adapter reads: the `sources` stage fingerprints it, so a changed file reruns ingest."""
        return [str(self.path)]

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
