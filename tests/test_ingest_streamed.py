"""The ingest stage reads the adapter's table a batch at a time and validates a large one on a sample (flows/ingest.py,
adapters/sampled.py). A table over `dataset.validate_rows` rows must get the report GX gives when it sees every row:
the same verdicts, exact counts and first sample rows; and the stage must write the same table either way, from a
DataFrame or from the table adapter's lazy scan of a file under data/raw/."""
from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from adapters.base import AdapterError, check_frame
from adapters.hygiene import Hygiene
from adapters.source import Source
from adapters.table import TableAdapter
from flows.ingest import prepare
from reweigh.io import rebatch
from reweigh.params import DatasetParams

LABELS = ("neg", "pos", "mixed")
WORDS = "good bad plot acting film story dull bright long short".split()


class Toy:
    name = "toy"
    labels = LABELS
    max_text_chars = 300
    row_count = (10, 5_000)


def table(n: int = 1_200, seed: int = 0) -> pl.DataFrame:
    """`n` rows of three classes in train, test and unsup, every text distinct."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        split = ("train", "train", "test", "unsup")[i % 4]
        label = None if split == "unsup" else LABELS[rng.randrange(3)]
        rows.append((" ".join(rng.choice(WORDS) for _ in range(12)) + f" {i}", label, split))
    return pl.DataFrame(rows, schema={"text": pl.String, "label": pl.String, "split": pl.String}, orient="row")


def spoiled() -> pl.DataFrame:
    """Every check of the shared suite broken, some many times, some late in the table."""
    df = table().to_dicts()
    for i in (3, 700, 1_150):
        df[i]["text"] = None
    for i in (5, 6, 999):
        df[i]["text"] = "  \n "
    df[1_101]["text"] = "x" * 400  # over max_text_chars
    for i in range(10, 1_200, 97):
        df[i]["label"] = "neutral"  # 13 rows of an undeclared label
    df[1_040]["label"] = None  # labelled split, no label
    df[1_043]["label"] = "pos"  # an unsup row with a label
    df[870]["split"] = "validation"
    df[871]["split"] = None
    for i in (20, 21, 1_180):
        df[i]["text"] = df[8]["text"]  # duplicates (a warning)
    return pl.DataFrame(df, schema={"text": pl.String, "label": pl.String, "split": pl.String})


class Spelled(Toy):
    labels = (*LABELS, "Pos ")  # declared, so it passes the suite; the hygiene check sees a spelling of 'pos'


def hygienic_problems() -> pl.DataFrame:
    """Passes the critical suite, but with texts shared between splits, a label spelling and a small class."""
    df = table().to_dicts()
    for i in (2, 6, 1_002):  # test rows (i % 4 == 2) holding train texts
        df[i]["text"] = df[i - 2]["text"].upper() + "!"
    for i in (400, 404, 1_104):
        df[i]["label"] = "Pos "
    return pl.DataFrame(df, schema={"text": pl.String, "label": pl.String, "split": pl.String}).with_columns(
        note=pl.format("row {}", pl.int_range(pl.len())))


def report_of(df: pl.DataFrame | pl.LazyFrame, validate_rows: int, adapter=None, **hygiene) -> tuple:
    params = DatasetParams(name="toy", val_fraction=0.2, validate_rows=validate_rows, min_class_rows=5, **hygiene)
    return prepare(adapter or Toy(), df, params, seed=3, hygiene=Hygiene.from_params(params))


def as_dicts(report) -> list[dict]:
    return [{k: v for k, v in r.__dict__.items()} for r in report.results]


def test_a_sampled_validation_reports_what_gx_finds_on_every_row():
    whole = report_of(spoiled(), validate_rows=100_000)[2]
    sampled = report_of(spoiled(), validate_rows=50)[2]
    assert not whole.success and whole.validated_rows is None
    assert 50 < sampled.validated_rows < 200  # the sample, the flagged rows and one row per (split, label)
    assert as_dicts(sampled) == as_dicts(whole)
    counts = {f"{r.expectation}:{r.column}": r.unexpected_count for r in whole.failures}
    assert counts["expect_column_values_to_be_in_set:label"] == 13  # not what a 50-row sample would see
    assert {r["row"] for r in whole.failures[0].sample_rows} <= {3, 700, 1_150}
    assert sampled.to_dict()["validated_rows"] == sampled.validated_rows and "validated_rows" not in whole.to_dict()


def test_the_row_count_bound_is_checked_on_every_row():
    class Small(Toy):
        row_count = (10, 1_000)

    whole = report_of(table(), 100_000, Small())[2]
    sampled = report_of(table(), 50, Small())[2]
    assert as_dicts(sampled) == as_dicts(whole)
    assert [r.observed for r in sampled.failures] == [1_200]


def test_hygiene_checks_and_the_written_table_do_not_depend_on_the_sample():
    for dedupe in ("none", "drop_all"):
        _, whole_df, whole = report_of(hygienic_problems(), 100_000, Spelled(), dedupe=dedupe)
        _, sampled_df, sampled = report_of(hygienic_problems(), 60, Spelled(), dedupe=dedupe)
        assert whole.success and sampled.success
        assert as_dicts(sampled) == as_dicts(whole)
        assert sampled_df.equals(whole_df)
        warned = {f"{r.column}|{r.condition}": r for r in whole.warnings}
        assert {"label_variant_of|None", 'class_rows|split != "unsup"'} <= set(warned)
        assert ('same_text_in_train|split == "test"' in warned) == (dedupe == "none")
        assert sampled.validated_rows < 200 and whole.validated_rows is None
        texts = [row["text"] for r in whole.warnings for row in r.sample_rows]
        assert texts and all(isinstance(t, str) for t in texts)  # read back from the table for the samples
    assert whole_df.columns == ["id", "text", "label", "split", "note"]
    # train and val first, then test and unsup, each in the table's order
    first = whole_df["split"].is_in(["train", "val"])
    assert first.head(int(first.sum())).all()
    for part in (whole_df.filter(first), whole_df.filter(~first)):
        assert part["id"].cast(pl.Int64).is_sorted()


def test_the_table_adapters_scan_of_a_file_under_data_raw_gives_the_same_table(tmp_path, monkeypatch):
    """What the docs show: a CSV under data/raw/, in a folder whose name has a space, no split column."""
    monkeypatch.chdir(tmp_path)
    path = Path("my data/data/raw/reviews.csv")
    path.parent.mkdir(parents=True)
    df = table().filter(pl.col("split") != "unsup").drop("split")
    df.write_csv(path)
    adapter = TableAdapter(str(path), labels=list(LABELS), test_fraction=0.25)
    lazy = check_frame(adapter.load(tmp_path), "reviews.csv")
    assert isinstance(lazy, pl.LazyFrame)
    _, from_scan, report = report_of(lazy, 50, adapter)
    _, in_memory, _ = report_of(lazy.collect(), 100_000, adapter)
    assert report.success and from_scan.equals(in_memory) and from_scan.height == df.height
    assert from_scan["id"][0].startswith("reviews.csv:")


def test_a_file_that_breaks_part_way_names_the_dataset(tmp_path):
    path = tmp_path / "reviews.parquet"
    table().write_parquet(path)
    source = Source(pl.scan_parquet(path).with_columns(pl.col("text").str.to_integer()), "reviews.parquet")
    with pytest.raises(AdapterError, match="dataset 'reviews.parquet': reading its rows failed"):
        list(source.batches())


def test_rebatch_makes_row_groups_of_one_size():
    frames = [pl.DataFrame({"a": list(range(s, s + n))}) for s, n in ((0, 3), (3, 0), (3, 9), (12, 1))]
    out = list(rebatch(frames, 4))
    assert [f.height for f in out] == [4, 4, 4, 1]
    assert pl.concat(out)["a"].to_list() == list(range(13))


def test_reweigh_validate_reads_a_large_file_as_the_stage_does_and_reports_the_same(tmp_path, monkeypatch):
    """`reweigh validate` (adapters/inspection.py) over dataset.validate_rows: GX on a sample, the same report."""
    from adapters.inspection import docs_rows, load_and_validate

    monkeypatch.chdir(tmp_path)
    path = Path("my data/data/raw/reviews.csv")
    path.parent.mkdir(parents=True)
    spoiled().with_columns(pl.col("text").fill_null("")).write_csv(path)  # a CSV has no null text: the blanks stay
    options = {"path": str(path), "split_column": "split", "labels": list(LABELS)}
    hygiene = Hygiene(min_class_rows=5)
    _, source, whole = load_and_validate("table", options, tmp_path, hygiene, validate_rows=100_000, seed=3)
    _, sampled_source, sampled = load_and_validate("table", options, tmp_path, hygiene, validate_rows=50, seed=3)
    assert not whole.success and whole.validated_rows is None and 50 < sampled.validated_rows < 200
    assert as_dicts(sampled) == as_dicts(whole)
    assert {f"{r.expectation}:{r.column}": r.unexpected_count for r in sampled.failures}["expect_column_values_to_be_in_set:label"] == 13
    assert docs_rows(source, whole.rows, 100_000, 3).height == 1_200  # Data Docs: the whole table, or a sample
    shown = docs_rows(sampled_source, sampled.rows, 50, 3)
    assert shown.height == 50 and shown["_row"].is_sorted() and shown["_row"].n_unique() == 50


def test_rows_read_back_by_position_hold_their_own_strings_not_the_table():
    """A few rows from each batch must not keep every batch alive (`Source.rows` copies their strings)."""
    from reweigh.io import ROW_GROUP

    texts = [f"review {i} " + "x" * 200 for i in range(3 * ROW_GROUP)]
    source = Source(pl.DataFrame({"text": texts, "label": "pos", "split": "train"}), "three batches")
    at = [5, ROW_GROUP + 7, 2 * ROW_GROUP + 9]
    rows = source.rows(at)
    assert rows["_row"].to_list() == at
    assert rows["text"].to_list() == [texts[i] for i in at]
    held = rows["text"].to_arrow(compat_level=pl.CompatLevel.newest()).buffers()[2:]  # the string data behind the views
    assert sum(b.size for b in held if b is not None) < 10 * sum(len(t) for t in rows["text"])


@pytest.mark.parametrize("split_column", [None, "split"])
def test_the_table_adapter_reads_a_parquet_file_by_pyarrow_as_its_scan_reads_it(tmp_path, monkeypatch, split_column):
    """A Parquet file is read by pyarrow, a row group at a time, for what the stage reads batch by batch (polars' scan
    reads ahead of a slow consumer): the same rows, ids, splits and merged labels as the scan, over several batches."""
    from adapters.source import source_of
    from reweigh.io import ROW_GROUP

    monkeypatch.chdir(tmp_path)
    path = Path("my data/data/raw/reviews.parquet")
    path.parent.mkdir(parents=True)
    df = table(2 * ROW_GROUP + 700).filter(pl.col("split") != "unsup")
    df = df.with_columns(stars=pl.col("label").replace_strict({"neg": 1, "pos": 5, "mixed": 3}, return_dtype=pl.Int64)).drop("label")
    (df if split_column else df.drop("split")).write_parquet(path, row_group_size=7_000)
    adapter = TableAdapter(str(path), label_column="stars", split_column=split_column, test_fraction=0.25)
    assert (adapter.batch_reader() is None) == (split_column is None)  # before load(): no test rows drawn yet
    source = source_of(adapter, check_frame(adapter.load(tmp_path), "reviews.parquet"))
    scanned = Source(source.table, "reviews.parquet")
    assert source.reader is not None and scanned.reader is None
    for mapping in ({}, {"5": "five"}):
        source.relabel(mapping)
        scanned.relabel(mapping)
        batches = list(source.batches())
        assert len(batches) > 1 and max(b.height for b in batches) <= ROW_GROUP
        assert pl.concat(batches).equals(scanned.collect())
    assert pl.concat(batches)["id"][-1] == f"reviews.parquet:{df.height - 1}"

    csv = Path("my data/data/raw/reviews.csv")
    df.write_csv(csv)
    assert TableAdapter(str(csv), label_column="stars", split_column="split").batch_reader() is None


def test_read_ahead_keeps_the_order_fetches_one_item_ahead_and_passes_errors_on():
    from adapters.source import read_ahead

    pulled = []

    def items():
        for i in range(5):
            pulled.append(i)
            yield i
        raise ValueError("row 5 cannot be parsed")

    seen = []
    with pytest.raises(ValueError, match="row 5"):
        for item in read_ahead(items()):
            seen.append(item)
            assert len(pulled) <= item + 2  # this one, and at most the next
    assert seen == [0, 1, 2, 3, 4]
