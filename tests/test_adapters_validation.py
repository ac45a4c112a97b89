"""What an adapter returns is checked twice: its shape (check_frame), then its values (the GX suite).

Each broken table below is a mistake a user makes; the failure must name what is wrong and what to change.
"""
from __future__ import annotations

import pandas as pd
import polars as pl
import pytest

from adapters.base import AdapterError, check_adapter, check_frame, fix_for, title_of
from adapters.expectations import build_expectations, validate
from adapters.inspection import explain


class Adapter:
    name = "toy"
    labels = ("neg", "pos")


def table(n: int = 8, **columns) -> pl.DataFrame:
    base = {
        "text": [f"document number {i}" for i in range(n)],
        "label": ["neg", "pos"] * (n // 2),
        "split": ["train", "train", "test", "test"] * (n // 4),
    }
    base.update(columns)
    return pl.DataFrame(base, schema={k: pl.String for k in base})


# ---- the protocol ---------------------------------------------------------------------------------

def test_check_adapter_lists_every_missing_piece():
    class Empty:
        pass

    with pytest.raises(AdapterError) as err:
        check_adapter(Empty(), "'empty' (tests:Empty)")
    message = str(err.value)
    assert "adapter 'empty' (tests:Empty) does not implement the adapter protocol" in message
    assert "set a class attribute `name: str`" in message
    assert "set `labels` to a tuple of at least two class names" in message
    assert "implement `load(self, cache_dir: Path) -> polars.DataFrame`" in message


def test_check_adapter_accepts_a_complete_adapter():
    class Complete(Adapter):
        def load(self, cache_dir):
            return table()

    check_adapter(Complete(), "complete")


# ---- the shape: check_frame ------------------------------------------------------------------------

def test_pandas_frame_is_refused_with_the_conversion():
    with pytest.raises(AdapterError, match=r"load\(\) returned DataFrame; return a polars.DataFrame \(pl.from_pandas"):
        check_frame(pd.DataFrame({"text": ["a"], "label": ["neg"], "split": ["train"]}), "toy")


def test_wrong_column_names_say_which_and_how_to_rename():
    df = pl.DataFrame({"review": ["a"], "sentiment": ["neg"], "split": ["train"]})
    with pytest.raises(AdapterError) as err:
        check_frame(df, "toy")
    assert "missing ['text', 'label']" in str(err.value)
    assert "Rename your columns to text, label, split" in str(err.value)


def test_numeric_labels_are_refused_with_the_cast():
    df = pl.DataFrame({"text": ["a", "b"], "label": [0, 1], "split": ["train", "test"]})
    with pytest.raises(AdapterError) as err:
        check_frame(df, "toy")
    assert "columns must be strings, got {'label': 'Int64'}" in str(err.value)
    assert "pl.col('label').cast(pl.String)" in str(err.value)


def test_all_null_columns_pass_the_shape_check_as_strings():
    df = pl.DataFrame({"text": ["a"], "label": [None], "split": ["unsup"]})
    assert check_frame(df, "toy").schema["label"] == pl.String


# ---- the values: the GX suite ----------------------------------------------------------------------

def test_a_good_table_passes_every_expectation():
    report = validate(table(), Adapter())
    assert report.success, report.message()
    assert len(report.results) == len(build_expectations(Adapter()))
    assert report.counts == {"test": {"neg": 2, "pos": 2}, "train": {"neg": 2, "pos": 2}}


BROKEN = {
    "null text": (
        {"text": [None] + [f"doc {i}" for i in range(1, 8)]},
        "expect_column_values_to_not_be_null on text: 1 row(s)",
    ),
    "blank text": (
        {"text": ["   "] + [f"doc {i}" for i in range(1, 8)]},
        "expect_column_values_to_not_match_regex on text: 1 row(s)",
    ),
    "undeclared label": (
        {"label": ["neg", "pos", "neutral", "pos", "neg", "pos", "neg", "neutral"]},
        "expect_column_values_to_be_in_set on label: 2 row(s)",
    ),
    "unknown split": (
        {"split": ["train", "train", "test", "test", "valid", "valid", "test", "train"]},
        "expect_column_values_to_be_in_set on split: 2 row(s)",
    ),
    "no test split": (
        {"split": ["train"] * 8},
        "expect_column_distinct_values_to_contain_set on split",
    ),
    "a label missing from train": (
        {"label": ["neg", "neg", "pos", "pos", "neg", "neg", "pos", "pos"]},
        'expect_column_distinct_values_to_contain_set on label where split == "train"',
    ),
    "null label outside unsup": (
        {"label": ["neg", "pos", None, "pos", "neg", "pos", "neg", "pos"]},
        'expect_column_values_to_not_be_null on label where split != "unsup": 1 row(s)',
    ),
    "label in unsup": (
        {"split": ["train", "train", "test", "test", "unsup", "unsup", "test", "train"]},
        'expect_column_values_to_be_null on label where split == "unsup": 2 row(s)',
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_table_fails_naming_the_expectation(case):
    columns, expected = BROKEN[case]
    report = validate(table(**columns), Adapter())
    assert not report.success
    message = report.message()
    assert "dataset 'toy'" in message and "failed validation" in message
    assert expected in message, message
    assert "what to change:" in explain(report), "each failure of the shared suite has a hint on what to change"


def test_every_critical_expectation_of_the_shared_suite_has_a_fix():
    class Bounded(Adapter):
        row_count = (1, 10)

    critical = [e for e in build_expectations(Bounded()) if str(getattr(e.severity, "value", e.severity)) == "critical"]
    missing = [(e.expectation_type, getattr(e, "column", None)) for e in critical if not fix_for(e.expectation_type, getattr(e, "column", None))]
    assert missing == []


def test_failure_shows_sample_rows_of_the_bad_values():
    report = validate(table(label=["neg", "pos", "neutral", "pos", "neg", "pos", "neg", "pos"]), Adapter())
    (failure,) = report.failures
    assert failure.sample_rows == [{"row": 2, "text": "document number 2", "label": "neutral", "split": "test"}]
    assert "declare every class in the adapter's `labels`" in explain(report)


def test_an_empty_table_fails():
    report = validate(pl.DataFrame(schema={"text": pl.String, "label": pl.String, "split": pl.String}), Adapter())
    assert not report.success
    assert "expect_column_distinct_values_to_contain_set on split" in report.message()


def test_adapter_expectations_join_the_suite():
    import great_expectations as gx

    class Strict(Adapter):
        row_count = (1, 4)
        max_text_chars = 10

        def expectations(self):
            return [gx.expectations.ExpectColumnValuesToMatchRegex(column="text", regex=r"^doc")]

    report = validate(table(text=[f"doc {i}" for i in range(7)] + ["far too long a text"]), Strict())
    failed = {r.expectation for r in report.failures}
    assert failed == {"expect_table_row_count_to_be_between", "expect_column_value_lengths_to_be_between",
                      "expect_column_values_to_match_regex"}, report.message()


# ---- the dataset's title: what every message, dataset.json and the report call the dataset ----------

class Titled(Adapter):
    title = "reviews-2024.csv"


def test_title_falls_back_to_the_adapters_name():
    class Blank(Adapter):
        title = ""

    assert (title_of(Adapter()), title_of(Titled()), title_of(Blank())) == ("toy", "reviews-2024.csv", "toy")


def test_validation_and_shape_messages_name_the_title_not_the_adapter():
    report = validate(table(label=["neg", "pos", "neutral", "pos", "neg", "pos", "neg", "pos"]), Titled())
    message = report.message()
    assert message.startswith("dataset 'reviews-2024.csv' failed validation (1 of 12 expectations):"), message
    assert "toy" not in message
    record = report.to_dict()
    assert (record["dataset"], record["adapter"]) == ("reviews-2024.csv", "toy")
    with pytest.raises(AdapterError, match=r"^dataset 'reviews-2024.csv': load\(\) returned DataFrame"):
        check_frame(pd.DataFrame({"text": ["a"], "label": ["neg"], "split": ["train"]}), title_of(Titled()))


def test_a_table_is_named_by_its_title_in_validate_ingest_logs_and_dataset_json(tmp_path, monkeypatch):
    """The table adapter's `title` option (else the file name) in `reweigh validate`'s output, the ingest
    stage's log lines (hygiene warnings included) and data/dataset.json; 'table' names only the adapter."""
    from rich.console import Console

    import flows.ingest as ingest
    from adapters.hygiene import Hygiene
    from adapters.inspection import load_and_validate, print_report
    from reweigh.params import DatasetParams

    rows = [(f"review {i} of {label}", label, split) for split in ("train", "test") for label in ("neg", "pos") for i in range(6)]
    rows.append(("review 0 of neg", "neg", "test"))  # also in train: a hygiene warning
    path = tmp_path / "reviews.csv"
    pl.DataFrame(rows, schema=["text", "label", "split"], orient="row").write_csv(path)

    for options, title in (({}, "reviews.csv"), ({"title": "my-reviews"}, "my-reviews")):
        options = {"path": str(path), "split_column": "split", **options}
        adapter, source, report = load_and_validate("table", options, tmp_path, Hygiene())
        console = Console(record=True, width=200)
        print_report(report, console)
        out = console.export_text()
        assert f"dataset '{title}': 25 rows, labels neg, pos" in out and f"dataset '{title}' passed" in out, out
        assert "'table'" not in out

        dataset = DatasetParams(name="table", options=options)
        logged: list[str] = []
        log = type("Log", (), {"info": lambda self, m, *a: logged.append(m % a), "warning": lambda self, m, *a: logged.append(m % a)})()
        monkeypatch.setattr(ingest, "VALIDATION", tmp_path / "validation.json")
        adapter, ingested, report = ingest.prepare(adapter, source.collect().drop("_row"), dataset, 0, Hygiene.from_params(dataset))
        ingest._record(report, log)
        assert any("texts in both train and test" in line for line in logged), logged  # a hygiene warning
        assert logged and all(line.startswith(f"dataset '{title}': ") for line in logged), logged
        counts = ingested.group_by("split").len().sort("split")
        info = ingest.dataset_info(adapter, counts)
        assert (info["name"], info["title"], info["labels"]) == ("table", title, ["neg", "pos"])
        assert ingest._summary(report.to_dict(), counts).startswith(f"# Dataset `{title}`")

