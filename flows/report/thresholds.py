"""Decision thresholds for the report: chosen on the validation split, then reported on the test split.

A model outputs a probability; a threshold t turns it into a decision (score >= t: positive). The report
answers two questions from params: which t gives precision >= `report.target_precision` (the lowest such
t, so recall stays as high as possible), and which gives recall >= `report.target_recall` (the highest such
t). Choosing t by looking at the test labels and then reporting test precision would be optimistic: t
would be fitted to the very rows that judge it. So t is chosen on the **validation** split only, and the
test split shows what that t really gives. Beside it the report shows the "test-optimal" t, what the same
rule picks when it peeks at the test labels: the gap between the two is the optimism of tuning on the data
you report on. The test predictions choose nothing.

Which score: with two classes, the probability of the second class (`labels[1]`, e.g. pos) against the
first. With more classes, micro-averaged one-vs-rest: every (review, class) pair is one decision "is this
review of this class?" with that class's probability as its score, so one t applies to all classes.

Shapes: N rows of one split, C classes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402
from sklearn.preprocessing import label_binarize  # noqa: E402

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
GOALS = ("target_precision", "target_recall")
Split = tuple[np.ndarray, np.ndarray]  # labels (N,), probabilities (N, C)


def scores(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (truth, score) pairs thresholds act on: binary → the positive class (N,); else micro one-vs-rest (N * C,)."""
    if probs.shape[1] == 2:
        return (y == 1).astype(int), probs[:, 1]
    return label_binarize(y, classes=list(range(probs.shape[1]))).ravel(), probs.ravel()


def precision_recall_at(truth: np.ndarray, score: np.ndarray, t: float) -> tuple[float, float]:
    """Precision and recall of the decisions score >= t (0 when nothing is decided positive)."""
    hit = score >= t
    tp = int((hit & (truth == 1)).sum())
    return tp / max(int(hit.sum()), 1), tp / max(int(truth.sum()), 1)


def choose(truth: np.ndarray, score: np.ndarray, goal: str, target: float) -> float | None:
    """The threshold meeting `goal` on these rows: the lowest t with precision >= target (target_precision) or
    the highest t with recall >= target (target_recall); None when no t reaches it."""
    if goal not in GOALS:
        raise ValueError(f"goal {goal!r}: use one of {GOALS}")
    if not truth.any():
        return None  # no positives: recall is undefined, precision 0 at any t
    precision, recall, thresholds = precision_recall_curve(truth, score)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    ok = np.flatnonzero(precision >= target if goal == "target_precision" else recall >= target)
    if not ok.size:
        return None
    return float(thresholds[ok[0] if goal == "target_precision" else ok[-1]])


def choose_thresholds(val: Split, target_p: float, target_r: float) -> dict[str, float | None]:
    """Both thresholds, from the validation split's labels and probabilities alone."""
    truth, score = scores(*val)
    return {"target_precision": choose(truth, score, "target_precision", target_p),
            "target_recall": choose(truth, score, "target_recall", target_r)}


def _r(x: float) -> float:
    return round(float(x), 4)


def threshold_report(val: Split, test: Split, target_p: float, target_r: float) -> dict[str, Any]:
    """Thresholds chosen on `val`, each with its validation and test precision / recall; the test-optimal
    thresholds beside them (shown, never used); and the fixed grid of THRESHOLDS on test.

    Per goal: {threshold, val_precision, val_recall, test_precision, test_recall, test_optimal_threshold,
    test_optimal_precision, test_optimal_recall}; keys are left out where the target is not reached."""
    chosen = choose_thresholds(val, target_p, target_r)
    optimal = choose_thresholds(test, target_p, target_r)  # only to show how much peeking would flatter
    val_truth, val_score = scores(*val)
    truth, score = scores(*test)
    out: dict[str, Any] = {"rows": []}
    for t in THRESHOLDS:
        p, r = precision_recall_at(truth, score, t)
        out["rows"].append({"threshold": t, "precision": _r(p), "recall": _r(r)})
    for goal in GOALS:
        entry: dict[str, float] = {}
        if chosen[goal] is not None:
            vp, vr = precision_recall_at(val_truth, val_score, chosen[goal])
            tp, tr = precision_recall_at(truth, score, chosen[goal])
            entry |= {"threshold": _r(chosen[goal]), "val_precision": _r(vp), "val_recall": _r(vr),
                      "test_precision": _r(tp), "test_recall": _r(tr)}
        if optimal[goal] is not None:
            op, orr = precision_recall_at(truth, score, optimal[goal])
            entry |= {"test_optimal_threshold": _r(optimal[goal]), "test_optimal_precision": _r(op),
                      "test_optimal_recall": _r(orr)}
        out[goal] = entry
    return out


