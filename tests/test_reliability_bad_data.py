"""Bad datasets end in a clear error naming the dataset, the check and sample rows; no output is overwritten.

Errors (stop the run): null or blank text, a text over `max_text_chars` (100,000 by default), an unknown
label, a missing train or test split, a label absent from train, non-UTF-8 bytes, a file that is not what
its extension says, ragged CSV rows. Warnings (recorded in reports/validation.json, logged, run goes on):
duplicate texts, texts over 20,000 characters. Most cases run the adapter and the GX suite in process;
one end-to-end case shows the exit code and the untouched outputs of `python -m flows.ingest` and `dvc repro`.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import polars as pl
import pytest
import yaml

from adapters.base import AdapterError, check_adapter, check_frame, collect, title_of
from adapters.expectations import LONG_TEXT_WARN, validate
from adapters.registry import get_adapter
from adapters.table import TableAdapter
from conftest import make_project, review

LABELS = ("neg", "pos")


def rows(n: int = 20, seed: int = 0) -> list[dict]:
    """n labelled rows per split and label: a valid table to spoil one way at a time."""
    rng = random.Random(seed)
    return [
        {"text": review(rng, label), "label": label, "split": split}
        for split in ("train", "test") for label in LABELS for _ in range(n)
    ]


def load_and_validate(tmp_path: Path, table: list[dict] | pl.DataFrame, suffix: str = ".parquet", **options):
    path = tmp_path / f"reviews{suffix}"
    df = table if isinstance(table, pl.DataFrame) else pl.DataFrame(table, schema={"text": pl.String, "label": pl.String, "split": pl.String})
    {".parquet": df.write_parquet, ".csv": df.write_csv, ".jsonl": df.write_ndjson}[suffix](path)
    adapter = TableAdapter(str(path), labels=list(LABELS), split_column="split", **options)
    return validate(collect(check_frame(adapter.load(tmp_path), adapter.name), adapter.name), adapter)


def failed(report) -> dict[str, object]:
    return {f"{r.expectation}:{r.column}:{r.condition}": r for r in report.failures}


def spoil(table: list[dict], index: int, **changes) -> list[dict]:
    table[index] = {**table[index], **changes}
    return table


@pytest.mark.parametrize(
    ("table", "check", "sample"),
    [
        (spoil(rows(), 3, text=None), "expect_column_values_to_not_be_null:text:None", {"text": None}),
        (spoil(rows(), 5, text="   \n "), "expect_column_values_to_not_match_regex:text:None", {"text": "   \n "}),
        (spoil(rows(), 7, text=""), "expect_column_values_to_not_match_regex:text:None", {"text": ""}),
        (spoil(rows(), 9, label="neutral"), "expect_column_values_to_be_in_set:label:None", {"label": "neutral"}),
        (spoil(rows(), 11, label=None), 'expect_column_values_to_not_be_null:label:split != "unsup"', {"label": None}),
        (spoil(rows(), 13, text="x" * (5 << 20)), "expect_column_value_lengths_to_be_between:text:None", {"split": "train"}),
        (spoil(rows(), 15, split="validation"), "expect_column_values_to_be_in_set:split:None", {"split": "validation"}),
    ],
    ids=["null-text", "blank-text", "empty-text", "unknown-label", "null-label", "5MB-review", "unknown-split"],
)
def test_bad_rows_fail_with_the_check_and_sample_rows(tmp_path, table, check, sample):
    report = load_and_validate(tmp_path, table)
    assert not report.success
    assert check in failed(report), f"{check} not in {list(failed(report))}"
    result = failed(report)[check]
    assert result.unexpected_count == 1
    assert result.sample_rows and all(result.sample_rows[0][k] == v for k, v in sample.items()), result.sample_rows
    message = report.message()
    assert message.startswith("dataset 'reviews.parquet' failed validation")  # the file's name, not the adapter's
    assert "'table'" not in message
    assert check.split(":")[0] in message and "reviews.parquet:" in message  # the sample row's id names the file


def test_missing_split_fails(tmp_path):
    report = load_and_validate(tmp_path, [r for r in rows() if r["split"] == "train"])
    assert "expect_column_distinct_values_to_contain_set:split:None" in failed(report)
    assert "(observed missing ['test'] of ['train', 'test'])" in report.message()


def test_label_absent_from_train_fails(tmp_path):
    table = [r for r in rows() if not (r["split"] == "train" and r["label"] == "pos")]
    report = load_and_validate(tmp_path, table)
    assert list(failed(report)) == ['expect_column_distinct_values_to_contain_set:label:split == "train"']
    assert "where split == \"train\" (observed missing ['pos'] of ['neg', 'pos'])" in report.message()


def test_duplicates_and_long_texts_are_warnings(tmp_path):
    table = rows()
    table[1] = {**table[1], "text": table[0]["text"]}
    table[2] = {**table[2], "text": "long " * (LONG_TEXT_WARN // 4)}
    report = load_and_validate(tmp_path, table)
    assert report.success, report.message()
    warned = {(w.expectation, w.column) for w in report.warnings}
    assert warned == {("expect_column_values_to_be_unique", "text"), ("expect_column_value_lengths_to_be_between", "text")}
    assert report.to_dict()["warnings"] == 2


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("reviews.csv", b"text,label\ngood film,pos\ncaf\xe9 au lait,neg\n", r"1 line\(s\) are not valid UTF-8.*line 3: b'caf\\xe9"),
        ("reviews.jsonl", b'{"text": "good", "label": "pos"}\n{"text": "caf\xe9", "label": "neg"}\n', r"not valid UTF-8.*line 2"),
        ("reviews.csv", b"text,label\ngood film,pos\nbad, really bad,neg\nok,pos\n", r"do not have the header's 2 fields.*line 3: 3 fields"),
        ("reviews.tsv", b"text\tlabel\ngood film\tpos\nno label here\nok\tneg\n", r"do not have the header's 2 fields.*line 3: 1 fields"),
        ("reviews.parquet", b"text,label\ngood film,pos\n", r"could not be read as parquet"),
        ("reviews.jsonl", b"text,label\ngood film,pos\n", r"could not be read as jsonl"),
        ("reviews.csv", b"PAR1\x00\x15\x04\x15\xa0\x01\x15\x90", r"not valid UTF-8"),
        ("reviews.txt", b"text,label\n", r"cannot tell the format.*set dataset.options.format"),
        ("reviews.csv", b"body,stars\ngood,5\n", r"missing \['text', 'label'\]"),
    ],
    ids=["csv-latin1", "jsonl-latin1", "csv-ragged-long", "tsv-ragged-short", "csv-as-parquet", "csv-as-jsonl",
         "parquet-as-csv", "unknown-extension", "wrong-columns"],
)
def test_unreadable_tables_are_refused_with_the_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AdapterError, match=expected) as info:
        TableAdapter(str(path))
    assert f"dataset '{name}'" in str(info.value)


def test_a_5mb_review_in_a_csv_reaches_validation(tmp_path):
    """The CSV reader takes a 5 MB field; the suite then refuses it (over max_text_chars) and names the row."""
    report = load_and_validate(tmp_path, spoil(rows(2), 1, text="word " * (1 << 20)), suffix=".csv")
    assert list(failed(report)) == ["expect_column_value_lengths_to_be_between:text:None"]
    assert failed(report)["expect_column_value_lengths_to_be_between:text:None"].sample_rows[0]["id"] == "reviews.csv:1"


# ---------------------------------------------------------------- one class: the file's fault, not the protocol's

def test_a_csv_with_one_class_and_empty_labels_says_what_is_wrong_with_the_file(tmp_path):
    """Every labelled row 'ham', the rest empty: the table adapter names the class, counts the unlabelled rows,
    shows their lines (a quoted newline moves the next ones) and says what to change, not the protocol's
    "set `labels`" (code the user did not write)."""
    path = tmp_path / "sms.csv"
    lines = ["label,text,sender"] + [f"ham,see you at {i},{'bob' if i % 2 else 'ann'}" for i in range(6)]
    lines[3:3] = [',"FREE entry\nwin a prize",shop', ",call me now,shop"]  # lines 4-5 (one row) and 6
    lines.append(",text STOP to 8,shop")  # line 11
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AdapterError) as info:
        get_adapter("table", {"path": str(path), "title": "my-sms"})
    message = str(info.value)
    assert message.startswith(f"dataset 'my-sms': {path} has one class: every labelled row of column 'label' is 'ham' "
                              "(6 row(s)), and 3 of its 9 rows have no label"), message
    assert "rows without a label, e.g. line 4: 'FREE entry\\nwin a prize'; line 6: 'call me now'; line 11: 'text STOP to 8'" in message
    assert ("a classifier needs at least two classes: add rows of another class, fill in the empty labels in column "
            "'label', or, if the classes are in another column, set dataset.options.label_column to it "
            "(columns with a few distinct values: 'sender' (3 values))") in message
    assert "protocol" not in message and "TableAdapter" not in message and "tuple" not in message


def test_one_class_in_parquet_or_with_no_label_at_all_names_rows(tmp_path):
    path = tmp_path / "reviews.parquet"
    pl.DataFrame({"text": ["a", "b", "c"], "label": ["pos", None, " "]}).write_parquet(path)
    with pytest.raises(AdapterError, match=r"is 'pos' \(1 row\(s\)\), and 2 of its 3 rows have no label\n  rows without a label, "
                       r"e.g. row 2: 'b'; row 3: 'c'") as info:
        TableAdapter(str(path))
    assert "fill in the empty labels" in str(info.value) and "protocol" not in str(info.value)
    pl.DataFrame({"text": ["a", "b"], "label": [None, None]}, schema={"text": pl.String, "label": pl.String}).write_parquet(path)
    with pytest.raises(AdapterError, match=r"has no class: no row of column 'label' has a label, and 2 of its 2 rows"):
        TableAdapter(str(path))


def test_declared_or_code_adapter_labels_keep_their_messages(tmp_path):
    """Declared labels: the file is checked by the suite (names the missing class); a code adapter with one
    label still gets the protocol's message, which is about its code."""
    path = tmp_path / "sms.csv"
    path.write_text("text,label\n" + "".join(f"msg {i},ham\n" for i in range(8)) + "call me,\n")
    adapter = TableAdapter(str(path), labels=["ham", "spam"])
    report = validate(collect(check_frame(adapter.load(tmp_path), title_of(adapter)), title_of(adapter)), adapter)
    assert "on label where split == \"train\" (observed missing ['spam'] of ['ham', 'spam'])" in report.message()
    assert report.message().startswith("dataset 'sms.csv' failed validation")

    class OneLabel:
        name, labels = "one", ("ham",)

        def load(self, cache_dir):
            return None

    with pytest.raises(AdapterError, match=r"adapter 'one' \(tests:OneLabel\) does not implement the adapter protocol"):
        check_adapter(OneLabel(), "'one' (tests:OneLabel)")


