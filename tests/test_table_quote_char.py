"""The table adapter's `quote_char`: '"' by default (CSV quoting), null for files whose quotes are plain text.

A stray quote in an unquoted file (SMS exports) must fail naming the line and suggesting quote_char: null,
and the same file must then read exactly, with no code; real quoting must keep working and not be mistaken
for a stray quote.
"""
from __future__ import annotations

import polars as pl
import pytest

from adapters.base import AdapterError
from adapters.hygiene import Hygiene
from adapters.inspection import load_and_validate
from adapters.table import TableAdapter

MESSAGES = [
    ("ham", 'He said "see you at 5'),
    ("spam", "WIN a prize now, text WIN to 80082"),
    ("ham", '"Gud mrng dear, hav a nice day'),
    ("ham", "ok then"),
    ("spam", 'FREE entry: reply "YES" to claim'),
    ("ham", "I'll be there in 5"),
]


def write_sms(path, copies: int = 4) -> None:
    """label<TAB>message lines, no quoting: a quote is part of the message."""
    lines = ["label\ttext"] + [f"{label}\t{text} ({i})" for i in range(copies) for label, text in MESSAGES]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_stray_quotes_fail_by_default_naming_the_line_and_quote_char(tmp_path):
    write_sms(tmp_path / "sms.tsv")
    with pytest.raises(AdapterError) as info:
        TableAdapter(str(tmp_path / "sms.tsv"))
    message = str(info.value)
    assert message.startswith("dataset 'sms.tsv': ")
    assert "lines 4-" in message and "Gud mrng dear" in message  # where the quote opens, and its text
    assert "set dataset.options.quote_char: null" in message


def test_with_quote_char_null_the_messages_read_exactly_with_no_code(tmp_path):
    write_sms(tmp_path / "sms.tsv")
    options = {"path": str(tmp_path / "sms.tsv"), "quote_char": None, "test_fraction": 0.25}
    adapter, source, report = load_and_validate("table", options, tmp_path, Hygiene(min_class_rows=0))
    assert report.success, report.message()
    df = source.collect()
    assert adapter.labels == ("ham", "spam")
    expected = [f"{text} ({i})" for i in range(4) for _, text in MESSAGES]
    assert df["text"].to_list() == expected
    assert df["label"].to_list() == [label for _ in range(4) for label, _ in MESSAGES]


def test_a_quote_that_only_polars_refuses_suggests_quote_char(tmp_path):
    path = tmp_path / "sms.tsv"
    path.write_text('label\ttext\nham\tok\nspam\t"FREE" entry now\n')
    with pytest.raises(AdapterError, match=r"could not be read as tsv: .*set dataset.options.quote_char: null"):
        TableAdapter(str(path))
    assert TableAdapter(str(path), quote_char=None).load(tmp_path).collect()["text"].to_list() == ["ok", '"FREE" entry now']


def test_real_quoting_still_reads_and_is_not_taken_for_a_stray_quote(tmp_path):
    path = tmp_path / "reviews.csv"
    texts = ["Loved it, would buy again", 'She said "wow", twice', "Line one\nline two, with a comma"]
    pl.DataFrame({"text": texts * 2, "label": ["pos", "neg", "pos"] * 2}).write_csv(path)
    assert TableAdapter(str(path)).load(tmp_path).collect()["text"].to_list() == texts * 2
    with pytest.raises(AdapterError, match=r"do not have the header's 2 fields"):
        TableAdapter(str(path), quote_char=None)  # without quoting, the quoted commas split fields


def test_another_quote_char(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n'good, really',pos\nbad,neg\n")
    assert TableAdapter(str(path), quote_char="'").load(tmp_path).collect()["text"].to_list() == ["good, really", "bad"]


@pytest.mark.parametrize("value", ["", "''", 3])
def test_quote_char_must_be_one_character_or_null(tmp_path, value):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\ngood,pos\nbad,neg\n")
    with pytest.raises(AdapterError, match="quote_char must be one character or null"):
        TableAdapter(str(path), quote_char=value)
