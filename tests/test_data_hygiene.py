"""Data hygiene (adapters/hygiene.py, flows/ingest.prepare): texts shared between splits after the clean steps,
label spellings, small classes, empty tables, and the dedupe modes. Every check runs through the real GX
suite; each fires on a crafted table and stays quiet on a clean one."""
from __future__ import annotations

import polars as pl
import pytest

from adapters.base import AdapterError, check_frame
from adapters.hygiene import KEY, Hygiene, check, dedupe, label_groups, with_text_keys
from adapters.inspection import load_and_validate
from adapters.table import TableAdapter
from flows.ingest import prepare
from reweigh.params import DatasetParams


class Toy:
    name = "toy"
    labels = ("neg", "pos")


def frame(rows: list[tuple[str, str | None, str]]) -> pl.DataFrame:
    """(text, label, split) rows, with ids."""
    df = pl.DataFrame(rows, schema={"text": pl.String, "label": pl.String, "split": pl.String}, orient="row")
    return df.with_row_index("id").with_columns(pl.col("id").cast(pl.String))


def clean_rows(per: int = 12, splits=("train", "val", "test")) -> list[tuple[str, str, str]]:
    """`per` rows per split and label, every text distinct."""
    return [(f"{split} {label} review number {i}", label, split) for split in splits for label in Toy.labels for i in range(per)]


def warned(results) -> dict[str, object]:
    return {f"{r.column}|{r.condition}": r for r in results if not r.success}


def test_params_default_to_warnings_only_and_refuse_unknown_modes():
    params = DatasetParams()
    assert (params.dedupe, params.normalize_labels, params.min_class_rows) == ("none", False, 10)
    with pytest.raises(ValueError, match="dedupe"):
        DatasetParams(dedupe="drop")
    with pytest.raises(ValueError, match="min_class_rows"):
        DatasetParams(min_class_rows=-1)


# ---- texts shared between splits ----------------------------------------------------------------

def test_a_clean_table_raises_no_hygiene_warning():
    results = check(frame(clean_rows()), Toy(), Hygiene())
    assert warned(results) == {}
    assert len(results) == 1 + 3 + 1 + 2  # spellings, 3 split pairs, class rows, no class missing from val / test


def test_texts_in_two_splits_warn_per_pair_after_the_clean_steps():
    rows = clean_rows()
    rows[0] = ("Great film!<br /><br />Loved it", "pos", "train")  # row 0: train
    rows[30] = ("great film loved it", "pos", "val")  # the same text once cleaned: markup, case, punctuation
    rows[50] = ("GREAT FILM. Loved it.", "pos", "test")
    rows[51] = ("Seen it twice", "neg", "test")
    rows[29] = ("seen it twice", "neg", "val")
    results = warned(check(frame(rows), Toy(), Hygiene()))
    assert set(results) == {'same_text_in_train|split == "test"', 'same_text_in_train|split == "val"',
                            'same_text_in_test|split == "val"'}
    train_test = results['same_text_in_train|split == "test"']
    assert train_test.severity == "warning" and train_test.unexpected_count == 1
    assert train_test.details == {"texts": 1, "train_rows": 1, "test_rows": 1}
    assert train_test.sample_rows == [{"row": 50, "id": "50", "text": "GREAT FILM. Loved it.", "label": "pos",
                                       "split": "test", "same_text_in_train": "0"}]
    assert "dataset.dedupe: drop_overlap" in train_test.explain()
    val_test = results['same_text_in_test|split == "val"']
    assert val_test.details == {"texts": 2, "test_rows": 2, "val_rows": 2}
    assert results['same_text_in_train|split == "val"'].unexpected_count == 1


def test_without_clean_steps_only_identical_texts_count():
    rows = clean_rows()
    rows[50] = ("Great film!<br />", "pos", "test")
    rows[0] = ("great film", "pos", "train")
    assert 'same_text_in_train|split == "test"' in warned(check(frame(rows), Toy(), Hygiene()))
    assert warned(check(frame(rows), Toy(), Hygiene(clean_steps=()))) == {}


# ---- dedupe ---------------------------------------------------------------------------------------

def keyed(rows) -> pl.DataFrame:
    return with_text_keys(frame(rows), None)


