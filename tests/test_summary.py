"""`reweigh summary`, the end of `make repro`: read from the report, short, and clear when there is none."""
from __future__ import annotations

import pytest

from reweigh.summary import MAX_VERDICT_LINES, summary

REPORT = """# reweigh: model comparison

Dataset `spam`: classes ham, spam; rows per split test 10, train 8, val 2. All scores are on the test split.

## Verdict

**GRU wins**: it beats everything.
{bullets}

## Metrics

| metric | GRU | TF-IDF + LogReg |
|---|---:|---:|
| accuracy | 0.9000 | 0.8000 |
| accuracy, 95% CI | [0.8000, 1.0000] | [0.6000, 0.9000] |
| F1 (macro) | 0.8900 | 0.7900 |
| F1 (macro), 95% CI | [0.7000, 1.0000] | [0.5000, 0.9000] |

### Is the difference real?
"""


def test_summary_has_a_row_per_model_the_verdict_and_where_to_look(tmp_path):
    report = tmp_path / "report.md"
    report.write_text(REPORT.format(bullets="- GRU clears the bar."))
    lines = summary(report).splitlines()
    assert lines[0] == "Dataset spam: classes ham, spam; rows per split test 10, train 8, val 2."
    assert lines[2].split() == ["GRU", "0.9000", "[0.8000,", "1.0000]", "0.8900", "[0.7000,", "1.0000]"]
    assert lines[3].startswith("TF-IDF + LogReg  0.8000 [0.6000, 0.9000]")
    assert "GRU wins: it beats everything." in lines and "- GRU clears the bar." in lines
    assert any(str(report) in line for line in lines)


def test_a_long_verdict_is_cut_to_keep_the_summary_short(tmp_path):
    report = tmp_path / "report.md"
    report.write_text(REPORT.format(bullets="\n".join(f"- pair {i}" for i in range(30))))
    text = summary(report)
    assert len(text.splitlines()) <= 20
    assert f"... {31 - MAX_VERDICT_LINES} more lines in the report's Verdict" in text


def test_no_report_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        summary(tmp_path / "report.md")
