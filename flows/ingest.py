"""ingest: adapter → (label spellings merged) → GX validation → dedupe → row limits → seeded validation split
→ dedupe → hygiene checks → data/ingested.parquet.

The texts are never all in memory. The adapter's table (a DataFrame, or a LazyFrame such as the table adapter's
scan) is read a batch of ROW_GROUP rows at a time (`Source`): one pass makes the per-row facts (id, label, split;
for the text whether it is null or blank, its length, its hash and the hash of its cleaned form, KEY), and every
decision (validation, dedupe, limits, the carve) is made on those facts; a last pass per output segment writes
the kept rows with their split (train and val first, then test and unsup, each in the table's order), a row
group at a time. GX validates the whole table up to `dataset.validate_rows` rows; over that, a seeded sample and
every row a check flags, with the counts exact over all rows (adapters/sampled.py).

Nothing downstream sees data that failed validation: a failure writes reports/validation.json (the
record of every run) and stops with the failing expectations, their counts and sample rows. The hygiene
checks (adapters/hygiene.py: texts shared between splits, label spellings, small classes) only warn; they
run on the final splits, after val is carved from train, because duplicates within train land on both
sides of that carve. `dataset.dedupe` drops copies before the carve (so val is carved from deduplicated
train) and again after it (the val copy of a text still in train: only drop_overlap leaves such pairs).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from adapters.base import check_frame, title_of
from adapters.download import DownloadError
from adapters.expectations import ValidationFailed, ValidationReport
from adapters.hygiene import KEY, Hygiene, check, dedupe, merge_label_spellings
from adapters.registry import get_adapter
from adapters.sampled import TEXT_FACTS
from adapters.source import Source, facts, source_of, validate_source
from flows.common import DATA, DATASET_FILE, REPORTS, cache_dir, params, run_stage
from reweigh.io import ROW_GROUP, rebatch, write_batches, write_json
from reweigh.params import DatasetParams, ParamsError
from reweigh.splits import stratified_split

OUTPUT = DATA / "ingested.parquet"
VALIDATION = REPORTS / "validation.json"


def _retry_download(task, task_run, state) -> bool:
    """Retry only what a retry can fix: network and checksum failures, not bad data."""
    try:
        state.result()
    except DownloadError:
        return True
    except Exception:
        return False
    return False


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_condition_fn=_retry_download, cache_policy=NO_CACHE)
def load_dataset(name: str, options: dict) -> tuple[object, pl.DataFrame | pl.LazyFrame]:
    adapter = get_adapter(name, options)
    return adapter, check_frame(adapter.load(cache_dir()), title_of(adapter))


def carve_validation(df: pl.DataFrame, fraction: float, seed: int) -> pl.DataFrame:
    """Move a seeded, stratified `fraction` of train to split 'val' (never touching test)."""
    train = df.filter(pl.col("split") == "train")
    new_split = stratified_split(train["label"], fraction, seed, "val", "train")
    return pl.concat([train.with_columns(split=new_split), df.filter(pl.col("split") != "train")], how="vertical")


def limit_rows(df: pl.DataFrame, limit: int, seed: int) -> pl.DataFrame:
    """Keep at most `limit` rows per split, a seeded sample (for quick runs and benchmarks), in the table's order."""
    if not limit:
        return df
    parts = [g.sample(n=min(limit, g.height), seed=seed) for _, g in df.group_by("split", maintain_order=True)]
    return pl.concat(parts).sort("_row")  # the table's order, as the stage writes it


def smallest_train_limit(label_sizes: np.ndarray, val_fraction: float) -> int | None:
    """The smallest train_limit that leaves every label a row in train and one in val, rounded as
    `stratified_split` rounds (half to even); None when even all rows do not."""
    total = int(label_sizes.sum())

    def ok(limit: int) -> bool:
        kept = np.round(limit / total * label_sizes)  # (labels,)
        val = np.round(kept * val_fraction)
        return bool(((val >= 1) & (kept - val >= 1)).all())

    if not ok(total):
        return None
    lo, hi = 1, total  # ok rises with the limit: bisect for the first limit that is ok (no table of every limit)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


