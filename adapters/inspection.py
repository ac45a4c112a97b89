"""What `reweigh adapters` and `reweigh validate` do: list the adapters found, and check one alone.

`validate` is the ingest stage without Prefect, the validation split, dedupe or any output: load with the
adapter, check the table's shape, merge label spellings if asked, run the GX suite and the hygiene checks
(on train and test), and print what failed with a hint on what to change. Optionally it writes the same
suite's GX Data Docs (HTML) so the result can be browsed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adapters.base import AdapterError, check_frame, fix_for, title_of
from adapters.expectations import ExpectationResult, ValidationReport, build_expectations
from adapters.hygiene import Hygiene, check, merge_label_spellings
from adapters.sampled import TEXT_FACTS
from adapters.registry import AdapterInfo, available, get_adapter, load_factory
from adapters.source import Source, facts, source_of, validate_source
from reweigh.params import DatasetParams

VALIDATE_ROWS = DatasetParams.model_fields["validate_rows"].default  # GX on every row up to this many (dataset.validate_rows)


@dataclass(frozen=True)
class AdapterRow:
    name: str
    origin: str  # built-in, local, plugin
    where: str  # module:Class
    labels: str  # the declared labels, or where they come from
    selected: bool  # named by dataset.name in params.yaml
    error: str | None = None


def describe_adapters(selected: str | None = None, options: dict[str, Any] | None = None) -> list[AdapterRow]:
    """Every adapter found, sorted by name. The selected one is constructed with `options` to show its labels."""
    rows = []
    for name, info in sorted(available().items()):
        labels, error = _labels(info, options if name == selected else None)
        rows.append(AdapterRow(name, info.origin, info.where, labels, name == selected, error))
    return rows


def _labels(info: AdapterInfo, options: dict[str, Any] | None) -> tuple[str, str | None]:
    try:
        if options is not None:
            return ", ".join(get_adapter(info.name, options).labels), None
        declared = getattr(load_factory(info), "labels", None)
    except AdapterError as exc:
        return "?", str(exc)
    if isinstance(declared, tuple | list):
        return ", ".join(map(str, declared)), None
    return "(set from dataset.options / the data)", None


def load_and_validate(name: str, options: dict[str, Any], cache_dir: Path, hygiene: Hygiene | None = None,
                      validate_rows: int = VALIDATE_ROWS, seed: int = 0) -> tuple[Any, Source, ValidationReport]:
    """Ingest without side effects: adapter → load → shape check → (label spellings merged) → GX suite and
    hygiene checks (`hygiene`: from params.yaml, default: the defaults). The table is read as the stage reads it,
    a batch at a time (adapters/source.py): GX sees it whole up to `validate_rows` rows (dataset.validate_rows),
    else a seeded sample and every row a check flags, the counts exact. Returns the adapter (labels merged), the
    table (`Source`: `.collect()` reads it whole) and the report. Raises AdapterError only."""
    hygiene = hygiene or Hygiene()
    adapter = get_adapter(name, options)
    source = source_of(adapter, check_frame(adapter.load(cache_dir), title_of(adapter)))
    rows = facts(source, hygiene.clean_steps)
    merged: dict[str, str] = {}
    if hygiene.normalize_labels:
        rows, adapter, merged = merge_label_spellings(rows, adapter)
        source.relabel(merged)
    report = validate_source(source, rows, adapter, validate_rows, seed)
    report.results += check(rows.drop(*TEXT_FACTS), adapter, hygiene, texts=lambda at: source.rows(at).select("_row", "text"),
                            validate_rows=validate_rows, seed=seed)
    report.changes["labels_merged"] = merged
    return adapter, source, report


def docs_rows(source: Source, rows: int, validate_rows: int = VALIDATE_ROWS, seed: int = 0) -> pl.DataFrame:
    """The rows Data Docs render: the whole table up to `validate_rows` rows, else a seeded sample of that many."""
    if rows <= validate_rows:
        return source.collect()
    return source.rows(sorted(np.random.default_rng(seed).choice(rows, size=validate_rows, replace=False).tolist()))


def hint(result: ExpectationResult) -> str | None:
    return result.fix or fix_for(result.expectation, result.column)


def explain(report: ValidationReport) -> str:
    """The report's message (each failure with what to change), or that it passed (for tests and plain output)."""
    return report.message() if report.failures or report.warnings else f"dataset '{report.dataset}' passed validation"


def print_report(report: ValidationReport, console: Any) -> None:
    """A readable report: rows per split and label, every expectation with ✓/✗, failures with samples and hints."""
    from rich.table import Table

    labels = list(report.labels)
    console.print(f"dataset '{report.dataset}': {report.rows:,} rows, labels {', '.join(labels)}", highlight=False)
    counts = Table()
    counts.add_column("split")
    for label in labels:
        counts.add_column(label, justify="right")
    extra = sorted({k for per in report.counts.values() for k in per} - set(labels))
    for label in extra:  # undeclared labels and unlabelled rows
        counts.add_column(f"{label} (undeclared)" if label != "(none)" else "(no label)", justify="right")
    for split, per in report.counts.items():
        counts.add_row(split, *(f"{per.get(c, 0):,}" for c in labels + extra))
    console.print(counts)

    table = Table(title="GX expectations", title_justify="left")
    for column in ("", "expectation", "column", "where", "severity", "unexpected"):
        table.add_column(column, overflow="fold")
    for res in report.results:
        mark = "[green]✓[/]" if res.success else ("[red]✗[/]" if res.severity == "critical" else "[yellow]![/]")
        table.add_row(mark, res.expectation, res.column or "", res.condition or "", res.severity,
                      "" if res.unexpected_count is None else f"{res.unexpected_count:,}")
    console.print(table)

    for res in report.failures + report.warnings:
        kind = "[red]failed[/]" if res.severity == "critical" else "[yellow]warning[/]"
        console.print(f"{kind}: {res.describe()}", markup=True, highlight=False)
        if res.details:
            console.print(f"    found: {res.details}", markup=False, highlight=False)
        for row in res.sample_rows:
            console.print(f"    {row}", markup=False, highlight=False)
        if (res.severity == "critical" or res.fix) and hint(res):
            console.print(f"    [bold]what to change[/]: {hint(res)}", highlight=False)
    if report.changes.get("labels_merged"):
        console.print(f"label spellings merged (dataset.normalize_labels): {report.changes['labels_merged']}", highlight=False)
    verdict = "[green]passed[/]" if report.success else "[red]FAILED[/]"
    console.print(f"dataset '{report.dataset}' {verdict}: {len(report.results) - len(report.failures)} of "
                  f"{len(report.results)} expectations met, {len(report.warnings)} warning(s)", highlight=False)


def write_data_docs(df: pl.DataFrame, adapter: Any, directory: Path) -> Path:
    """Run the same suite through a GX checkpoint that renders Data Docs (static HTML) into `directory`."""
    import logging

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    directory = Path(directory).resolve()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site("reweigh", {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(directory)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    batch_definition = (
        context.data_sources.add_pandas(f"{adapter.name}_source")
        .add_dataframe_asset(title_of(adapter))  # the name Data Docs shows for the data
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=f"{adapter.name}_suite", expectations=build_expectations(adapter)))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=f"{adapter.name}_validation", data=batch_definition, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"{adapter.name}_checkpoint",
        validation_definitions=[definition],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["reweigh"])],
        result_format={"result_format": "SUMMARY"},
    ))
    checkpoint.run(batch_parameters={"dataframe": df.to_pandas()})
    index = directory / "index.html"
    if not index.is_file():
        raise AdapterError(f"GX did not write Data Docs into {directory}")
    return index
