"""The report's per-class results: precision, recall, F1 and support of every class, and a PR curve per class.

Macro and micro averages hide a weak class: a model can score 90% accuracy while recognising one class of
five half the time. So for every model and class (two classes included) the report gives
- precision (of the reviews predicted as the class, the share that are), recall (of the reviews of the
  class, the share found), F1 (their harmonic mean), support (test reviews of the class) and PR-AUC
  (average precision of the class's probability, one class against the rest): in reports/metrics.json under
  `<model>.per_class.<class>` and as a table in the report;
- a one-vs-rest precision-recall curve per class: reports/figures/pr_per_class.png (a panel per class, a line
  per model) and its data in reports/plots/pr_per_class/<model>.csv (class, recall, precision, threshold).

Shapes: N test rows, C classes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support  # noqa: E402


def per_class_metrics(y: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    """{class name: precision, recall, f1, support, pr_auc} from labels (N,) and probabilities (N, C).

    Decisions are the argmax (the model's own), as for the macro figures; a class never predicted has
    precision 0, a class absent from the test split has no PR-AUC (left out)."""
    pred = probs.argmax(1)  # (N,)
    p, r, f1, support = precision_recall_fscore_support(y, pred, labels=list(range(len(labels))), zero_division=0)
    out = {}
    for c, name in enumerate(labels):
        row = {"precision": round(float(p[c]), 6), "recall": round(float(r[c]), 6), "f1": round(float(f1[c]), 6),
               "support": int(support[c])}
        if support[c]:
            row["pr_auc"] = round(float(average_precision_score(y == c, probs[:, c])), 6)
        out[name] = row
    return out


def class_pr_points(y: np.ndarray, probs: np.ndarray, labels: list[str], n: int = 200) -> pl.DataFrame:
    """class, recall, precision, threshold: up to n points of each class's one-vs-rest curve (for CSV and figure)."""
    frames = []
    for c, name in enumerate(labels):
        if not (y == c).any():
            continue
        precision, recall, thresholds = precision_recall_curve(y == c, probs[:, c])
        keep = np.unique(np.linspace(0, len(thresholds) - 1, n).round().astype(int))
        frames.append(pl.DataFrame({"class": [name] * len(keep), "recall": recall[keep].round(5),
                                    "precision": precision[keep].round(5), "threshold": thresholds[keep].round(5)}))
    return pl.concat(frames)


def fig_pr_per_class(points: dict[str, pl.DataFrame], per_class: dict[str, dict[str, dict[str, float]]], labels: list[str],
                     titles: dict[str, str], colors: dict[str, str], save: Callable[[plt.Figure, str], str]) -> str:
    """One panel per class, one line per model: each class's one-vs-rest precision-recall curve on test."""
    cols = min(len(labels), 3)
    rows = -(-len(labels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4 * rows), squeeze=False, layout="constrained")
    for ax, name in zip(axes.ravel(), labels):
        for m, pts in points.items():
            mine = pts.filter(pl.col("class") == name)
            if mine.height:
                ax.plot(mine["recall"], mine["precision"], color=colors[m],
                        label=f"{titles[m]} (AP {per_class[m][name].get('pr_auc', 0):.3f}, F1 {per_class[m][name]['f1']:.3f})")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02), title=f"{plain(name)} against the rest")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="lower left", fontsize=8)
        else:  # a class absent from the test split has no curve (and an empty legend only warns)
            ax.text(0.5, 0.5, "not in the test split", ha="center", va="center", transform=ax.transAxes)
    for ax in axes.ravel()[len(labels):]:
        ax.axis("off")
    fig.suptitle("Precision-recall per class on the test split (one class against the rest)")
    return save(fig, "pr_per_class.png")


def plain(text: str) -> str:
    """Text as matplotlib draws it literally: between two `$` it would parse mathtext, so a class name or token
    such as "$5 off$" drew as maths and "$$" raised ParseException when the figure was saved."""
    return text.replace("$", r"\$")


def weakest(per_class: dict[str, dict[str, float]]) -> tuple[str, float]:
    """The class with the lowest F1 and that F1."""
    name = min(per_class, key=lambda c: per_class[c]["f1"])
    return name, per_class[name]["f1"]


def markdown(per_class: dict[str, dict[str, dict[str, Any]]], labels: list[str], titles: dict[str, str], figure: str) -> list[str]:
    """The report's per-class section: a table (P / R / F1 per model, support) and each model's weakest class."""
    models = list(per_class)
    first = per_class[models[0]]
    md = ["## Per class", "",
          "Averages hide a weak class, so here is every class on its own (test split, each model's own decisions). "
          "Precision: of the reviews a model put in the class, the share that belong there; recall: of the class's "
          "reviews, the share it found; F1: their harmonic mean; support: test reviews of the class.", "",
          "| class | support | " + " | ".join(f"{titles[m]} P / R / F1" for m in models) + " |",
          "|---|---:|" + "---:|" * len(models)]
    for name in labels:
        cell = name.replace("|", "\\|")  # a class name may hold "|", which would split the table row
        md.append(f"| {cell} | {first[name]['support']:,} | " + " | ".join(
            f"{per_class[m][name]['precision']:.3f} / {per_class[m][name]['recall']:.3f} / {per_class[m][name]['f1']:.3f}"
            for m in models) + " |")
    md += ["", "Weakest class (lowest F1): " + "; ".join(_weakest_text(per_class[m], titles[m]) for m in models) + ".", "",
           f"![precision-recall per class]({figure})", ""]
    return md


def _weakest_text(classes: dict[str, dict[str, float]], title: str) -> str:
    name, f1 = weakest(classes)
    if f1 == max(c["f1"] for c in classes.values()):
        return f"{title}: none, every class has F1 {f1:.3f}"
    return f"{title}: {name} ({f1:.3f})"
