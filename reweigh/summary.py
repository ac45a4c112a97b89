"""What `make repro` prints at its end: each model's test scores with their CIs, the verdict, where to look.

Read from reports/report.md, the report a person opens next, so the summary can never disagree with it
(`dvc metrics show` prints every nested key of metrics.json on one row: right for scripts and diffs, a wall
in a terminal). Plain text, no heavy imports: it runs in a fraction of a second after the pipeline.
"""
from __future__ import annotations

import re
from pathlib import Path

REPORT = Path("reports/report.md")
MAX_VERDICT_LINES = 8


def _section(lines: list[str], heading: str) -> list[str]:
    """The non-empty lines under `## heading`, up to the next heading of any level."""
    out, inside = [], False
    for line in lines:
        if line.startswith("#"):
            if inside:
                break
            inside = line.strip() == f"## {heading}"
        elif inside and line.strip():
            out.append(line.strip())
    return out


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def _metrics_rows(lines: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The Metrics table: its model titles and each row's cells by metric name."""
    table = [line for line in _section(lines, "Metrics") if line.startswith("|")]
    if len(table) < 3:
        raise ValueError(f"{REPORT} has no metrics table under '## Metrics'")
    titles = _cells(table[0])[1:]
    return titles, {cells[0]: cells[1:] for cells in map(_cells, table[2:])}


def _plain(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"\1", text).replace("`", "")


def summary(report: Path = REPORT) -> str:
    if not report.exists():
        raise FileNotFoundError(f"{report} is missing: run the pipeline first (dvc repro)")
    lines = report.read_text().splitlines()
    titles, rows = _metrics_rows(lines)
    out = []
    dataset = next((line for line in lines if line.startswith("Dataset ")), None)
    if dataset:
        out.append(_plain(dataset.split(". ")[0]) + ".")
    width = max(len(t) for t in titles)
    out.append(f"{'model':<{width}}  {'test accuracy, 95% CI':<28}  macro F1, 95% CI")
    for i, title in enumerate(titles):
        acc = f"{rows['accuracy'][i]} {rows['accuracy, 95% CI'][i]}"
        f1 = f"{rows['F1 (macro)'][i]} {rows['F1 (macro), 95% CI'][i]}"
        out.append(f"{title:<{width}}  {acc:<28}  {f1}")
    verdict = [_plain(line) for line in _section(lines, "Verdict")]
    out.append("")
    out += verdict[:MAX_VERDICT_LINES]
    if len(verdict) > MAX_VERDICT_LINES:
        out.append(f"... {len(verdict) - MAX_VERDICT_LINES} more lines in the report's Verdict")
    folder = report.parent
    out += ["",
            f"The report: {report} (any Markdown viewer; its figures are {folder}/figures/*.png).",
            "Every metric: dvc metrics show   Plots as HTML: dvc plots show   A variant: dvc exp run -S key=value"]
    return "\n".join(out)
