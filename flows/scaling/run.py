"""`reweigh scaling`: queue the grid's missing points, run them with `dvc queue start`, collect and explain.

    reweigh scaling                 # the grid of params.yaml's scaling section
    reweigh scaling --collect-only  # only rewrite reports/scaling.* from what has run
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from flows.scaling import report
from flows.scaling.grid import (Point, ScalingError, copy_paths, enqueue, experiments, finished, forget, grid, queue_status,
                                start, wait)
from reweigh.params import load_params, role


RESTARTS = 2  # times a worker that stopped with points still queued is started again


def _point_rows(point: Point, metrics: dict[str, Any], timings: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for model, m in metrics.items():
        if not isinstance(m, dict) or "accuracy" not in m:
            continue
        rows.append({"kind": point.kind, "value": point.value, "labels": int(point.value) if point.kind == "labels" else None,
                     "model": model, "accuracy": m["accuracy"], "error": round(1 - m["accuracy"], 6),
                     "error_low": round(1 - m.get("accuracy_ci_high", m["accuracy"]), 6),
                     "error_high": round(1 - m.get("accuracy_ci_low", m["accuracy"]), 6),
                     "parameters": m.get("parameters"), "train_seconds": (timings.get(model) or {}).get("train_seconds"),
                     "experiment": point.name or "workspace"})
    return rows


def collect(workdir: Path, full: Point, extra: list[Point], done: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per (point, model) that has run: the workspace's own metrics for the full size, each
    experiment's from `dvc exp show`."""
    reports = workdir / "reports"
    if not (reports / "metrics.json").is_file():
        raise ScalingError(f"{reports / 'metrics.json'} is missing: run the pipeline first (make repro)")
    rows = _point_rows(full, json.loads((reports / "metrics.json").read_text()),
                       json.loads((reports / "timings.json").read_text()) if (reports / "timings.json").is_file() else {})
    for point in extra:
        exp = done.get(point.name)
        if exp and exp["state"] == "success":
            got = _point_rows(point, exp["metrics"].get("reports/metrics.json", {}), exp["metrics"].get("reports/timings.json", {}))
            if point.kind == "width":
                for r in got:
                    r["labels"] = int(full.value)
            rows += got
    return rows


def scaling(workdir: Path = Path("."), quick: bool = False, jobs: int | None = None, collect_only: bool = False,
            timeout: float | None = None, say=print) -> dict[str, Any]:
    workdir = workdir.resolve()
    p = load_params(workdir / "params.yaml")
    full, extra = grid(workdir, p, quick)
    say(f"scaling: {full.label} (the workspace's run) and {len(extra)} experiment(s): "
        + ", ".join(pt.label for pt in extra))
    if not collect_only and extra:
        done, (queued, alive) = finished(workdir), queue_status(workdir)
        missing = []
        for pt in extra:
            if pt.name in done:
                say(f"  {pt.name}: done, kept")
            elif queued.get(pt.name) == "queued" or (queued.get(pt.name) == "running" and alive):
                say(f"  {pt.name}: already {queued[pt.name]}")
            else:
                missing.append(pt)
        stale = [pt.name for pt in missing if pt.name in queued]
        if stale:  # failed, or left 'running' by a worker that was killed: drop the old task, queue it afresh
            say(f"  dropping the queue's stale task(s) {', '.join(stale)} ({', '.join(queued[n] for n in stale)})")
            forget(workdir, stale)
        if missing:
            enqueue(workdir, missing, copy_paths(workdir, p))
        for attempt in range(1, RESTARTS + 2):
            start(workdir, jobs or p.scaling.jobs)
            states = wait(workdir, [pt.name for pt in extra], timeout=timeout, say=say)
            stalled = [n for n, s in states.items() if s == "queued"]
            if not stalled or attempt > RESTARTS:
                break
            # DVC's worker can stop between two tasks with one still queued (seen on a 4-class table: 4 of 5 ran)
            say(f"scaling: the queue's worker stopped with {len(stalled)} point(s) still queued: starting it again")
        failed = [n for n, s in states.items() if s != "success"]
        if failed:
            say(f"scaling: {len(failed)} point(s) did not finish ({', '.join(failed)}): `dvc queue logs NAME` says why; "
                "the report below leaves them out, and `reweigh scaling` again runs only them")
    done = experiments(workdir)  # `dvc exp show`, now that no worker writes refs
    rows = collect(workdir, full, extra, done)
    names = list(dict.fromkeys(r["model"] for r in rows))
    neural = [n for n in names if role(n) == "neural"]
    linear = [n for n in names if role(n) == "baseline"]
    analysis = report.analyse(rows, neural, linear, p.scaling.targets, boot=60 if quick else 300, seed=p.seed)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True).stdout.strip()
    dataset = json.loads((workdir / "data" / "dataset.json").read_text()).get("title", p.dataset.name) \
        if (workdir / "data" / "dataset.json").is_file() else p.dataset.name
    meta = {"dataset": dataset, "commit": commit, "jobs": jobs or p.scaling.jobs,
            "experiments": [pt.name for pt in extra if done.get(pt.name, {}).get("state") == "success"],
            "missing": [pt.name for pt in extra if done.get(pt.name, {}).get("state") != "success"]}
    written = report.write(rows, analysis, meta, workdir / "reports")
    say(f"scaling: {written['md']} ({len({r['labels'] for r in rows})} sizes x {len(names)} models)")
    return {"rows": rows, "analysis": {k: v for k, v in analysis.items() if not k.startswith("_")}, "meta": meta}