def limit_train(df: pl.DataFrame, limit: int, val_fraction: float, seed: int) -> pl.DataFrame:
    """Keep `limit` labelled training rows, a seeded sample stratified by label (per label in proportion,
    rounded); test and unsup untouched. Runs before the validation split is carved from train."""
    train = df.filter(pl.col("split") == "train")
    if not limit or limit >= train.height:
        return df
    sizes = train.group_by("label").len().sort("label")
    smallest = smallest_train_limit(sizes["len"].to_numpy(), val_fraction)
    if smallest is not None and limit < smallest:
        per_label = ", ".join(f"{label} {n:,}" for label, n in sizes.iter_rows())
        raise ParamsError(
            f"dataset.train_limit={limit} leaves some label without a training or a validation row "
            f"(val_fraction {val_fraction}; training rows per label: {per_label}): set it to at least {smallest}, "
            f"or 0 for all {train.height:,}")
    keep = stratified_split(train["label"], limit / train.height, seed, "train", "unused")
    return pl.concat([train.filter(keep == "train"), df.filter(pl.col("split") != "train")], how="vertical")


def ingest(dataset: DatasetParams, seed: int, clean_steps: list[str] | None = None) -> pl.DataFrame:
    """The stage; returns the kept rows' facts (no texts), in the order written."""
    logger = get_run_logger()
    adapter, raw = load_dataset(dataset.name, dataset.options)
    source = source_of(adapter, raw)
    adapter, df, report = decide(adapter, source, dataset, seed, Hygiene.from_params(dataset, clean_steps))
    _record(report, logger)
    if df is None:
        raise ValidationFailed(report)
    write_batches(rebatch(kept_rows(source, df), ROW_GROUP), OUTPUT, empty=output_columns(source.frame.head(0).collect()))
    counts = df.group_by("split").len().sort("split")
    write_json(dataset_info(adapter, counts), DATASET_FILE)
    create_markdown_artifact(
        key="ingest-validation",
        markdown=_summary(report.to_dict(), counts),
        description=f"GX validation of dataset {title_of(adapter)}",
    )
    return df


def dataset_info(adapter: Any, counts: pl.DataFrame) -> dict[str, Any]:
    """data/dataset.json: the adapter's name, the dataset's title (what reports and messages call it), the
    labels in class-id order and the rows per split."""
    return {"name": adapter.name, "title": title_of(adapter), "labels": list(adapter.labels), "rows": dict(counts.iter_rows())}


def prepare(adapter: Any, raw: pl.DataFrame | pl.LazyFrame, dataset: DatasetParams, seed: int,
            hygiene: Hygiene) -> tuple[Any, pl.DataFrame | None, ValidationReport]:
    """The stage without I/O, in memory (the drift check, tests): as `decide`, but the table the stage would write."""
    source = source_of(adapter, raw)
    adapter, kept, report = decide(adapter, source, dataset, seed, hygiene)
    if kept is None:
        return adapter, None, report
    frames = list(kept_rows(source, kept))
    return adapter, (pl.concat(frames) if frames else output_columns(source.frame.head(0).collect())), report


def decide(adapter: Any, source: Source, dataset: DatasetParams, seed: int,
           hygiene: Hygiene) -> tuple[Any, pl.DataFrame | None, ValidationReport]:
    """The stage's decisions, without writing: (the adapter, with merged labels if asked; the kept rows' facts with
    their final split, in output order (`kept_rows` reads their texts), None when the critical suite failed; the
    validation report, hygiene checks and changes included)."""
    rows = facts(source, hygiene.clean_steps)
    merged: dict[str, str] = {}
    if hygiene.normalize_labels:  # before the declared labels are checked: 'Pos ' passes as 'pos'
        rows, adapter, merged = merge_label_spellings(rows, adapter)
        source.relabel(merged)
    report = validate_source(source, rows, adapter, dataset.validate_rows, seed)
    report.changes["labels_merged"] = merged
    if not report.success:
        return adapter, None, report
    df, dropped = split_rows(rows.drop(*TEXT_FACTS), dataset, hygiene, seed)  # what the suite read of the text is done with
    del rows  # the kept rows are a copy: the facts of every row can go before the hygiene checks
    report.results += check(df, adapter, hygiene, texts=lambda at: source.rows(at).select("_row", "text"),
                            validate_rows=dataset.validate_rows, seed=seed)
    report.changes["dedupe"] = {"mode": hygiene.dedupe, "dropped": dropped}
    return adapter, df.drop(KEY), report