def test_dedupe_modes_drop_the_right_rows():
    rows = [("a", "pos", "train"), ("A!", "pos", "train"), ("b", "neg", "train"),
            ("a", "pos", "test"), ("c", "neg", "test"), ("c", "neg", "test"),
            ("b", "neg", "val"), ("c", "neg", "val"), ("d", "pos", "val")]
    df = keyed(rows)
    kept, dropped = dedupe(df, "none")
    assert kept.equals(df) and dropped == {}
    kept, dropped = dedupe(df, "drop_overlap")
    assert kept["id"].to_list() == ["0", "1", "2", "4", "5", "8"]  # the test 'a', val 'b' (in train), val 'c' (in test)
    assert dropped == {"test rows whose text is in train": 1, "val rows whose text is in train": 1, "val rows whose text is in test": 1}
    kept, dropped = dedupe(df, "drop_all")
    assert kept["id"].to_list() == ["0", "2", "4", "8"]  # also 'A!' (a repeat of 'a' within train), the second test 'c'
    assert dropped["later copies within a split"] == 2 and sum(dropped.values()) == 5


def test_unsup_is_never_compared_or_dropped():
    df = keyed([("a", "pos", "train"), ("a", None, "unsup"), ("a", None, "unsup")])
    assert df.filter(pl.col("split") == "unsup")[KEY].null_count() == 2
    assert dedupe(df, "drop_all")[0].height == 3


def repeated_train(copies: int = 2) -> pl.DataFrame:
    """40 train texts, each `copies` times, and 24 distinct test texts: the val carve splits some pairs."""
    rows = [(f"train text {i}", Toy.labels[i % 2], "train") for i in range(40) for _ in range(copies)]
    rows += [(f"test text {i}", Toy.labels[i % 2], "test") for i in range(24)]
    rows.append(("train text 0", "neg", "test"))  # also in train
    return frame(rows)


def shared(df: pl.DataFrame, a: str, b: str) -> int:
    texts = set(df.filter(pl.col("split") == a)["text"])
    return df.filter((pl.col("split") == b) & pl.col("text").is_in(texts)).height


@pytest.mark.parametrize("mode", ["none", "drop_overlap", "drop_all"])
def test_ingest_dedupes_around_the_validation_carve(mode):
    """Repeats within train land on both sides of the val carve: none warns, drop_overlap drops the val copy
    after the carve, drop_all drops the repeat before it, so val is carved from distinct texts."""
    params = DatasetParams(name="toy", val_fraction=0.25, dedupe=mode, min_class_rows=1)
    adapter, df, report = prepare(Toy(), repeated_train(), params, seed=0, hygiene=Hygiene(dedupe=mode, min_class_rows=1))
    assert report.success, report.message()
    dropped = report.to_dict()["changes"]["dedupe"]["dropped"]
    pairs = {(a, b): shared(df, a, b) for a, b in (("train", "test"), ("train", "val"), ("test", "val"))}
    warnings = {r.condition: r for r in report.warnings if r.column == "same_text_in_train"}
    if mode == "none":
        assert dropped == {} and pairs[("train", "test")] == 1 and pairs[("train", "val")] > 0
        assert warnings['split == "val"'].unexpected_count == pairs[("train", "val")]
        assert warnings['split == "test"'].unexpected_count == 1
    else:
        assert pairs == {("train", "test"): 0, ("train", "val"): 0, ("test", "val"): 0} and warnings == {}
        assert dropped["test rows whose text is in train"] == 1
        assert df.height == repeated_train().height - sum(dropped.values())
    if mode == "drop_overlap":
        assert dropped["val rows whose text is in train"] > 0  # pairs the carve split apart
        assert df.filter(pl.col("split") == "train")["text"].is_duplicated().any()  # repeats within train stay
    if mode == "drop_all":
        assert dropped == {"later copies within a split": 40, "test rows whose text is in train": 1}
        assert not df.filter(pl.col("split") != "unsup")["text"].is_duplicated().any()
    assert KEY not in df.columns and df.columns[:4] == ["id", "text", "label", "split"]


# ---- label spellings ------------------------------------------------------------------------------