def metrics_entry(table: dict[str, Any]) -> dict[str, dict[str, float]]:
    """What reports/metrics.json keeps of a threshold report: the goals that produced numbers (numbers only)."""
    return {goal: table[goal] for goal in GOALS if table[goal]}


# ---------------------------------------------------------------- words and figure
def _goal_label(goal: str, target_p: float, target_r: float) -> str:
    return f"precision ≥ {target_p:.0%}" if goal == "target_precision" else f"recall ≥ {target_r:.0%}"


def _pr(entry: dict[str, float], prefix: str) -> str:
    return f"{entry[prefix + 'precision']:.3f} / {entry[prefix + 'recall']:.3f}"


def _grid(row: dict[str, float]) -> str:
    return f"{row['precision']:.3f} / {row['recall']:.3f}"


def cells(entry: dict[str, float]) -> tuple[str, str, str, str, str]:
    """Chosen t, its validation P / R, its test P / R, test-optimal t, its test P / R ("not reached" where absent)."""
    miss = "not reached"
    chosen = (f"{entry['threshold']:.3f}", _pr(entry, "val_"), _pr(entry, "test_")) if "threshold" in entry else (miss, "–", "–")
    optimal = ((f"{entry['test_optimal_threshold']:.3f}", _pr(entry, "test_optimal_"))
               if "test_optimal_threshold" in entry else (miss, "–"))
    return (*chosen, *optimal)


def markdown(tables: dict[str, dict[str, Any]], titles: dict[str, str], target_p: float, target_r: float) -> list[str]:
    """The report's threshold section: chosen-on-validation against test-optimal, then the fixed grid on test."""
    md = ["### Thresholds chosen on validation, checked on test", "",
          f"For each target the threshold t is chosen on the **validation** split (precision ≥ {target_p:.0%}: the "
          f"lowest such t; recall ≥ {target_r:.0%}: the highest such t), then applied to the test split. "
          "\"Test-optimal\" is the t the same rule would pick by peeking at the test labels: compare the two test "
          "columns to see how much tuning on the test split would flatter a model. P / R = precision / recall.", "",
          "| target | model | t (from validation) | validation P / R | test P / R | test-optimal t | its test P / R |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for goal in GOALS:
        for m, table in tables.items():
            md.append(f"| {_goal_label(goal, target_p, target_r)} | {titles[m]} | " + " | ".join(cells(table[goal])) + " |")
    md += ["", "Precision / recall on the test split at fixed thresholds:", "",
           "| threshold | " + " | ".join(f"{titles[m]} P / R" for m in tables) + " |", "|---|" + "---:|" * len(tables)]
    for i, t in enumerate(THRESHOLDS):
        md.append(f"| {t:.1f} | " + " | ".join(_grid(tables[m]["rows"][i]) for m in tables) + " |")
    return md + [""]


def fig_thresholds(tables: dict[str, dict[str, Any]], titles: dict[str, str], target_p: float, target_r: float,
                   save: Callable[[plt.Figure, str], str]) -> str:
    """The threshold tables as one PNG: the fixed grid on test, then each target from validation and test-optimal."""
    header = ["threshold"] + [f"{titles[m]}\ntest precision / recall" for m in tables]
    body = [[f"{t:.1f}"] + [_grid(tables[m]["rows"][i]) for m in tables]
            for i, t in enumerate(THRESHOLDS)]
    for goal in GOALS:
        label = _goal_label(goal, target_p, target_r)
        rows = {m: cells(tables[m][goal]) for m in tables}
        body.append([f"{label}:\nt from validation"] + [f"t={r[0]}: {r[2]}" if r[2] != "–" else r[0] for r in rows.values()])
        body.append([f"{label}:\ntest-optimal t"] + [f"t={r[3]}: {r[4]}" if r[4] != "–" else r[3] for r in rows.values()])
    fig, ax = plt.subplots(figsize=(3 + 2.8 * len(tables), 0.42 * (len(body) + 4) + 0.6))
    ax.axis("off")
    table = ax.table(cellText=body, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.6)
    for (row, _), cell in table.get_celld().items():
        if row == 0 or row > len(THRESHOLDS):
            cell.set_height(cell.get_height() * 1.6)
        if row == 0:
            cell.set_text_props(weight="bold")
        elif row > len(THRESHOLDS):
            cell.set_facecolor("#fff3d6" if (row - len(THRESHOLDS)) % 2 else "#f0f0f0")
    ax.set_title("Precision and recall at decision thresholds (test split; targets chosen on validation)", pad=4)
    return save(fig, "thresholds.png")
