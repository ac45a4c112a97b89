"""The retrain run's report: one summary line, and the markdown artifact the Prefect UI shows beside the run.

    summary_line       what happened, in one line (the log, the artifact's title line, the run's description)
    report_markdown    decision, the judged sets, drift checks, what changed in the data and the metrics, the run
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from prefect.runtime import flow_run

from adapters.sources import describe
from flows.retrain import versions


def number(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _change(old: Any, new: Any) -> str:
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        return f"{new - old:+.4g}"
    return ""


def summary_line(outcome: str, result: dict[str, Any] | None, drift: dict[str, Any] | None = None) -> str:
    """One line for the log and the artifact's first line."""
    if outcome == "nothing new":
        return "nothing new: the sources are unchanged and every stage is up to date; the champion stays"
    flagged = [c["check"] for c in (drift or {}).get("checks", []) if not c["ok"]]
    drifted = f"; drift: {', '.join(flagged)}" if flagged else ""
    if outcome == "blocked":
        measured = (drift or {}).get("measured", {})
        return (f"blocked: {measured.get('new_rows', 0):,} new rows; drift check(s) {', '.join(drift['blocked'])} stop the "
                f"retrain (retrain.drift.block){drifted}; no challenger trained")
    rows = result["rows"]
    added = sum(after - before for _, _, before, after in rows)
    by_split: dict[str, int] = {}
    for split, _, before, after in rows:
        by_split[split] = by_split.get(split, 0) + after - before
    data = f"{added:+,} rows (" + ", ".join(f"{s} {n:+,}" for s, n in by_split.items() if n) + ")" if added or any(by_split.values()) else "no row count changed"
    d = result["decision"]
    judged = f"{d.challenger[0]} {d.metric} {d.challenger[1]:.4f}" + (f" vs champion {d.champion[0]} {d.champion[1]:.4f}" if d.champion else "")
    failed = [j.name for j in d.judgements if not j.ok]
    worse = f" (worse on the {' and the '.join(failed)})" if failed else ""
    return f"{outcome}: {data}; {judged}{worse}{drifted}; {len(result['metrics'])} metric value(s) changed"


def drift_markdown(drift: dict[str, Any] | None) -> list[str]:
    """The drift checks as a table, then what each failed one found, with sample rows and what to change."""
    if not drift:
        return []
    lines = ["## Drift: the champion's data → the new data (checked before training)", ""]
    if drift.get("skipped"):
        return lines + [f"- skipped: {drift['skipped']}", ""]
    measured = drift["measured"]
    lines += [f"{measured.get('new_rows', 0):,} new labelled rows (not in the champion's data with the same label), "
              f"{measured.get('old_rows', 0):,} old labelled rows.", "",
              "| check | result | value | limit | on failure | what was measured |", "|---|---|---|---|---|---|"]
    for c in drift["checks"]:
        result = "ok" if c["ok"] else ("**BLOCKS**" if c["action"] == "block" else "**warning**")
        lines.append(f"| {c['check']} | {result} | {number(c['value'])} | {number(c['limit'])} | {c['action']} | {c['detail']} |")
    for c in drift["checks"]:
        if c["ok"]:
            continue
        lines += ["", f"**{c['check']}**: " + "; ".join(c["found"])]
        lines += [f"- `{row}`" for row in c["sample_rows"][:5]]
        lines.append(f"- what to change: {c['fix']}")
    return lines + [""]


def judgement_markdown(result: dict[str, Any]) -> list[str]:
    """Each judged set (new test split, reference set) with both sides' models, and the verdict on it."""
    d = result["decision"]
    lines = []
    for j in d.judgements:
        verdict = "passes" if j.ok else "FAILS"
        lines += [f"### On the {j.name}: the challenger {verdict}", "", f"- {j.reason}", "",
                  "| model | champion accuracy | champion macro F1 | challenger accuracy | challenger macro F1 |", "|---|---|---|---|---|"]
        champ = j.scores["champion"] or {}
        for model, s in j.scores["challenger"].items():
            c = champ.get(model, {})
            lines.append(f"| {model} | {number(c.get('accuracy'))} | {number(c.get('macro_f1'))} | {number(s['accuracy'])} | {number(s['macro_f1'])} |")
        lines.append("")
    return lines


