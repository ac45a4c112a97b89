"""The report's ensemble section: its members and weights, and how differently the members err.

An average of class probabilities can only beat its members where they disagree: on a review that one
member gets right and another wrong, the average follows the more confident of the two, so it can be right
where a member alone was wrong. Where every member is wrong, no average fixes it. So next to the weights the
report shows, for each pair of members, the share of test rows only one of the two gets right.

Shapes: N test rows.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from flows.report.stats import accuracy_text, oriented
from reweigh.params import ENSEMBLE


def disagreement(y: np.ndarray, decided: dict[str, np.ndarray], members: list[str]) -> list[tuple[str, str, float, float]]:
    """(a, b, share of rows exactly one of the two gets right, share both get wrong) per pair of members,
    from labels (N,) and each member's decisions (N,)."""
    right = {m: decided[m] == y for m in members}  # (N,) bools
    return [(a, b, float((right[a] ^ right[b]).mean()), float((~right[a] & ~right[b]).mean()))
            for i, a in enumerate(members) for b in members[i + 1:]]


def markdown(summary: dict[str, Any], metrics: dict[str, dict[str, Any]], comparisons: dict[str, dict[str, float]],
             y: np.ndarray, decided: dict[str, np.ndarray], titles: dict[str, str], alpha: float) -> list[str]:
    """The section: how the ensemble is made, each member against it, then the members' pairwise disagreement."""
    if not summary.get("enabled") or ENSEMBLE not in metrics:
        return []
    members, weights = summary["members"], summary["weights"]
    if summary["weighting"] == "val":
        how = (f"weights fitted on the validation split: the point of the simplex (weights ≥ 0, summing to 1) with the "
               f"lowest log-loss of the weighted mean there ({summary['val_log_loss']:.4f}; equal weights: "
               f"{summary['val_log_loss_uniform']:.4f}). Those are {summary['val_rows']:,} rows, on which one review moves "
               f"validation accuracy by {100 / max(summary['val_rows'], 1):.2f} points, so the weights are noisy: refit on "
               "another validation split they would differ. And the neural members chose their best epoch on these very "
               "rows, which makes them look better there than they are, so a fit leans their way.")
    else:
        how = "equal weights: the plain mean, nothing fitted (`ensemble.weights: val` fits them on the validation split)."
    md = ["### The ensemble", "",
          f"The ensemble averages the class probabilities of {len(members)} models with {how}", "",
          f"| member | weight | validation accuracy | test accuracy | {titles[ENSEMBLE]} − member |", "|---|---:|---:|---:|---|"]
    for m in members:
        c = oriented(comparisons, ENSEMBLE, m)
        md.append(f"| {titles[m]} | {weights[m]:.3f} | {metrics[m]['val_accuracy']:.2%} | {metrics[m]['accuracy']:.2%} | "
                  f"{accuracy_text(c, alpha)} |")
    md += ["", "How differently the members err, on the test split: the share of reviews exactly one of the two gets "
           "right, and the share both get wrong. Averaging helps only where members disagree: there the mean follows "
           "the more confident member and can be right where one of them alone was wrong; where both are wrong no "
           "average of the two can fix it. Two members that err on the same reviews add little to each other; a "
           "model of word counts and a model that reads the words in order tend to err on different reviews.", "",
           "| pair | only one right | both wrong |", "|---|---:|---:|"]
    md += [f"| {titles[a]} · {titles[b]} | {one:.2%} | {both:.2%} |" for a, b, one, both in disagreement(y, decided, members)]
    return md + [""]