SPELLED = [("pos", 14), ("Pos", 2), ("pos ", 1), ("neg", 16)]


def spelled_rows() -> list[tuple[str, str, str]]:
    labels = [label for label, n in SPELLED for _ in range(n)]
    return [(f"review {i}", label, "train" if i % 3 else "test") for i, label in enumerate(labels)]


def test_label_groups_merge_into_the_declared_else_the_most_frequent_spelling():
    labels = pl.Series(["Pos"] * 3 + ["pos "] + ["NEG"] * 2 + [" neg"] * 5)
    assert label_groups(labels) == {"Pos": {"Pos": 3, "pos ": 1}, "neg": {" neg": 5, "NEG": 2}}
    assert label_groups(labels, ("neg", "pos")) == {"pos": {"Pos": 3, "pos ": 1}, "neg": {" neg": 5, "NEG": 2}}


def test_label_spellings_warn_with_the_groups():
    results = warned(check(frame(spelled_rows()), Toy(), Hygiene(min_class_rows=0)))
    assert list(results) == ["label_variant_of|None"]
    variants = results["label_variant_of|None"]
    assert variants.unexpected_count == 3 and variants.severity == "warning"
    assert variants.details == {"pos": {"pos": 14, "Pos": 2, "pos ": 1}}
    assert {row["label"] for row in variants.sample_rows} == {"Pos", "pos "}
    assert "dataset.normalize_labels: true" in variants.explain()
    assert warned(check(frame(clean_rows()), Toy(), Hygiene())) == {}


def write_csv(path, rows) -> str:
    pl.DataFrame(rows, schema={"text": pl.String, "label": pl.String, "split": pl.String}, orient="row").write_csv(path)
    return str(path)


def test_table_adapter_infers_the_merged_labels_with_normalize_labels(tmp_path):
    options = {"path": write_csv(tmp_path / "spelled.csv", spelled_rows()), "split_column": "split"}
    _, _, plain = load_and_validate("table", options, tmp_path, Hygiene(min_class_rows=0))
    assert plain.labels == ("Pos", "neg", "pos", "pos ") and plain.success  # inferred: every spelling a class
    assert [r.column for r in plain.warnings] == ["label_variant_of"]
    adapter, source, merged = load_and_validate("table", options, tmp_path, Hygiene(normalize_labels=True, min_class_rows=0))
    assert merged.labels == ("neg", "pos") and adapter.labels == ("neg", "pos")
    assert merged.success and merged.warnings == [], merged.message()
    assert merged.changes["labels_merged"] == {"Pos": "pos", "pos ": "pos"}
    assert sorted(source.collect()["label"].unique()) == ["neg", "pos"]  # read back with the labels merged


def test_declared_labels_pass_once_spellings_are_merged():
    raw = frame(spelled_rows())
    params = DatasetParams(name="toy", min_class_rows=0)
    _, df, report = prepare(Toy(), raw, params, seed=0, hygiene=Hygiene(min_class_rows=0))
    assert df is None and not report.success
    assert "dataset.normalize_labels: true" in report.message()  # the in-set failure says how to merge
    adapter, df, report = prepare(Toy(), raw, params, seed=0, hygiene=Hygiene(normalize_labels=True, min_class_rows=0))
    assert report.success and adapter.labels == ("neg", "pos") and adapter.name == "toy"
    assert set(df["label"]) == {"neg", "pos"} and report.to_dict()["changes"]["labels_merged"] == {"Pos": "pos", "pos ": "pos"}


# ---- small classes ---------------------------------------------------------------------------------

def test_classes_under_min_class_rows_warn_naming_class_split_and_count():
    rows = [r for r in clean_rows() if not (r[2] == "test" and r[1] == "pos" and int(r[0].split()[-1]) >= 3)]
    results = warned(check(frame(rows), Toy(), Hygiene()))
    assert list(results) == ['class_rows|split != "unsup"']
    small = results['class_rows|split != "unsup"']
    assert small.details == [{"split": "test", "label": "pos", "rows": 3}] and small.unexpected_count == 3
    assert "fewer than 10 rows" in small.describe()
    assert warned(check(frame(rows), Toy(), Hygiene(min_class_rows=3))) == {}