def report_markdown(root: Path, outcome: str, summary: str, news: dict[str, Any], result: dict[str, Any] | None,
                    ran: str | None, name: str | None, overrides: dict[str, Any], rule: str, metric: str, tolerance: float,
                    pushed_to: str | None, timings: dict[str, float], drift: dict[str, Any] | None = None,
                    version: dict[str, str] | None = None) -> str:
    title = {"promoted": "promoted", "not promoted": "NOT promoted", "nothing new": "nothing new", "blocked": "BLOCKED"}[outcome]
    lines = [f"# Retrain `{flow_run.get_name() or 'local'}`: {title}", "", f"**{summary}**", ""]
    if result:
        d = result["decision"]
        lines += ["## Decision", "",
                  f"- rule: `retrain.promote: {rule}`, by the best neural model's `{metric}`, tolerance {tolerance}; "
                  f"the challenger must pass on the new test split and on the reference set ({result['reference']})",
                  f"- {'promoted' if d.promote else 'not promoted'}: {d.reason}",
                  "- both sides scored on the same rows with the same code", ""]
        lines += judgement_markdown(result)
        if not d.promote:
            lines += [f"The champion stays: the workspace and the DVC remote were not touched. The challenger is the "
                      f"DVC experiment `{name}`: `dvc exp show`, `dvc exp diff {name}`. To promote it anyway: "
                      f"`dvc exp apply {name} && dvc push` (then commit), or rerun with `promote=always`.", ""]
    if outcome == "blocked":
        lines += ["No challenger was trained: a drift check listed in `retrain.drift.block` failed. The champion stays; "
                  "the workspace and the DVC remote were not touched. Fix the data (below), or take the check out of "
                  "`retrain.drift.block` to train on it anyway.", ""]
    lines += drift_markdown(drift)
    if result:
        lines += ["## What changed in the data", ""]
        lines += [f"- source `{c['source']}`: {c['old']} → {c['new']}" for c in result["sources"]] or ["- no source changed"]
        lines += ["", "| split | label | rows before | rows after | change |", "|---|---|---|---|---|"]
        lines += [f"| {s} | {lab} | {b:,} | {a:,} | {a - b:+,} |" for s, lab, b, a in result["rows"]]
        lines += ["", "## Metrics that changed: champion (old) → challenger (new)", "",
                  "| file | metric | old | new | change |", "|---|---|---|---|---|"]
        lines += [f"| {f} | {m} | {number(o)} | {number(n)} | {_change(o, n)} |" for f, m, o, n in result["metrics"]] or ["| — | no metric changed | | | |"]
    else:
        lines += ["- sources: " + ("; ".join(describe(fp) for fp in news["current"].get("sources", [])) or "none declared")]
    reports = root / "reports"
    lines += ["", "## Run", "", f"- workspace: `{root}`",
              f"- report: `{reports / 'report.md'}`",
              f"- overrides: {', '.join(f'`{k}={v}`' for k, v in overrides.items()) or 'none (params.yaml as it is)'}"]
    if ran:
        lines.append(f"- ran: `{ran}` (experiment `{name}`)")
    lines.append(f"- pushed to DVC remote: `{pushed_to}`" if pushed_to else "- not pushed")
    lines += version_markdown(version, outcome == "promoted")
    lines.append("- steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return "\n".join(lines)


def champion_version(root: Path) -> dict[str, str] | None:
    """{version} the champion stage is assigned to, when the workspace has versions (a line of the artifact)."""
    with contextlib.suppress(Exception):
        found = versions.champion_version(root)
        return {"version": found} if found else None
    return None


def version_markdown(version: dict[str, str] | None, promoted: bool) -> list[str]:
    art = versions.ARTIFACT
    if not version:
        return [f"- version: none registered (`retrain.version: false`, or no promotion yet): `gto show {art}`"]
    if not promoted:
        return [f"- champion: `{art}@{version['version']}` (unchanged; `gto show {art}`)"]
    back = f"; roll back: `reweigh rollback {version['previous']}`" if version.get("previous") else ""
    return [f"- version: `{art}@{version['version']}`, commit `{version['commit'][:12]}`, stage `{versions.STAGE}` "
            f"(`gto show {art}`){back}"]
