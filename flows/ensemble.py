"""ensemble: the average of its members' class probabilities, a model like any other in the report.

    python -m flows.ensemble

Members: `ensemble.members` (`all` = every model of train.models and baseline.models, or a list of them).
Weights: `ensemble.weights`, `uniform` (the plain mean) or `val` (the point of the simplex that minimises
the log-loss of the weighted mean on the validation rows; the test rows choose nothing).
Reads data/predictions/<member>.parquet (val and test rows of each member). Writes
data/predictions/ensemble.parquet (the same table as every model's), artifacts/ensemble.json (members,
weights, labels: what `predict --model ensemble` averages) and reports/ensemble.json (members, weights, how
they were chosen). With `ensemble.enabled: false` or `members: []` it writes the same three files marked
disabled (DVC expects a stage's outputs), an empty predictions table, and the report leaves it out.

Shapes: M members, N rows of a split, C classes.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
import json
import time

import numpy as np
import polars as pl
from prefect import flow
from scipy.optimize import minimize

from flows.common import ARTIFACTS, REPORTS, params, read_dataset_info, run_stage
from flows.outputs import prediction_frame, predictions_path, predictions_table
from reweigh.io import file_sha256, write_json, write_parquet
from reweigh.params import ENSEMBLE

SPEC = ARTIFACTS / "ensemble.json"
SUMMARY = REPORTS / "ensemble.json"  # not reports/train/: this stage depends on that folder (dvc.yaml)
EPS = 1e-7  # probabilities are clipped to [EPS, 1] before a log


def member_predictions(name: str, n_classes: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{"val": ..., "test": ...}: ids (N,), label ids (N,), probabilities (N, C) of one member, rows sorted by id."""
    df = pl.read_parquet(predictions_path(name))
    out = {}
    for split in ("val", "test"):
        part = df.filter(pl.col("split") == split).sort("id")
        out[split] = (part["id"].to_numpy(), part["label_id"].to_numpy(),
                      part.select([f"prob_{c}" for c in range(n_classes)]).to_numpy())
    return out


def aligned(preds: dict[str, dict[str, tuple]], split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids (N,), labels (N,) and the members' probabilities (M, N, C) of one split, checked to be the same rows."""
    names = list(preds)
    ids, y, _ = preds[names[0]][split]
    for m in names[1:]:
        if not (np.array_equal(preds[m][split][0], ids) and np.array_equal(preds[m][split][1], y)):
            raise ValueError(f"data/predictions/{m}.parquet and data/predictions/{names[0]}.parquet hold different "
                             f"{split} rows: rerun both stages on the same data (`dvc repro`)")
    return ids, y, np.stack([preds[m][split][2] for m in names])


def average(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted mean (N, C) of the members' probabilities (M, N, C); weights (M,) on the simplex."""
    return np.tensordot(weights, probs, axes=1)


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-probability of the true class; probs (N, C), y (N,)."""
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], EPS, 1)).mean())


def fit_weights(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights (M,) on the simplex (>= 0, sum 1) minimising the log-loss of the weighted mean on these rows.

    The loss is convex in the weights (minus the log of a linear function), so SLSQP from the uniform point
    finds the minimum; deterministic. Rounded to 6 decimals, so the recorded weights are the ones applied."""
    m = probs.shape[0]
    true = np.clip(probs[:, np.arange(len(y)), y], EPS, 1)  # (M, N): each member's probability of the true class

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        mix = np.clip(w @ true, EPS, None)  # (N,)
        return float(-np.log(mix).mean()), -(true / mix).mean(1)  # value, gradient (M,)

    found = minimize(loss, np.full(m, 1 / m), jac=True, method="SLSQP", bounds=[(0, 1)] * m,
                     constraints=({"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones_like(w)},),
                     options={"ftol": 1e-10, "maxiter": 500})
    w = np.clip(found.x, 0, None)
    return np.round(w / w.sum(), 6)


def disabled_reason(p) -> str | None:
    if not p.ensemble.enabled:
        return "ensemble.enabled is false"
    if not p.ensemble_members():
        return "ensemble.members is empty"
    return None


@flow(name="ensemble", log_prints=True)
def ensemble_flow() -> str:
    p = params()
    labels = read_dataset_info()["labels"]
    C = len(labels)
    reason = disabled_reason(p)
    if reason:
        empty = {"id": [], "split": [], "label_id": [], **{f"prob_{c}": [] for c in range(C)}}
        write_parquet(pl.DataFrame(empty, schema={"id": pl.String, "split": pl.String, "label_id": pl.Int64,
                                                  **{f"prob_{c}": pl.Float64 for c in range(C)}}), predictions_path(ENSEMBLE))
        for target in (SPEC, SUMMARY):
            write_json({"model": ENSEMBLE, "enabled": False, "reason": reason, "members": [], "weights": []}, target)
        print(f"ensemble: off ({reason})")
        return str(SUMMARY)

    members = p.ensemble_members()
    started = time.perf_counter()
    preds = {m: member_predictions(m, C) for m in members}
    val_ids, val_y, val_probs = aligned(preds, "val")  # (N,), (N,), (M, N, C)
    test_ids, test_y, test_probs = aligned(preds, "test")
    uniform = np.full(len(members), 1 / len(members))
    weights = fit_weights(val_probs, val_y) if p.ensemble.weights == "val" else uniform
    val_mix, test_mix = average(val_probs, weights), average(test_probs, weights)  # (N, C) each
    seconds = time.perf_counter() - started

    write_parquet(predictions_table([prediction_frame("val", pl.Series(val_ids), val_y, val_mix),
                                     prediction_frame("test", pl.Series(test_ids), test_y, test_mix)]), predictions_path(ENSEMBLE))
    weight_of = {m: round(float(w), 6) for m, w in zip(members, weights)}
    write_json({"model": ENSEMBLE, "enabled": True, "members": members, "weights": [weight_of[m] for m in members],
                "labels": labels}, SPEC)
    parameters = sum(json.loads((REPORTS / "train" / f"{m}.json").read_text()).get("parameters", 0) for m in members)
    accuracy = float((test_mix.argmax(1) == test_y).mean())
    write_json({"model": ENSEMBLE, "enabled": True, "members": members, "weights": weight_of,
                "weighting": p.ensemble.weights, "val_rows": int(len(val_y)),
                "val_log_loss": round(log_loss(val_mix, val_y), 6),
                "val_log_loss_uniform": round(log_loss(average(val_probs, uniform), val_y), 6),
                "parameters": parameters, "epochs": 0, "train_seconds": round(seconds, 1),
                "predictions_sha256": file_sha256(predictions_path(ENSEMBLE))}, SUMMARY)
    print(f"ensemble of {', '.join(f'{m} ({w:.3f})' for m, w in weight_of.items())}: test accuracy {accuracy:.4f} "
          f"→ {predictions_path(ENSEMBLE)}")
    return str(predictions_path(ENSEMBLE))


if __name__ == "__main__":
    run_stage(ensemble_flow, "ensemble")
