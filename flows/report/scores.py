"""The report's numbers: each model's predictions read back, scored on the test split, compared in pairs.

data/predictions/<model>.parquet holds a model's validation and test rows (column `split`). Scores
(accuracy, macro precision / recall / F1, ROC-AUC, PR-AUC, their confidence intervals, per-class results)
are on the test split; the validation rows only choose the decision thresholds (flows/report/thresholds.py).
Every model is scored on the same test rows, which the paired tests of flows/report/stats.py need.

Shapes: N rows of a split, C classes.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support, roc_auc_score
from sklearn.preprocessing import label_binarize

from flows.report import classes as report_classes, stats as report_stats, thresholds as report_thresholds
from flows.common import DATA
from flows.report.thresholds import scores
from reweigh.params import BASELINE_NAMES, ENSEMBLE, MODEL_NAMES, Params, role

NEURAL = MODEL_NAMES  # the default train.models; a run's own set is params().train.models
BASELINES = BASELINE_NAMES  # the default baseline.models
MODELS = (*NEURAL, *BASELINES, ENSEMBLE)  # the default set, as params().model_set() gives it


def pairs(neural: tuple[str, ...] | list[str], baselines: tuple[str, ...] | list[str] = BASELINES,
          members: tuple[str, ...] | list[str] = ()) -> list[tuple[str, str]]:
    """Pairs compared for significance, first minus second: each neural model against each baseline; each
    baseline against those listed before it; each neural model against those listed before it in train.models
    (gru_attention − gru, ...); then the ensemble against each of its `members` (none: no ensemble)."""
    return ([(m, b) for m in neural for b in baselines]
            + [(b, a) for i, a in enumerate(baselines) for b in baselines[i + 1:]]
            + [(b, a) for i, a in enumerate(neural) for b in neural[i + 1:]]
            + [(ENSEMBLE, m) for m in members])


PAIRS = tuple(pairs(NEURAL, BASELINES, (*NEURAL, *BASELINES)))  # the default set's


def by_role(models) -> tuple[list[str], list[str]]:
    """The neural models and the baselines among `models`, in their order."""
    return [m for m in models if role(m) == "neural"], [m for m in models if role(m) == "baseline"]


def load_predictions(name: str, n_classes: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{"val": ..., "test": ...}: labels (N,), probabilities (N, C) and ids (N,) per split, rows sorted by id."""
    path = DATA / "predictions" / f"{name}.parquet"
    df = pl.read_parquet(path)
    if "split" not in df.columns:
        raise ValueError(f"{path} has no `split` column (written by an older train/baseline stage): "
                         f"rerun it with `dvc repro` so it predicts the validation split too")
    out = {}
    for split in ("val", "test"):
        part = df.filter(pl.col("split") == split).sort("id")
        if part.is_empty():
            raise ValueError(f"{path} has no {split} rows: rerun its stage (`dvc repro`); the validation split "
                             f"needs dataset.val_fraction > 0")
        out[split] = (part["label_id"].to_numpy(), part.select([f"prob_{c}" for c in range(n_classes)]).to_numpy(),
                      part["id"].to_numpy())
    return out


def same_rows(preds: dict[str, dict[str, tuple]]) -> None:
    """Paired tests need every model scored on the same test rows: check the ids agree."""
    names = list(preds)
    first = preds[names[0]]["test"][2]
    for m in names[1:]:
        if not np.array_equal(preds[m]["test"][2], first):
            raise ValueError(f"data/predictions/{m}.parquet and data/predictions/{names[0]}.parquet hold different "
                             f"test rows: rerun both stages on the same data (`dvc repro`)")


