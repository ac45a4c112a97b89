"""sources: fingerprint what the dataset adapter reads → reports/sources.json, which ingest depends on.

    python -m flows.sources            # the DVC stage (always_changed: every `dvc repro` runs it)
    python -m flows.sources --check    # nothing written: JSON of recorded vs current, for the retrain

Unlike the other stages this is not a Prefect flow: it is a freshness check that every `dvc repro` runs,
like DVC hashing a dependency, and a flow's temporary API server would make it cost 9 s instead of 0.7 s.

The adapter names its sources (`sources()`, adapters/base.py); adapters/sources.py fingerprints them.
When nothing changed the file is rewritten byte for byte, so DVC sees ingest's dependency unchanged and
skips ingest and everything after it; when a source changed, ingest reruns, and the stages after it rerun
only if the ingested table changed.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
import json
import logging
import sys
from pathlib import Path
from typing import Any

from adapters.base import MissingSource, title_of
from adapters.registry import get_adapter
from adapters.sources import declared_sources, describe, fingerprint
from flows.common import REPORTS, params, run_stage
from reweigh.io import write_json
from reweigh.params import DatasetParams

OUTPUT = REPORTS / "sources.json"
UNDECLARED = ("declares no sources(): dvc repro cannot see its data change; add a sources() method that "
              "returns the files, folders or URLs load() reads (docs/adapters.md)")


def read_recorded(path: Path = OUTPUT) -> dict[str, Any] | None:
    """The fingerprints of the last run, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(dataset: DatasetParams, root: Path = Path("."), recorded: dict[str, Any] | None = None,
            warn=lambda message: None) -> tuple[dict[str, Any], list[str], str]:
    """{dataset, sources: [fingerprint, ...]} for the adapter `dataset` selects (deterministic: no times),
    the sources as the adapter declared them (paths as written, URLs), and the dataset's title for messages.

    A local source that is missing (a clone of a project whose data file git does not track) keeps the
    recorded fingerprints with a warning, as an unreachable URL does: `dvc pull` then `dvc repro` has nothing
    to do, and only a stage that must read the data fails, saying where to put it. Without a recorded
    fingerprint there is nothing to keep: the error stands."""
    before = (recorded or {}).get("sources") or []
    try:
        adapter = get_adapter(dataset.name, dataset.options)
        sources = declared_sources(adapter)
        prints = [fingerprint(s, root, before[i] if i < len(before) else None, warn) for i, s in enumerate(sources)]
    except MissingSource as exc:
        if not before:
            raise
        kept = "; ".join(describe(fp) for fp in before)
        warn(f"{exc}: kept the fingerprint recorded in {OUTPUT} ({kept}), so dvc repro takes the data as unchanged. "
             "Put the data there before a stage that reads it runs (ingest, or a retrain)")
        return dict(recorded), [], str(recorded.get("dataset") or dataset.name)
    out: dict[str, Any] = {"dataset": adapter.name, "sources": prints}
    if not sources:
        out["note"] = f"adapter '{adapter.name}' {UNDECLARED}"
        warn(out["note"])
    return out, sources, title_of(adapter)


def changes(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[dict[str, Any]]:
    """[{source, old, new}] for each source whose fingerprint differs (descriptions, for people)."""
    old = (recorded or {}).get("sources") or []
    new = current.get("sources") or []
    out = []
    for i in range(max(len(old), len(new))):
        a, b = (old[i] if i < len(old) else None), (new[i] if i < len(new) else None)
        if a != b:
            out.append({"source": (b or a or {}).get("name") or (b or a or {}).get("url"),
                        "old": describe(a) if a else "none", "new": describe(b) if b else "none"})
    return out


def check(root: Path = Path(".")) -> dict[str, Any]:
    """Recorded vs current fingerprints, computed without a flow run (the retrain's fast path)."""
    warnings: list[str] = []
    recorded = read_recorded(root / OUTPUT)
    current, declared, _ = collect(params().dataset, root, recorded, warnings.append)
    return {"recorded": recorded, "current": current, "declared": declared, "changed": changes(recorded, current),
            "warnings": warnings}


def record() -> dict[str, Any]:
    """The DVC stage: fingerprint the sources and write reports/sources.json (same bytes when unchanged)."""
    logger = logging.getLogger("reweigh.sources")
    recorded = read_recorded()
    current, _, title = collect(params().dataset, Path("."), recorded, logger.warning)
    for change in changes(recorded, current):
        print(f"sources: {change['source']} changed: {change['old']} → {change['new']}")
    write_json(current, OUTPUT)
    print(f"sources: {len(current['sources'])} source(s) of dataset '{title}' → {OUTPUT}: "
          + ("; ".join(describe(fp) for fp in current["sources"]) or "none declared"))
    return current


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if "--check" in sys.argv[1:]:
        json.dump(check(), sys.stdout)
        return
    run_stage(record, "sources")


if __name__ == "__main__":
    main()
