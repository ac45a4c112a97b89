"""accuracy: test accuracy, macro F1 and PR-AUC of each model, from the report stage's reports/metrics.json,
beside the published IMDB references."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REFERENCES = {
    "Maas et al. 2011 (word vectors + bag of words)": 88.89,
    "NBSVM-bi, Wang & Manning 2012": 91.22,
}
_KEYS = {
    "accuracy": ("accuracy", "test_accuracy", "acc"),
    "macro_f1": ("macro_f1", "f1_macro", "f1", "test_macro_f1"),
    "pr_auc": ("pr_auc", "average_precision", "auc_pr", "test_pr_auc"),
}


def _pick(d: dict, names: tuple[str, ...]) -> float | None:
    for n in names:
        v = d.get(n)
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, dict):  # e.g. {"test": 0.9} or {"macro": 0.9}
            for k in ("test", "macro", "value"):
                if isinstance(v.get(k), (int, float)):
                    return float(v[k])
    return None


def models_in(metrics: Any, prefix: str = "") -> dict[str, dict[str, float | None]]:
    """Every dict in the metrics file that carries an accuracy, by its dotted path (model name)."""
    found: dict[str, dict[str, float | None]] = {}
    if isinstance(metrics, dict):
        acc = _pick(metrics, _KEYS["accuracy"])
        if acc is not None and prefix:
            found[prefix] = {k: _pick(metrics, names) for k, names in _KEYS.items()}
        for key, value in metrics.items():
            if isinstance(value, dict):
                found.update(models_in(value, f"{prefix}.{key}" if prefix else key))
    return found


def read(path: Path) -> dict[str, Any]:
    metrics = json.loads(path.read_text())
    models = models_in(metrics)
    # Prefer the shortest name per model ("gru" over "gru.test" when both carry figures).
    return {"models": models, "file": str(path)}


def from_predictions(folder: Path) -> dict[str, dict[str, float | None]]:
    """Figures computed here from data/predictions/<model>.parquet (id, label_id, prob_<class>), for when
    the report stage has not written reports/metrics.json. PR-AUC: average precision of class 1 (pos)."""
    import polars as pl
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score

    models: dict[str, dict[str, float | None]] = {}
    for path in sorted(folder.glob("*.parquet")):
        df = pl.read_parquet(path)
        if "split" in df.columns:  # the report's predictions hold val (for thresholds) and test rows
            df = df.filter(pl.col("split") == "test")
        probs = df.select(sorted((c for c in df.columns if c.startswith("prob_")), key=lambda c: int(c[5:]))).to_numpy()
        y = df["label_id"].to_numpy()
        pred = probs.argmax(1)
        models[path.stem] = {"accuracy": float(accuracy_score(y, pred)), "macro_f1": float(f1_score(y, pred, average="macro")),
                             "pr_auc": float(average_precision_score(y, probs[:, 1])) if probs.shape[1] == 2 else None,
                             "test_documents": int(len(y))}
    return models


def lock_hash(root: Path) -> str | None:
    lock = root / "dvc.lock"
    return hashlib.sha256(lock.read_bytes()).hexdigest()[:12] if lock.exists() else None


def workspace_is_full_and_current(root: Path, stages: list[str]) -> tuple[bool, str]:
    """The workspace's results are usable when params use the full dataset and `dvc status` of these stages is clean."""
    import yaml

    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    if (params.get("dataset") or {}).get("limit"):
        return False, f"params.yaml has dataset.limit={params['dataset']['limit']}: not the full dataset"
    r = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", *stages], cwd=root, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        first = next((line for line in r.stderr.splitlines() if line.strip()), "").strip()
        return False, f"dvc status failed: {first[:200]}"
    try:
        status = json.loads(r.stdout or "{}")
    except json.JSONDecodeError:
        return False, f"dvc status printed no JSON: {r.stdout[-300:]}"
    if status:
        return False, f"dvc status: out of date: {', '.join(status)}"
    return True, "dvc status clean, dataset.limit 0"


def _source(project: Path, full: bool, workspace: bool, lock: str | None) -> dict[str, Any]:
    metrics, preds = project / "reports" / "metrics.json", project / "data" / "predictions"
    where = f"of the full run in the workspace at dvc.lock {lock}" if workspace else (
        "of this benchmark's own pipeline run" + (" (quick params: not comparable with the references)" if not full
                                                  else " (with its params override, see pipeline)"))
    if metrics.exists():
        out = read(metrics)
        if out["models"]:
            return {**out, "source": f"from reports/metrics.json {where}"}
    if preds.is_dir() and any(preds.glob("*.parquet")):
        return {"models": from_predictions(preds), "source": f"computed by the bench from data/predictions/*.parquet {where} (no reports/metrics.json)"}
    return {}


def run(root: Path, project: Path | None, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"references_accuracy_pct": REFERENCES}
    if full:
        has_models = any(f"  {s}:" in (root / "dvc.yaml").read_text() for s in ("report", "baseline", "train"))
        ok, why = workspace_is_full_and_current(root, []) if has_models else (False, "dvc.yaml has no train/baseline/report stage yet")
        out["workspace_check"] = why
        if ok:
            found = _source(root, full, True, lock_hash(root))
            if found:
                return {**out, **found}
    if project is not None:
        found = _source(project, full, False, None)
        if found:
            return {**out, **found}
    return {**out, "models": {}, "source": "missing: no reports/metrics.json or data/predictions (no train/report stage ran)"}
