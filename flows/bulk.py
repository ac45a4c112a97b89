"""Bulk scoring: a table of texts in, the same table with each row's prediction out, in bounded memory.

    reweigh predict --file reviews.csv --text-column review --out scored.parquet [--model nbsvm]

The input (.csv, .tsv, .parquet, .jsonl) is read in batches of `--batch-rows` rows with pyarrow's streaming
readers; each batch is scored by the model's Predictor (flows/predict.py: the cleaning, tokenizer and cut the
model was trained with; sorted by length inside the batch) and appended to the output (.parquet, .csv, .tsv,
.jsonl), which is written to a temporary name and renamed when complete. Memory holds one batch, not the file.
The output keeps every input column and adds `predicted` (the label) and `prob_<label>` per class. A row with
no text (null or blank) gets null predictions and is counted in the summary.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from flows.common import ARTIFACTS
from flows.predict import predictor
from reweigh.io import atomic_path

READ = (".csv", ".tsv", ".parquet", ".jsonl", ".ndjson")
WRITE = (".parquet", ".csv", ".tsv", ".jsonl", ".ndjson")
# Rows read, scored and written at a time: bounds memory (IMDB reviews: about 60 MB of text and token ids per
# 16k rows) and gives the length sort room: 4,096 rows scored GRU + attention about 10% slower on IMDB here.
BATCH_ROWS = 16384


class BulkError(ValueError):
    """The input or output file cannot be used as asked; the message says what to change."""


def read_batches(path: Path, text_column: str, batch_rows: int) -> tuple[Iterator[pa.RecordBatch], int | None]:
    """The table's record batches of about `batch_rows` rows, and its row count when the format records it."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise BulkError(f"{path} does not exist")
    if suffix not in READ:
        raise BulkError(f"{path}: cannot read {suffix or 'a file without a suffix'} in bulk; give a {', '.join(READ)} file "
                        "(or a .txt with one text per line, without --out)")
    if suffix == ".parquet":
        pf = pq.ParquetFile(path)
        _require(path, text_column, pf.schema_arrow.names)
        return pf.iter_batches(batch_size=batch_rows), pf.metadata.num_rows
    if suffix in (".csv", ".tsv"):
        with pacsv.open_csv(path, parse_options=_csv_parse(suffix)) as first:  # the header: is the column there?
            _require(path, text_column, first.schema.names)
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=_block_bytes(batch_rows)),
                                parse_options=_csv_parse(suffix),  # the text read as text, never inferred as a number
                                convert_options=pacsv.ConvertOptions(column_types={text_column: pa.string()}))
        return _rebatch(reader, batch_rows), None
    reader = pajson.open_json(path, read_options=pajson.ReadOptions(block_size=_block_bytes(batch_rows)))
    _require(path, text_column, reader.schema.names)
    return _rebatch(reader, batch_rows), None


def _csv_parse(suffix: str) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",", newlines_in_values=True)


def _block_bytes(batch_rows: int) -> int:
    """Bytes a streaming reader parses at once: room for `batch_rows` rows of about 2 kB, within 1-256 MB."""
    return int(min(max(batch_rows * 2048, 1 << 20), 256 << 20))


