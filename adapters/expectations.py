"""One Great Expectations suite for every adapter, built from the labels it declares.

Critical expectations stop the run; warnings are recorded (reports/validation.json) and printed:
- critical: text non-null, non-blank, at most `max_text_chars`; split in {train, test, unsup}; train and
  test present; label in the declared set; label non-null outside unsup and null inside it; every label
  present in train; row-count bounds where the adapter declares them; the adapter's own expectations.
- warning: duplicate texts, texts longer than LONG_TEXT_WARN characters.
The data-hygiene checks (texts shared between splits, label spellings, small classes) run through the same
machinery (`run_suite`) on columns computed in adapters/hygiene.py, and join the same report.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from adapters.base import DEFAULT_MAX_TEXT_CHARS, fix_for, title_of

LONG_TEXT_WARN = 20_000
SAMPLE_ROWS = 5


@dataclass
class ExpectationResult:
    expectation: str
    column: str | None
    condition: str | None
    severity: str
    success: bool
    unexpected_count: int | None
    observed: Any = None
    sample_rows: list[dict[str, Any]] = field(default_factory=list)
    check: str | None = None  # a hygiene check's name in words, e.g. "texts in both train and test"
    details: Any = None  # what a hygiene check found, counted in polars (pairs, groups, classes)
    fix: str | None = None  # what to change (the shared suite's fixes are adapters.base.fix_for)

    def describe(self) -> str:
        check = f"{self.check}: " if self.check else ""
        where = f" on {self.column}" if self.column else ""
        cond = f" where {self.condition}" if self.condition else ""
        count = f": {self.unexpected_count:,} row(s)" if self.unexpected_count is not None else ""
        observed = f" (observed {self.observed})" if self.observed is not None else ""
        return f"{check}{self.expectation}{where}{cond}{count}{observed}"

    def explain(self, indent: str = "    ") -> str:
        """describe(), then what was found, sample rows and what to change, one per line (for logs)."""
        lines = [self.describe()]
        if self.details:
            lines.append(f"{indent}found: {self.details}")
        lines += [f"{indent}{row}" for row in self.sample_rows]
        if fix := self.fix or fix_for(self.expectation, self.column):
            lines.append(f"{indent}what to change: {fix}")
        return "\n".join(lines)


@dataclass
class ValidationReport:
    dataset: str  # the dataset's title (adapters.base.title_of): a table adapter's file name, else the adapter's name
    labels: tuple[str, ...]
    rows: int
    counts: dict[str, dict[str, int]]
    results: list[ExpectationResult]
    source: str | None = None  # the adapter's own `title`, None when it sets none
    changes: dict[str, Any] = field(default_factory=dict)  # what ingest changed: labels merged, rows dropped
    adapter: str | None = None  # the adapter's name (dataset.name in params.yaml)
    validated_rows: int | None = None  # rows GX saw when fewer than `rows` (adapters/sampled.py); None: every row

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results if r.severity == "critical")

    @property
    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success and r.severity == "critical"]

    @property
    def warnings(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success and r.severity != "critical"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "adapter": self.adapter,
            "source": self.source,
            "success": self.success,
            "labels": list(self.labels),
            "rows": self.rows,
            "counts": self.counts,
            "failed": len(self.failures),
            "warnings": len(self.warnings),
            "changes": self.changes,
            "results": [r.__dict__ for r in self.results],
        } | ({"validated_rows": self.validated_rows} if self.validated_rows is not None else {})

    def message(self) -> str:
        lines = [f"dataset '{self.dataset}' failed validation ({len(self.failures)} of {len(self.results)} expectations):"]
        for res in self.failures:
            lines.append(f"  ✗ {res.describe()}")
            for row in res.sample_rows:
                lines.append(f"      {row}")
            if fix := fix_for(res.expectation, res.column):
                lines.append(f"      what to change: {fix}")
        for res in self.warnings:
            lines.append(f"  ! warning: {res.describe()}")
        return "\n".join(lines)


class ValidationFailed(Exception):
    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.message())
        self.report = report

    def __reduce__(self) -> tuple:  # pickled whole (a child process's error): rebuilt from the report, not the message
        return (type(self), (self.report,))


def build_expectations(adapter: Any) -> list:
    import great_expectations as gx

    E = gx.expectations
    labels = list(adapter.labels)
    max_chars = getattr(adapter, "max_text_chars", DEFAULT_MAX_TEXT_CHARS)
    from great_expectations.expectations.row_conditions import Column

    split = Column("split")
    expectations = [
        E.ExpectColumnValuesToNotBeNull(column="text"),
        E.ExpectColumnValuesToNotMatchRegex(column="text", regex=r"^\s*$"),
        E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1, max_value=max_chars),
        E.ExpectColumnValuesToNotBeNull(column="split"),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "test", "unsup"]),
        E.ExpectColumnDistinctValuesToContainSet(column="split", value_set=["train", "test"]),
        E.ExpectColumnValuesToBeInSet(column="label", value_set=labels),
        E.ExpectColumnValuesToNotBeNull(column="label", row_condition=split != "unsup"),
        E.ExpectColumnValuesToBeNull(column="label", row_condition=split == "unsup"),
        E.ExpectColumnDistinctValuesToContainSet(column="label", value_set=labels, row_condition=split == "train"),
        E.ExpectColumnValuesToBeUnique(column="text", severity="warning"),
        E.ExpectColumnValueLengthsToBeBetween(column="text", max_value=LONG_TEXT_WARN, severity="warning"),
    ]
    bounds = getattr(adapter, "row_count", None)
    if bounds is not None:
        expectations.append(E.ExpectTableRowCountToBeBetween(min_value=bounds[0], max_value=bounds[1]))
    extra = getattr(adapter, "expectations", None)
    if callable(extra):
        expectations.extend(extra())
    return expectations


def validate(df: pl.DataFrame, adapter: Any) -> ValidationReport:
    """Run the suite on `df` (the adapter's raw output) and return the report; raises nothing. A table too large
    for that is validated by flows/ingest.py through adapters/sampled.py."""
    return report_of(adapter, df, run_suite(df, build_expectations(adapter), adapter.name))


def report_of(adapter: Any, df: pl.DataFrame, results: list[ExpectationResult], validated_rows: int | None = None) -> ValidationReport:
    """The report of `results` on the table whose split and label columns `df` holds (rows, counts per class)."""
    return ValidationReport(
        dataset=title_of(adapter),
        labels=tuple(adapter.labels),
        rows=df.height,
        counts=_counts(df),
        results=results,
        source=getattr(adapter, "title", None),
        adapter=adapter.name,
        validated_rows=validated_rows,
    )


def run_suite(df: pl.DataFrame, expectations: list, name: str, samples: Any = None) -> list[ExpectationResult]:
    """`run_suite_indexed` without the indices: the results in GX's order (grouped by column)."""
    return [result for _, result in run_suite_indexed(df, expectations, name, samples)]


def run_suite_indexed(df: pl.DataFrame, expectations: list, name: str, samples: Any = None) -> list[tuple[int, ExpectationResult]]:
    """Validate `df` with GX; sample rows come from `samples` (default `df`): a frame in `df`'s row order, or a
    function of `df`'s row numbers giving those rows (for columns `df` does not hold, e.g. texts read back).
    A sample's `row` is its `_pos` where the samples have one (its row in the whole table), else its row in `df`.

    An expectation's `meta` may carry `check` and `fix` (what to report) and `show` (extra sample columns)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas(f"{name}_source")
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe("all_rows")
        .get_batch(batch_parameters={"dataframe": df.to_pandas()})
    )
    suite = gx.ExpectationSuite(name=f"{name}_suite", expectations=expectations)
    outcome = batch.validate(suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": SAMPLE_ROWS})
    del batch  # GX keeps its last context alive, and the context its data sources: drop the pandas copy of `df`
    context.data_sources.delete(f"{name}_source")
    release_heap()
    wanted = sorted({i for res in outcome.results for i in _indices(res)})
    if samples is None or isinstance(samples, pl.DataFrame):
        table, at = (df if samples is None else samples), {i: i for i in wanted}
    else:
        table, at = samples(wanted), {i: n for n, i in enumerate(wanted)}
    slots: dict[str, list[int]] = {}
    for i, expectation in enumerate(expectations):
        slots.setdefault(_key(expectation.configuration), []).append(i)
    return [(slots[_key(res.expectation_config)].pop(0), _result(res, table, at)) for res in outcome.results]


def _key(config: Any) -> str:
    """An expectation's configuration as text, without what GX adds when it runs it (the batch's id)."""
    plain = config.to_json_dict()
    plain.pop("id", None)
    plain["kwargs"] = {k: v for k, v in plain["kwargs"].items() if k != "batch_id"}
    return json.dumps(plain, sort_keys=True, default=str)


def release_heap() -> None:
    """Give the C heap's free memory back to the system (glibc's malloc_trim; a no-op elsewhere). GX validates a
    pandas copy of the table, a Python object per text: freed, that memory stayed in the process (about 1 GB
    after 200,000 IMDB reviews) where polars, which allocates apart, could not reuse it."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _indices(res: Any) -> list[int]:
    """The row numbers of the first SAMPLE_ROWS rows that broke the expectation."""
    return [int(i) for i in ((res.result or {}).get("unexpected_index_list") or [])[:SAMPLE_ROWS] if isinstance(i, int | float)]