def test_a_class_absent_from_test_warns():
    rows = [r for r in clean_rows() if not (r[2] == "test" and r[1] == "pos")]
    results = warned(check(frame(rows), Toy(), Hygiene()))
    absent = results['label|split == "test"']
    assert absent.details == [{"split": "test", "label": "pos", "rows": 0}]
    assert "missing ['pos']" in absent.describe()


# ---- empty tables -----------------------------------------------------------------------------------

@pytest.mark.parametrize("content", ["", "text,label\n"], ids=["empty-file", "header-only"])
def test_an_empty_csv_says_the_file_has_no_rows(tmp_path, content):
    path = tmp_path / "reviews.csv"
    path.write_text(content)
    with pytest.raises(AdapterError, match=r"dataset 'reviews.csv': .*reviews.csv: the file has no rows") as info:
        TableAdapter(str(path))
    assert "labels" not in str(info.value)  # not the label inference's complaint
    with pytest.raises(AdapterError, match="the file has no rows"):
        TableAdapter(str(path), labels=["neg", "pos"]).load(tmp_path)


def test_a_code_adapter_returning_no_rows_says_so():
    empty = pl.DataFrame(schema={"text": pl.String, "label": pl.String, "split": pl.String})
    with pytest.raises(AdapterError, match=r"dataset 'toy': load\(\) returned a table with no rows"):
        check_frame(empty, "toy")


# ---- end to end: the ingest stage records and logs it -------------------------------------------------

@pytest.mark.slow
def test_ingest_stage_records_dropped_rows_merged_labels_and_warnings(tmp_path):
    import json

    from conftest import make_project

    project = make_project(tmp_path)
    rows = [(f"{split} review {i} of {label}", label, split) for split, n in (("train", 40), ("test", 16))
            for label in ("neg", "pos") for i in range(n)]
    rows += [("A <i>great</i> film!<br />", "Pos ", "train"), ("a great film", "pos", "test")]
    (project.path / "raw").mkdir()
    write_csv(project.path / "raw" / "reviews.csv", rows)
    dataset = {"name": "table", "options": {"path": "raw/reviews.csv", "split_column": "split"},
               "dedupe": "drop_all", "normalize_labels": True, "val_fraction": 0.25}
    project.replace_section("dataset", dataset)

    result = project.run("python", "-m", "flows.ingest", timeout=300)
    record = json.loads((project.path / "reports" / "validation.json").read_text())
    assert record["success"] and record["labels"] == ["neg", "pos"]
    assert record["changes"] == {"labels_merged": {"Pos ": "pos"},
                                 "dedupe": {"mode": "drop_all", "dropped": {"test rows whose text is in train": 1}}}
    checks = {r["check"] for r in record["results"] if r["check"]}
    assert "texts in both train and test (after clean.steps)" in checks
    assert all(r["success"] for r in record["results"]), [r for r in record["results"] if not r["success"]]
    assert "dedupe drop_all dropped 1 row(s)" in result.stderr + result.stdout
    ingested = pl.read_parquet(project.path / "data" / "ingested.parquet")
    assert "a great film" not in ingested["text"].to_list() and set(ingested["label"]) == {"neg", "pos"}

    project.set_params({"dataset": {"dedupe": "none", "normalize_labels": False}})
    result = project.run("python", "-m", "flows.ingest", timeout=300)
    log = result.stderr + result.stdout
    assert "texts in both train and test (after clean.steps)" in log and "what to change: set dataset.dedupe" in log
    assert "labels that differ only by case or surrounding whitespace" in log
    record = json.loads((project.path / "reports" / "validation.json").read_text())
    assert record["success"] and record["labels"] == ["Pos ", "neg", "pos"]  # 'Pos ' a class of its own: 1 row
    warned = {(r["check"], r["condition"]) for r in record["results"] if not r["success"]}
    assert warned == {("labels that differ only by case or surrounding whitespace", None),
                      ("texts in both train and test (after clean.steps)", 'split == "test"'),
                      ("classes with fewer than 10 rows in a split", 'split != "unsup"'),
                      ("classes with fewer than 10 rows in a split", 'split == "val"'),
                      ("classes with fewer than 10 rows in a split", 'split == "test"')}