def split_rows(rows: pl.DataFrame, dataset: DatasetParams, hygiene: Hygiene, seed: int) -> tuple[pl.DataFrame, dict[str, int]]:
    """Dedupe, limits, the validation split, dedupe again; the rows dropped, per reason. `rows` has KEY; so does the result."""
    df, dropped = dedupe(rows, hygiene.dedupe)
    df = limit_rows(df, dataset.limit, seed)
    df = limit_train(df, dataset.train_limit, dataset.val_fraction, seed)
    df, more = dedupe(carve_validation(df, dataset.val_fraction, seed), hygiene.dedupe)
    return df, {k: dropped.get(k, 0) + more.get(k, 0) for k in sorted({*dropped, *more})}


def kept_rows(source: Source, kept: pl.DataFrame) -> Iterator[pl.DataFrame]:
    """The kept rows with their final split and label, in `kept`'s order: train and val, then test and unsup, each
    in the table's order (what carve_validation makes), read back from the source in one pass per segment."""
    first = pl.col("split").is_in(["train", "val"])
    ordered = kept.select((first.cast(pl.Int8).diff().fill_null(0) <= 0).all(), (pl.col("_row").diff().over(first).fill_null(1) > 0).all())
    if not all(ordered.row(0)):
        raise AssertionError("ingest: the kept rows are not train and val, then the rest, each in the table's order")
    decided = kept.select("_row", "split", "label")
    for segment in (decided.filter(first), decided.filter(~first)):
        rows = segment["_row"]
        for batch in source.batches() if segment.height else ():
            lo, hi = rows.search_sorted(batch["_row"][0], "left"), rows.search_sorted(batch["_row"][-1], "right")
            if hi > lo:
                yield output_columns(batch.drop("label", "split").join(segment[lo:hi], on="_row", how="inner", maintain_order="left"))


def output_columns(df: pl.DataFrame) -> pl.DataFrame:
    """id, text, label, split, then the adapter's other columns."""
    order = ["id", "text", "label", "split"]
    return df.select(order + [c for c in df.columns if c not in order and c != "_row"])


def _record(report: ValidationReport, logger: Any) -> None:
    """reports/validation.json, and each warning and change in the log."""
    write_json(report.to_dict(), VALIDATION)
    if report.success:
        logger.info("dataset '%s': %d rows passed the %d critical expectations", report.dataset, report.rows,
                    sum(r.severity == "critical" for r in report.results))
    for warning in report.warnings:
        logger.warning("dataset '%s': %s", report.dataset, warning.explain())
    if report.changes.get("labels_merged"):
        logger.info("dataset '%s': label spellings merged: %s", report.dataset, report.changes["labels_merged"])
    if dropped := report.changes.get("dedupe", {}).get("dropped"):
        logger.info("dataset '%s': dedupe %s dropped %d row(s): %s", report.dataset, report.changes["dedupe"]["mode"], sum(dropped.values()), dropped)


def _summary(report: dict, counts: pl.DataFrame) -> str:
    lines = [f"# Dataset `{report['dataset']}`", "", "| split | rows |", "|---|---|"]
    lines += [f"| {s} | {n:,} |" for s, n in counts.iter_rows()]
    lines += ["", "| expectation | column | severity | ok | unexpected |", "|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['expectation']} | {r['column'] or ''} | {r['severity']} | {'✓' if r['success'] else '✗'} | {r['unexpected_count'] if r['unexpected_count'] is not None else ''} |")
    if dropped := report.get("changes", {}).get("dedupe", {}).get("dropped"):
        lines += ["", f"dedupe {report['changes']['dedupe']['mode']} dropped: " + ", ".join(f"{k} {n:,}" for k, n in dropped.items())]
    return "\n".join(lines)


@flow(name="ingest", log_prints=True)
def ingest_flow() -> str:
    p = params()
    df = ingest(p.dataset, p.seed, p.clean.steps)
    print(f"ingest: {df.height:,} rows → {OUTPUT} (validation: {VALIDATION})")
    return str(OUTPUT)


if __name__ == "__main__":
    run_stage(ingest_flow, "ingest")