def _result(res: Any, samples: pl.DataFrame, at: dict[int, int]) -> ExpectationResult:
    config = res.expectation_config
    kwargs, meta = config.kwargs, config.meta or {}
    result = res.result or {}
    columns = [c for c in ("id", "text", "label", "split", *meta.get("show", ())) if c in samples.columns]
    if res.exception_info and res.exception_info.get("raised_exception"):
        observed = res.exception_info.get("exception_message")
    elif not res.success and result.get("partial_missing_list"):  # a set with members absent, e.g. no test split
        observed = f"missing {result['partial_missing_list']} of {kwargs.get('value_set')}"
    else:
        observed = result.get("observed_value") if not res.success else None
    return ExpectationResult(
        expectation=config.type,
        column=kwargs.get("column"),
        condition=_condition(kwargs.get("row_condition")),
        severity=str(getattr(config.severity, "value", config.severity)),
        success=bool(res.success),
        unexpected_count=result.get("unexpected_count"),
        observed=_plain(observed),
        sample_rows=[_sample_row(samples, at[i], i, columns) for i in _indices(res)],
        check=meta.get("check"),
        fix=meta.get("fix"),
    )


def _condition(row_condition: Any) -> str | None:
    """A row condition as the user would write it: split == "train" (GX hands it back as a dict)."""
    if isinstance(row_condition, dict) and row_condition.get("type") == "comparison":
        return f'{row_condition["column"]["name"]} {row_condition["operator"]} "{row_condition["parameter"]}"'
    if isinstance(row_condition, dict):
        row_condition = row_condition.get("pass_through_filter") or row_condition.get("condition") or str(row_condition)
    return str(row_condition) if row_condition else None


def _sample_row(df: pl.DataFrame, at: int, index: int, columns: list[str]) -> dict[str, Any]:
    row = df.row(at, named=True)
    out: dict[str, Any] = {"row": row.get("_pos", index)}
    for col in columns:
        value = row[col]
        if isinstance(value, str) and len(value) > 80:
            value = value[:77] + "..."
        out[col] = value
    return out


def _counts(df: pl.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    if {"split", "label"} <= set(df.columns):
        for split, label, n in df.group_by(["split", "label"]).len().sort(["split", "label"], nulls_last=True).iter_rows():
            counts.setdefault(str(split), {})[str(label) if label is not None else "(none)"] = int(n)
    return counts


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