def model_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 of the argmax decisions; ROC-AUC and PR-AUC of the probabilities."""
    pred = probs.argmax(1)
    p, r, f1, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    if probs.shape[1] == 2:
        roc, ap = roc_auc_score(y, probs[:, 1]), average_precision_score(y, probs[:, 1])
    else:
        onehot = label_binarize(y, classes=list(range(probs.shape[1])))
        # Macro one-vs-rest by hand: roc_auc_score(multi_class="ovr") raises when a class is absent from the test
        # split (legal on a small or lopsided table). Averaging the classes that have both positives and negatives
        # gives scikit-learn's value when every class is present; NaN (as for two classes) when none has.
        scored = [c for c in range(probs.shape[1]) if 0 < onehot[:, c].sum() < len(y)]
        roc = np.mean([roc_auc_score(onehot[:, c], probs[:, c]) for c in scored]) if scored else float("nan")
        ap = average_precision_score(onehot, probs, average="macro")
    return {k: round(float(v), 6) for k, v in
            {"accuracy": (pred == y).mean(), "precision_macro": p, "recall_macro": r, "f1_macro": f1,
             "roc_auc": roc, "pr_auc": ap}.items()}


def operating_point(y: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(recall, precision) of the model's own decisions (argmax; for two classes, threshold 0.5)."""
    truth, _ = scores(y, probs)
    decided = label_binarize(probs.argmax(1), classes=list(range(probs.shape[1]))).ravel() if probs.shape[1] > 2 else (probs.argmax(1) == 1).astype(int)
    tp = int((decided & truth).sum())
    return tp / max(int(truth.sum()), 1), tp / max(int(decided.sum()), 1)


def pr_points(y: np.ndarray, probs: np.ndarray, n: int = 200) -> pl.DataFrame:
    """recall, precision, threshold: up to n points of the (binary or micro one-vs-rest) precision-recall curve."""
    truth, score = scores(y, probs)
    precision, recall, thresholds = precision_recall_curve(truth, score)
    keep = np.unique(np.linspace(0, len(thresholds) - 1, n).round().astype(int))
    return pl.DataFrame({"recall": recall[keep].round(5), "precision": precision[keep].round(5), "threshold": thresholds[keep].round(5)})


def score_models(preds: dict, summaries: dict[str, dict[str, Any]], labels: list[str], p: Params) -> tuple[dict, dict, dict]:
    """metrics (per model), comparisons (per pair, paired on the test rows) and threshold tables (per model);
    `preds` holds every model of the run (train.models, baseline.models, the ensemble), in that order.
    `val_accuracy` (argmax decisions on the validation rows) is what picks the strongest baseline."""
    C, alpha, cfg = len(labels), p.report.significance, p.report
    models = list(preds)
    same_rows(preds)
    y = preds[models[0]]["test"][0]  # (N,) the same rows for every model
    decided = {m: preds[m]["test"][1].argmax(1) for m in models}  # (N,) each model's own decisions
    boot = report_stats.bootstrap(y, decided, C, cfg.bootstrap_samples, p.seed)
    metrics, tables = {}, {}
    for m in models:
        probs, s = preds[m]["test"][1], summaries[m]
        tables[m] = report_thresholds.threshold_report(preds[m]["val"][:2], preds[m]["test"][:2], cfg.target_precision, cfg.target_recall)
        val_y, val_probs = preds[m]["val"][:2]
        metrics[m] = {**model_metrics(y, probs), "val_accuracy": round(float((val_probs.argmax(1) == val_y).mean()), 6),
                      **report_stats.model_intervals(boot[m], alpha), "parameters": s["parameters"],
                      "epochs": s["epochs"], "best_epoch": s.get("best_epoch", 0),
                      "per_class": report_classes.per_class_metrics(y, probs, labels),
                      "thresholds": report_thresholds.metrics_entry(tables[m])}
    neural, baselines = by_role(models)
    members = [m for m in p.ensemble_members() if m in preds] if ENSEMBLE in preds else []
    comparisons = {f"{a}_vs_{b}": report_stats.compare(y, decided[a], decided[b], boot[a], boot[b], C, alpha)
                   for a, b in pairs(neural, baselines, members)}
    return metrics, comparisons, tables
