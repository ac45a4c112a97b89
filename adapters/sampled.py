"""GX on a table too large to hand it whole: a seeded sample plus the rows each check flags, the counts exact.

GX validates a pandas copy of what it is given, so millions of texts cannot go to it at once. Over
`dataset.validate_rows` rows the ingest stage (flows/ingest.py) hands GX instead:
- a seeded random sample of `validate_rows` rows;
- for each row-wise expectation, the first SAMPLE_ROWS rows that break it (a duplicate text: with a copy);
- one row of each (split, label), so "every label in train" and "train and test present" see every value;
found by `unexpected` in per-row facts over every row: the columns themselves, and for the text (which the facts
do not hold) whether it is null or blank, its length and its hash, from the stage's streamed pass. Then each
result of the shared suite and of the hygiene checks gets its exact count over all rows, and the row-count
bound the exact total. So the report reads as it would had GX seen every row: the same verdicts, counts and first
sample rows (tests/test_ingest_streamed.py sets the two side by side). An adapter's own expectations see only
the sample; the report says how many rows GX saw (`validated_rows`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from adapters.expectations import SAMPLE_ROWS, ExpectationResult, run_suite_indexed

BLANK = r"^\s*$"  # the shared suite's "blank text" regex (adapters/expectations.py)
TEXT_FACTS = ("text_null", "text_blank", "text_chars", "text_hash")


def text_facts() -> list[pl.Expr]:
    """The per-row facts that stand for the text column: what the shared suite checks of it."""
    text = pl.col("text")
    return [text.is_null().alias("text_null"), text.str.contains(BLANK).fill_null(False).alias("text_blank"),
            text.str.len_chars().alias("text_chars"),
            pl.when(text.is_not_null()).then(text.hash(seed=1)).alias("text_hash")]


def _where(condition: Any) -> pl.Expr | None:
    """A GX row condition as pandas reads it: a null split is unequal to every value."""
    if not condition:
        return None
    if not (isinstance(condition, dict) and condition.get("type") == "comparison" and condition.get("operator") in ("==", "!=")):
        raise ValueError(f"no exact count for the row condition {condition}")
    column = pl.col(condition["column"]["name"])
    value = condition["parameter"]
    return column.eq_missing(value) if condition["operator"] == "==" else column.ne_missing(value)


def unexpected(expectation: Any) -> pl.Expr | None:
    """True on the rows of the facts that break a row-wise expectation (GX's rules: nulls pass every check but
    the null checks); None for an expectation that is not row-wise or not known here."""
    kind, kw = expectation.expectation_type, expectation.configuration.kwargs
    column = kw.get("column")
    text = column == "text"
    if kind == "expect_column_values_to_not_be_null":
        hit = pl.col("text_null") if text else pl.col(column).is_null()
    elif kind == "expect_column_values_to_be_null" and not text:
        hit = pl.col(column).is_not_null()
    elif kind == "expect_column_values_to_be_in_set" and not text:
        hit = pl.col(column).is_not_null() & ~pl.col(column).is_in(list(kw["value_set"]))
    elif kind == "expect_column_values_to_not_match_regex" and text and kw.get("regex") == BLANK:
        hit = pl.col("text_blank")
    elif kind in ("expect_column_value_lengths_to_be_between", "expect_column_values_to_be_between"):
        value = pl.col("text_chars") if text else pl.col(column)
        if kind == "expect_column_value_lengths_to_be_between" and not text:
            return None
        hit = pl.lit(False)
        if kw.get("min_value") is not None:
            hit = hit | (value < kw["min_value"])
        if kw.get("max_value") is not None:
            hit = hit | (value > kw["max_value"])
    elif kind == "expect_column_values_to_be_unique" and text:
        hit = pl.col("text_hash").is_not_null() & pl.col("text_hash").is_duplicated()
    else:
        return None
    where = _where(kw.get("row_condition"))
    return (hit if where is None else hit & where).fill_null(False)


def rows_to_check(facts: pl.DataFrame, expectations: list, size: int, seed: int) -> list[int]:
    """The positions (sorted) of the rows GX sees: a seeded sample of `size`, the first SAMPLE_ROWS rows each
    row-wise expectation flags (and a copy of each flagged duplicate), one row of each (split, label)."""
    indexed = facts.with_row_index("_at")
    picked = [np.random.default_rng(seed).choice(facts.height, size=min(size, facts.height), replace=False)]
    for expectation in expectations:
        if (hit := unexpected(expectation)) is None:
            continue
        first = indexed.filter(hit).head(SAMPLE_ROWS)
        picked.append(first["_at"].to_numpy())
        if expectation.expectation_type == "expect_column_values_to_be_unique":  # GX sees a duplicate only with its copy
            copies = indexed.filter(pl.col("text_hash").is_in(first["text_hash"].implode()))
            picked.append(copies.group_by("text_hash").head(2)["_at"].to_numpy())
    if {"split", "label"} <= set(facts.columns):
        picked.append(indexed.group_by("split", "label").agg(pl.col("_at").first())["_at"].to_numpy())
    return sorted(set(np.concatenate(picked).tolist()))


def exact(results: list[tuple[int, ExpectationResult]], expectations: list, facts: pl.DataFrame) -> None:
    """Each result (with its expectation's index, `run_suite_indexed`) of a row-wise expectation known to `unexpected`
    gets its count over every row of `facts`; the row-count bound, the exact total."""
    for index, result in results:
        expectation = expectations[index]
        if expectation.expectation_type == "expect_table_row_count_to_be_between":
            kw = expectation.configuration.kwargs
            result.success = (kw.get("min_value") is None or facts.height >= kw["min_value"]) and (
                kw.get("max_value") is None or facts.height <= kw["max_value"])
            result.observed = None if result.success else facts.height
        elif (hit := unexpected(expectation)) is not None:
            result.unexpected_count = int(facts.select(hit.sum()).item())
            result.success = result.unexpected_count == 0
            if result.success:
                result.observed, result.sample_rows = None, []


def run_suite_sampled(facts: pl.DataFrame, expectations: list, name: str, gx_rows: Callable[[list[int]], pl.DataFrame],
                      size: int, seed: int, samples: Callable[[list[int]], pl.DataFrame] | None = None,
                      ) -> tuple[list[ExpectationResult], int]:
    """`run_suite` on the rows `rows_to_check` picks, the counts made exact over `facts`; and how many rows GX saw.
    `gx_rows(positions)`: those rows of the table, in order, with `_pos` (the position a sample row reports);
    `samples(positions)`: the rows to show for them, when other than what GX sees (texts read back)."""
    frame = gx_rows(rows_to_check(facts, expectations, size, seed))
    shown = None
    if samples is not None:
        def shown(at: list[int]) -> pl.DataFrame:
            positions = frame["_pos"].gather(at)
            return samples(positions.to_list()).with_columns(_pos=positions)
    results = run_suite_indexed(frame, expectations, name, samples=shown)
    exact(results, expectations, facts)
    return [result for _, result in results], frame.height
