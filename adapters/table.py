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

import csv
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from adapters.base import AdapterError, MissingSource
from adapters.table_lines import SAMPLES, Scan, check_lines, row_lines
from reweigh.io import read_batches
from reweigh.splits import stratified_split

PASS_ROWS = 50_000  # rows parsed at a time in the pass that reads the labels
MAX_CLASSES = 20  # a column with 2..20 distinct values (and repeats) may hold the classes: a hint in errors
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
        self._scan_frame: pl.LazyFrame | None = None
        self._label_frame: pl.DataFrame | None = None  # the label (and split) column, until load() has used it
        self._rows = 0  # rows in the file, once read
        self._lines_scan = Scan()
        self._test: pl.Series | None = None  # a file without a split column: which rows are test (load() draws it)
        self.labels_inferred = not labels
        self.labels = tuple(str(x) for x in labels) if labels else self._infer_labels()

    def _scan(self) -> pl.LazyFrame:
        """The file as a lazy scan (read a batch at a time downstream, never whole), after its lines are checked."""
        if self._scan_frame is not None:
            return self._scan_frame
        if not self.path.is_file():
            raise MissingSource(f"dataset '{self.title}': {self.path} does not exist")
        self._lines_scan = check_lines(self.path, self.format, self.quote_char, self.title) if self.format != "parquet" else Scan()
        if self.format != "parquet" and not self._lines_scan.header and not self._lines_scan.rows:
            raise AdapterError(f"dataset '{self.title}': {self.path}: the file has no rows (it is empty); add rows, or set dataset.options.path to the file that has them")
        with self._reading():
            if self.format in ("csv", "tsv"):
                separator = "," if self.format == "csv" else "\t"
                lf = pl.scan_csv(self.path, separator=separator, quote_char=self.quote_char, infer_schema=False, encoding="utf8")
            elif self.format == "parquet":
                lf = pl.scan_parquet(self.path)
            else:
                lf = pl.scan_ndjson(self.path, infer_schema_length=None)
            columns = lf.collect_schema().names()
        missing = [c for c in (self.text_column, self.label_column, self.split_column) if c and c not in columns]
        if missing:
            raise AdapterError(f"dataset '{self.title}': {self.path} has columns {columns}; missing {missing} (set dataset.options.text_column / label_column / split_column)")
        self._scan_frame = lf
        return lf

    def _labels(self) -> pl.DataFrame:
        """The label (and split) column of every row: one streamed pass over the file, which is where polars finds
        a row it cannot parse. Columns `label` (and `split`), strings."""
        if self._label_frame is not None:
            return self._label_frame
        lf = self._scan()
        columns = [pl.col(self.label_column).cast(pl.String).alias("label")]
        if self.split_column:
            columns.append(pl.col(self.split_column).cast(pl.String).alias("split"))
        with self._reading():  # every column parsed (a projection would skip a bad field in the text), a batch at a time
            parts = [batch.select(columns) for batch in lf.collect_batches(chunk_size=PASS_ROWS)]
        labels = pl.concat(parts) if parts else pl.DataFrame(schema={c.meta.output_name(): pl.String for c in columns})
        if labels.height == 0:
            raise AdapterError(f"dataset '{self.title}': {self.path}: the file has no rows (columns {lf.collect_schema().names()}, no data); add rows, or set dataset.options.path to the file that has them")
        self._label_frame, self._rows = labels, labels.height
        return labels

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """polars' errors (many kinds; all mean "this file is not what it says") as an AdapterError that names the file."""
        try:
            yield
        except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AdapterError(f"dataset '{self.title}': {self.path} could not be read as {self.format}: {first}{self._quote_hint(self._lines_scan, str(exc))}") from exc

    def _read_all(self) -> pl.DataFrame:
        """The whole file in memory: only for the message about a file with fewer than two classes."""
        with self._reading():
            return self._scan().collect()

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
        values = self._labels()["label"].drop_nulls().unique().sort()
        if values.filter(values.str.strip_chars() != "").len() < 2:  # a blank label is no class
            raise AdapterError(self._too_few_classes(self._read_all()))
        return tuple(values.to_list())

    def _too_few_classes(self, df: pl.DataFrame) -> str:
        """What is wrong with a file whose labels name fewer than two classes, and what to change: the class
        found, the rows without a label (in unsup they belong there) with their lines, columns that could be
        the labels. Said here, about the file, not as the adapter protocol's "set `labels`" (code not written)."""
        label = pl.col(self.label_column).cast(pl.String)
        blank = label.is_null() | (label.str.strip_chars() == "")
        unlabelled = blank
        if self.split_column:
            unlabelled = blank & (pl.col(self.split_column).cast(pl.String).str.strip_chars().str.to_lowercase() != "unsup").fill_null(True)
        counts = df.filter(~blank).group_by(label.alias("label")).len().sort("len", descending=True)
        missing = df.with_row_index("_row").filter(unlabelled)
        column = f"column '{self.label_column}'"
        if counts.height:
            (found, n), = counts.iter_rows()
            lines = [f"{self.path} has one class: every labelled row of {column} is {found!r} ({n:,} row(s))"]
        else:
            lines = [f"{self.path} has no class: no row of {column} has a label"]
        if missing.height:
            lines[0] += f", and {missing.height:,} of its {df.height:,} rows have no label"
            where = self._lines(missing["_row"].to_list()[:SAMPLES])
            texts = missing[self.text_column].cast(pl.String).to_list()[:SAMPLES]
            lines.append("rows without a label, e.g. " + "; ".join(f"{w}: {_short(t)!r}" for w, t in zip(where, texts, strict=True)))
        fixes = ["add rows of another class"]
        if missing.height:
            fixes.append(f"fill in the empty labels in {column}")
        others = [c for c in df.columns if c not in (self.text_column, self.label_column, self.split_column)]
        candidates = [f"'{c}' ({k} values)" for c in others if 2 <= (k := _distinct(df[c])) <= min(MAX_CLASSES, df.height // 2)][:3]
        fixes.append("or, if the classes are in another column, set dataset.options.label_column to it"
                     + (f" (columns with a few distinct values: {', '.join(candidates)})" if candidates else f" (columns: {df.columns})"))
        lines.append("a classifier needs at least two classes: " + ", ".join(fixes))
        return f"dataset '{self.title}': " + "\n  ".join(lines)

    def _lines(self, rows: list[int]) -> list[str]:
        """'line N' for each row (0-based) of the table as read; 'row N' for Parquet or when lines do not map."""
        if self.format != "parquet":
            try:
                starts = row_lines(self.path, self.format, self.quote_char)
            except (OSError, EOFError, csv.Error):
                starts = []
            if len(starts) == self._rows:
                return [f"line {starts[r]}" for r in rows]
        return [f"row {r + 1}" for r in rows]

    def load(self, cache_dir: Path) -> pl.LazyFrame:
        """The table as a lazy frame: the ingest stage reads it a batch at a time, so a file of any size fits. The
        test split of a file without one is drawn from the labels alone (one column in memory), then looked up by
        row (`_shape`)."""
        labels, self._label_frame = self._labels(), None  # first: a file polars cannot parse fails here, with its name
        if not self.split_column:  # one bool per row, looked up by position (a join here made polars buffer the file)
            self._test = stratified_split(labels["label"], self.test_fraction, self.seed, "test", "train") == "test"
        return self._shape(self._scan(), 0)

    def _shape(self, rows: pl.LazyFrame, offset: int) -> pl.LazyFrame:
        """The file's rows (all of them, or a batch that starts at row `offset`) as the table: text, label, split, id."""
        out = rows.select(
            pl.col(self.text_column).cast(pl.String).alias("text"),
            pl.col(self.label_column).cast(pl.String).alias("label"),
            *([pl.col(self.split_column).cast(pl.String).str.strip_chars().str.to_lowercase().alias("split")] if self.split_column else []),
        ).with_row_index("row", offset=offset)
        if not self.split_column:
            out = out.with_columns(split=pl.when(pl.lit(self._test).gather(pl.col("row"))).then(pl.lit("test")).otherwise(pl.lit("train")))
        return out.with_columns(id=pl.format("{}:{}", pl.lit(self.path.name), pl.col("row"))).drop("row")

    def batch_reader(self) -> Callable[[], Iterator[pl.DataFrame]] | None:
        """After `load`: for a Parquet file, `load()`'s rows a row group at a time, read by pyarrow, which reads
        nothing ahead of its consumer; polars' scan does (pola-rs/polars#28569), into memory that grows with the file.
        None for the line formats: their rows are found by polars' parser alone."""
        if self.format != "parquet" or (self._test is None and not self.split_column):
            return None  # a file without a split column before load(): its test rows are not drawn yet
        columns = list(dict.fromkeys(c for c in (self.text_column, self.label_column, self.split_column) if c))

        def batches() -> Iterator[pl.DataFrame]:
            offset = 0
            with self._reading():
                for batch in read_batches(self.path, columns=columns):
                    yield self._shape(batch.lazy(), offset).collect()
                    offset += batch.height
        return batches


def _short(text: object, width: int = 60) -> object:
    return text[: width - 3] + "..." if isinstance(text, str) and len(text) > width else text


def _distinct(column: pl.Series) -> int:
    try:
        return column.drop_nulls().n_unique()
    except Exception:  # a nested type polars cannot count: not a label column anyway
        return 0
