"""The table adapter's look at a CSV, TSV or JSON-lines file before polars reads it.

polars says "invalid utf-8 sequence" or "found more fields than defined" without a line, reads a row with
too few fields as nulls, and a stray quote in a file that does not quote its fields (SMS exports: `ham<TAB>"see
you at 5`) makes it join the following lines into one field, or fail far from the cause. So the lines are
read first with Python's csv module, quoting as polars will (`quote_char`), and each problem is reported with
its line numbers and text. A stray quote is told apart from real quoting by reading the file a second time
with quotes as plain characters: when every line then has the header's fields, the quote is the problem.
"""
from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.base import AdapterError

SAMPLES = 5  # problem lines quoted in an error


@dataclass
class Scan:
    header: list[str] = field(default_factory=list)
    rows: int = 0
    bad_utf8: list[str] = field(default_factory=list)
    ragged: list[str] = field(default_factory=list)  # rows whose field count differs from the header's
    joined: list[str] = field(default_factory=list)  # rows that span several lines (a quoted field with newlines)
    odd_quotes: list[str] = field(default_factory=list)  # lines with an odd number of quote characters

    def quote_hint(self, quote_char: str | None) -> str:
        if not (quote_char and self.odd_quotes):
            return ""
        return (f"; {len(self.odd_quotes)} line(s) have an odd number of `{quote_char}`, e.g. {self.odd_quotes[0]}: if the "
                "file does not quote its fields, set dataset.options.quote_char: null")


def check_lines(path: Path, fmt: str, quote_char: str | None, title: str) -> Scan:
    """Scan `path`; raise AdapterError naming the lines when it is not UTF-8, has ragged rows or a stray quote."""
    where = f"dataset '{title}': {path}"
    try:
        scan = scan_lines(path, fmt, quote_char)
        plain = scan_lines(path, fmt, None) if fmt != "jsonl" and quote_char and (scan.ragged or scan.joined) else None
    except (OSError, EOFError, csv.Error) as exc:
        raise AdapterError(f"{where} could not be read as {fmt}: {exc}") from exc
    problems = []
    if scan.bad_utf8:
        problems.append(f"{len(scan.bad_utf8)} line(s) are not valid UTF-8 (re-save the file as UTF-8), e.g. "
                        + "; ".join(scan.bad_utf8[:SAMPLES]))
    if plain is not None and not plain.ragged and plain.header == scan.header:
        problems.append(_stray_quote(scan, quote_char))
    elif scan.ragged:
        problems.append(f"{len(scan.ragged)} row(s) do not have the header's {len(scan.header)} fields {scan.header[:6]} "
                        "(an unquoted separator or a missing value?), e.g. " + "; ".join(scan.ragged[:SAMPLES])
                        + scan.quote_hint(quote_char))
    if problems:
        raise AdapterError(f"{where}: " + "\n  ".join(problems))
    return scan


def _stray_quote(scan: Scan, quote_char: str | None) -> str:
    problems = scan.joined or scan.ragged
    odd = f"; lines with an odd number of `{quote_char}`: " + "; ".join(scan.odd_quotes[:SAMPLES]) if scan.odd_quotes else ""
    return (f"{len(problems)} row(s) are misread because a `{quote_char}` opens a quoted field that does not "
            f"close where the line ends (a stray quote?), e.g. " + "; ".join(problems[:SAMPLES]) + odd
            + f". With `{quote_char}` read as a plain character every line has the header's {len(scan.header)} fields: "
            "set dataset.options.quote_char: null")


def scan_lines(path: Path, fmt: str, quote_char: str | None) -> Scan:
    """Read every line: UTF-8 errors, and for CSV/TSV the field count of each row and rows spanning lines."""
    scan = Scan()
    with open(path, "rb") as fh:
        opener = gzip.open if fh.read(2) == b"\x1f\x8b" else open  # polars reads gzipped text too
    with opener(path, "rb") as fh:
        lines = _decoded(fh, scan, quote_char if fmt != "jsonl" else None)
        if fmt == "jsonl":
            scan.rows = sum(1 for line in lines if line.strip())
            return scan
        limit = csv.field_size_limit()
        csv.field_size_limit(2**31 - 1)  # a long review is the validation's call, not the parser's
        try:
            _fields(csv.reader(lines, **_dialect(fmt, quote_char)), scan)
        finally:
            csv.field_size_limit(limit)
    return scan


def row_lines(path: Path, fmt: str, quote_char: str | None) -> list[int]:
    """The line each data row starts on (1-based), in polars' row order: for CSV/TSV every row after the header
    (a blank line is a row of nulls to polars too), for JSON lines every line that is not blank."""
    with open(path, "rb") as fh:
        opener = gzip.open if fh.read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as fh:
        lines = _decoded(fh, Scan(), None)
        if fmt == "jsonl":
            return [number for number, line in enumerate(lines, 1) if line.strip()]
        limit = csv.field_size_limit()
        csv.field_size_limit(2**31 - 1)
        try:
            reader = csv.reader(lines, **_dialect(fmt, quote_char))
            next(reader, None)
            starts, last = [], reader.line_num
            for _ in reader:
                starts.append(last + 1)
                last = reader.line_num
        finally:
            csv.field_size_limit(limit)
    return starts


def _dialect(fmt: str, quote_char: str | None) -> dict[str, Any]:
    delimiter = "," if fmt == "csv" else "\t"
    return {"delimiter": delimiter, "quotechar": quote_char} if quote_char else {"delimiter": delimiter, "quoting": csv.QUOTE_NONE}


def _decoded(fh: Any, scan: Scan, quote_char: str | None) -> Iterator[str]:
    for number, raw in enumerate(fh, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            scan.bad_utf8.append(f"line {number}: {raw[max(exc.start - 20, 0):exc.start + 20]!r}")
            line = raw.decode("utf-8", errors="replace")
        if quote_char and line.count(quote_char) % 2:
            scan.odd_quotes.append(f"line {number}: {line.rstrip()[:60]!r}")
        yield line


def _fields(reader: Any, scan: Scan) -> None:
    scan.header = next(reader, [])
    last = reader.line_num
    for row in reader:
        if row:
            scan.rows += 1
            fields = [v[:30] for v in row[:4]]
            if len(row) != len(scan.header):
                scan.ragged.append(f"line {reader.line_num}: {len(row)} fields {fields}")
            if reader.line_num - last > 1:
                scan.joined.append(f"lines {last + 1}-{reader.line_num} read as one row {fields}")
        last = reader.line_num
