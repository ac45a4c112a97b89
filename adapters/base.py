"""The adapter protocol: the one place a new dataset plugs in.

An adapter is any object with a `name`, its class `labels` (index = class id everywhere downstream) and
`load(cache_dir)` returning one polars table with columns `text`, `label`, `split` (more columns are kept): a
DataFrame, or a LazyFrame (a scan) when the data may not fit in memory; the ingest stage reads either a batch at
a time (flows/ingest.py).
`split` is one of train / test / unsup; `label` is null only in unsup. Everything else (download, cache,
validation, the validation split, cleaning) is shared machinery, so an adapter stays a few lines.

Optional attributes an adapter may declare, read with `getattr`:
- `row_count: tuple[int, int]`: bounds on the number of rows `load` returns (checked by GX).
- `max_text_chars: int`: longest text accepted (default 100,000 characters).
- `title: str`: the dataset's name in messages, data/dataset.json and the report (the table adapter: the file
  name, or its `title` option); `title_of` falls back to `name`.
- `expectations() -> list[gx.expectations.Expectation]`: extra GX expectations on the whole table.
- `sources() -> list[str]`: the files, folders or http(s) URLs `load` reads. The `sources` stage
  fingerprints them (adapters/sources.py) and ingest depends on the result, so `dvc repro` (and the
  scheduled retrain) reruns ingest when the data changes. Without it, new data goes unseen.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import polars as pl

SPLITS = ("train", "test", "unsup")
REQUIRED_COLUMNS = ("text", "label", "split")
DEFAULT_MAX_TEXT_CHARS = 100_000

# What to change when an expectation of the shared GX suite fails, by (expectation type, column).
_FIXES = {
    ("expect_column_values_to_not_be_null", "text"): "every row needs a text: drop or fill those rows in load()",
    ("expect_column_values_to_not_be_null", "split"): "every row needs a split (train, test or unsup): set it in load()",
    ("expect_column_values_to_not_be_null", "label"): "labelled rows need a label: fix them in load(), or put unlabelled rows in split unsup",
    ("expect_column_values_to_not_match_regex", "text"): "drop rows whose text is empty or only whitespace in load()",
    ("expect_column_value_lengths_to_be_between", "text"): "drop or truncate texts outside the bounds, or set `max_text_chars` on the adapter",
    ("expect_column_values_to_be_in_set", "split"): "split must be one of train, test, unsup: rename or drop the other values in load()",
    ("expect_column_values_to_be_in_set", "label"): "declare every class in the adapter's `labels` (table adapter: dataset.options.labels), or map or drop those rows in load(); labels that differ only by case or spaces ('Pos', 'pos ') merge with dataset.normalize_labels: true",
    ("expect_column_distinct_values_to_contain_set", "split"): "both train and test splits are needed: draw a test split in load() (reweigh.splits.stratified_split)",
    ("expect_column_distinct_values_to_contain_set", "label"): "every declared label needs rows in train: add data, or drop the label from `labels`",
    ("expect_column_values_to_be_null", "label"): "rows in split unsup must have a null label: null it, or put labelled rows in train/test",
    ("expect_table_row_count_to_be_between", None): "load() returned a row count outside the adapter's `row_count` bounds",
}


def fix_for(expectation: str, column: str | None) -> str | None:
    """What to change when the shared suite's `expectation` on `column` fails; None for other expectations."""
    return _FIXES.get((expectation, column))


@runtime_checkable
class DatasetAdapter(Protocol):
    name: str
    labels: tuple[str, ...]

    def load(self, cache_dir: Path) -> pl.DataFrame | pl.LazyFrame: ...


def title_of(adapter: object) -> str:
    """The dataset's name wherever a dataset (not the adapter's code) is named: its `title`, else its `name`."""
    title = getattr(adapter, "title", None)
    return title if isinstance(title, str) and title else str(getattr(adapter, "name", "?"))


class AdapterError(Exception):
    """An adapter is missing, malformed, or returned data the pipeline cannot use. Says what to change."""


class MissingSource(AdapterError):
    """A file or folder the adapter reads is not on this machine (a clone without the untracked data file).
    The `sources` check then keeps the fingerprint it recorded, as for a URL it cannot reach."""


def check_adapter(adapter: object, where: str) -> None:
    """Fail with a message that says what to change when an object does not implement the protocol."""
    problems = []
    name = getattr(adapter, "name", None)
    if not isinstance(name, str) or not name:
        problems.append("set a class attribute `name: str` (the key used in params.yaml dataset.name)")
    labels = getattr(adapter, "labels", None)
    if not isinstance(labels, tuple | list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        problems.append("set `labels` to a tuple of at least two class names, e.g. ('neg', 'pos')")
    elif len(set(labels)) != len(labels):
        problems.append(f"`labels` has duplicates: {tuple(labels)}")
    if not callable(getattr(adapter, "load", None)):
        problems.append("implement `load(self, cache_dir: Path) -> polars.DataFrame` with columns text, label, split")
    if problems:
        raise AdapterError(f"adapter {where} does not implement the adapter protocol:\n  - " + "\n  - ".join(problems))


def check_frame(df: object, title: str) -> pl.DataFrame | pl.LazyFrame:
    """Check the shape of what `load` returned (columns and dtypes); values are GX's job. `title` names the
    dataset in the messages (`title_of(adapter)`). A LazyFrame stays lazy: its rows are counted as it is read."""
    if not isinstance(df, pl.DataFrame | pl.LazyFrame):
        raise AdapterError(
            f"dataset '{title}': load() returned {type(df).__name__}; return a polars.DataFrame "
            "(pl.from_pandas(...) converts a pandas one), or a polars.LazyFrame (a scan) for data larger than memory"
        )
    schema = df.collect_schema()
    missing = [c for c in REQUIRED_COLUMNS if c not in schema]
    if missing:
        raise AdapterError(
            f"dataset '{title}': load() returned columns {schema.names()}; missing {missing}. "
            "Rename your columns to text, label, split (df.rename({...}))"
        )
    wrong = {c: str(schema[c]) for c in REQUIRED_COLUMNS if schema[c] not in (pl.String, pl.Null)}
    if wrong:
        raise AdapterError(
            f"dataset '{title}': columns must be strings, got {wrong}. "
            "Cast them, e.g. df.with_columns(pl.col('label').cast(pl.String)), and map numeric labels to names"
        )
    if isinstance(df, pl.DataFrame) and df.height == 0:
        raise AdapterError(no_rows(title))
    return df.with_columns(pl.col(c).cast(pl.String) for c in REQUIRED_COLUMNS)


def no_rows(title: str) -> str:
    return f"dataset '{title}': load() returned a table with no rows; check what it reads (a path, a filter) and return the rows"


def collect(frame: pl.DataFrame | pl.LazyFrame, title: str) -> pl.DataFrame:
    """What `check_frame` passed, in memory (the tools that look at a whole table: `reweigh check`, the drift check)."""
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect(engine="streaming")
        if frame.height == 0:
            raise AdapterError(no_rows(title))
    return frame