# ---------------------------------------------------------------- end to end: exit code, outputs untouched

def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_bad_dataset_stops_ingest_and_keeps_the_outputs(tmp_path):
    project = make_project(tmp_path)
    raw = project.path / "raw"
    raw.mkdir()
    good, bad = rows(10), spoil(spoil(rows(10), 2, label="meh"), 4, text=" ")
    pl.DataFrame(good).write_csv(raw / "good.csv")
    pl.DataFrame(bad).write_csv(raw / "bad.csv")

    def use(file: str) -> None:
        params_file = project.path / "params.yaml"
        params = yaml.safe_load(params_file.read_text())
        params["dataset"] = {"name": "table", "options": {"path": f"raw/{file}", "labels": list(LABELS), "split_column": "split"}}
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))

    use("good.csv")
    project.dvc("repro", "ingest")
    output = project.path / "data" / "ingested.parquet"
    before, lock = digest(output), (project.path / "dvc.lock").read_text()

    use("bad.csv")
    # The stage command on its own: exit 1, a message naming dataset, checks and sample rows, no traceback.
    result = project.run("python", "-m", "flows.ingest", check=False, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    err = result.stderr
    assert "dataset 'bad.csv' failed validation" in err and "dataset 'table'" not in err, err[-3000:]
    assert "expect_column_values_to_be_in_set on label: 1 row(s)" in err and "'label': 'meh'" in err
    assert "expect_column_values_to_not_match_regex on text: 1 row(s)" in err and "'id': 'bad.csv:4'" in err
    assert "Traceback" not in err
    assert digest(output) == before  # the previous complete output, untouched
    record = json.loads((project.path / "reports" / "validation.json").read_text())
    assert record["success"] is False and record["failed"] == 2
    assert (record["dataset"], record["adapter"], record["source"]) == ("bad.csv", "table", "bad.csv")

    # Through DVC: the stage fails, dvc.lock keeps ingest's good run, the bad data is never written, and the
    # previous output comes back from the cache with `dvc checkout`.
    result = project.dvc("repro", "ingest", check=False, timeout=300)
    assert result.returncode != 0
    assert "failed validation" in result.stderr + result.stdout
    # the `sources` check before it succeeded and records the new file's fingerprint; ingest keeps the good run
    locked = yaml.safe_load((project.path / "dvc.lock").read_text())["stages"]
    assert locked["ingest"] == yaml.safe_load(lock)["stages"]["ingest"]
    assert locked["sources"]["params"]["params.yaml"]["dataset"]["options"]["path"] == "raw/bad.csv"
    assert not output.exists() or digest(output) == before
    project.dvc("checkout", "data/ingested.parquet", check=False)
    assert digest(output) == before