def _rebatch(reader, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The reader's blocks cut into batches of at most `batch_rows` rows."""
    for block in reader:
        for start in range(0, block.num_rows, batch_rows):
            yield block.slice(start, batch_rows)


def _require(path: Path, column: str, names: list[str]) -> None:
    if column not in names:
        raise BulkError(f"{path} has no column {column!r}; its columns: {', '.join(names)}. Name the text with --text-column")


class Writer:
    """Appends record batches to a .parquet, .csv/.tsv or .jsonl file at a temporary path."""

    def __init__(self, tmp: Path, suffix: str) -> None:
        self.tmp, self.suffix, self.sink = tmp, suffix, None

    def write(self, batch: pa.RecordBatch) -> None:
        if self.suffix == ".parquet":
            self.sink = self.sink or pq.ParquetWriter(self.tmp, batch.schema)
            self.sink.write_batch(batch)
        elif self.suffix in (".csv", ".tsv"):
            self.sink = self.sink or pacsv.CSVWriter(self.tmp, batch.schema,
                                                     write_options=pacsv.WriteOptions(delimiter="\t" if self.suffix == ".tsv" else ","))
            self.sink.write_batch(batch)
        else:
            self.sink = self.sink or self.tmp.open("w")
            for row in batch.to_pylist():
                self.sink.write(json.dumps(row, default=str) + "\n")

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


def score_batch(batch: pa.RecordBatch, text_column: str, model, labels: list[str]) -> tuple[pa.RecordBatch, int]:
    """The batch with `predicted` and `prob_<label>` columns appended; and how many rows had no text."""
    texts = batch.column(text_column).to_pylist()
    scored = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    probs = np.full((len(texts), len(labels)), np.nan)
    if scored:
        probs[scored] = model.proba([texts[i] for i in scored])  # (n, C)
    has = np.zeros(len(texts), dtype=bool)
    has[scored] = True
    best = np.nan_to_num(probs, nan=-1.0).argmax(1)  # (N,)
    predicted = pa.array([labels[k] if ok else None for k, ok in zip(best, has)], type=pa.string())
    columns = {**{name: batch.column(name) for name in batch.schema.names}, "predicted": predicted}
    for c, label in enumerate(labels):
        columns[f"prob_{label}"] = pa.array(probs[:, c], mask=~has)
    return pa.RecordBatch.from_pydict(columns), len(texts) - len(scored)


def score_file(src: Path, out: Path, model: str = "gru_attention", text_column: str = "text", batch_rows: int = BATCH_ROWS,
               artifacts: Path = ARTIFACTS, progress: bool = True) -> dict:
    """Score every row of `src` into `out`; a summary {rows, no_text, seconds, docs_per_second}."""
    src, out = Path(src), Path(out)
    if out.suffix.lower() not in WRITE:
        raise BulkError(f"{out}: cannot write {out.suffix or 'a file without a suffix'}; name a {', '.join(WRITE)} file")
    if batch_rows < 1:
        raise BulkError(f"--batch-rows must be at least 1, not {batch_rows}")
    if out.resolve() == src.resolve():
        raise BulkError(f"{out} is the input file: write the predictions to another file")
    scorer = predictor(model, artifacts)
    batches, total = read_batches(src, text_column, batch_rows)
    clash = {"predicted", *(f"prob_{label}" for label in scorer.labels)}
    rows = no_text = 0
    t0 = time.perf_counter()
    bar = _progress(progress, total, f"{model} scoring {src.name}")
    with atomic_path(out) as tmp, bar as advance:
        writer = Writer(tmp, out.suffix.lower())
        try:
            for batch in batches:
                if rows == 0 and clash & set(batch.schema.names):
                    raise BulkError(f"{src} already has column(s) {', '.join(sorted(clash & set(batch.schema.names)))}, "
                                    "which the predictions would overwrite: rename them first")
                scored, missing = score_batch(batch, text_column, scorer, scorer.labels)
                writer.write(scored)
                rows += batch.num_rows
                no_text += missing
                advance(batch.num_rows)
            if rows == 0:
                raise BulkError(f"{src} has no rows to score")
        finally:
            writer.close()
    seconds = time.perf_counter() - t0
    summary = {"model": model, "rows": rows, "no_text": no_text, "seconds": round(seconds, 2),
               "docs_per_second": round((rows - no_text) / seconds, 1) if seconds else None, "out": str(out)}
    print(f"{model}: scored {rows - no_text:,} texts in {seconds:.1f} s ({summary['docs_per_second']:,} docs/s) into {out}"
          + (f"; {no_text:,} rows had no text (their predictions are null)" if no_text else ""), file=sys.stderr)
    return summary


class _progress:
    """A rich progress bar on stderr (rows scored, rows/s), or nothing; `with` yields its advance(n)."""

    def __init__(self, show: bool, total: int | None, what: str) -> None:
        self.show, self.total, self.what, self.bar = show and sys.stderr.isatty(), total, what, None

    def __enter__(self):
        if not self.show:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=Console(stderr=True))
        self.bar.start()
        task, started = self.bar.add_task(self.what, total=self.total, rate=""), time.perf_counter()

        def advance(n: int) -> None:
            self.bar.advance(task, n)
            done = self.bar.tasks[0].completed
            self.bar.update(task, rate=f"{done / max(time.perf_counter() - started, 1e-9):,.0f} rows/s")
        return advance

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
